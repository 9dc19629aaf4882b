import Foundation

/// A command run to its end: a tool the tests check against (promtool, python3) or a short-lived subcommand.
public struct CompletedProcess: Sendable {
    public var status: Int32
    public var standardOutput: String
    public var standardError: String

    /// Runs `executable` with `arguments`, writes `standardInput` to it and waits for it to exit. Both outputs are
    /// read while it runs, so a child that writes much to either never blocks on a full pipe. It runs in
    /// `workingDirectory` when given, else in this process's.
    public static func run(
        _ executable: URL, arguments: [String], standardInput: [UInt8] = [], workingDirectory: URL? = nil
    ) throws -> CompletedProcess {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let workingDirectory { process.currentDirectoryURL = workingDirectory }
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let errorText = Locked("")
        let errorsRead = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            errorText.value = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            errorsRead.signal()
        }
        let writer = input.fileHandleForWriting
        Thread.detachNewThread {
            writer.write(Data(standardInput))
            try? writer.close()
        }
        let outputText = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        errorsRead.wait()
        return CompletedProcess(
            status: process.terminationStatus, standardOutput: outputText, standardError: errorText.value)
    }
}
