import Foundation

/// A built executable of this package run as a separate process, as operators run it: the tests
/// that send signals, kill and restart need the relay, the broker and the API in processes of their own.
public final class ChildProcess: Sendable {
    private let process: Process
    private let stdoutLines: Locked<[String]>
    /// Set once standard output reached its end: every line is then in `stdoutLines`.
    private let stdoutEnded: Locked<Bool>
    public let stderrPath: String

    /// Where `swift build` put this package's executables: beside the test bundle.
    public static let productsDirectory: URL = {
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if FileManager.default.fileExists(atPath: bundleDirectory.appendingPathComponent("lead-relay").path) {
            return bundleDirectory
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug")
    }()

    /// The child sees only `environment` plus what any program needs (PATH, HOME, TMPDIR, LANG): a
    /// variable such as `KAFKA_BOOTSTRAP_SERVERS` in the test runner's environment must not reach it.
    public init(product: String, arguments: [String], environment: [String: String] = [:], logDirectory: URL) throws {
        let process = Process()
        process.executableURL = Self.productsDirectory.appendingPathComponent(product)
        process.arguments = arguments
        let inherited = ProcessInfo.processInfo.environment.filter {
            ["PATH", "HOME", "TMPDIR", "LANG"].contains($0.key)
        }
        process.environment = inherited.merging(environment) { _, new in new }
        let stdout = Pipe()
        process.standardOutput = stdout
        stderrPath = logDirectory.appendingPathComponent("\(product)-\(UUID().uuidString.prefix(8)).stderr").path
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        let stderrHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardError = stderrHandle
        let lines = Locked<[String]>([])
        let ended = Locked(false)
        self.stdoutLines = lines
        self.stdoutEnded = ended
        self.process = process
        try process.run()
        try stderrHandle.close()
        let reader = stdout.fileHandleForReading
        Thread.detachNewThread {
            var buffer = Data()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty {
                    ended.value = true
                    break
                }
                buffer.append(chunk)
                while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...newline)
                    lines.withLock { $0.append(line) }
                }
            }
        }
    }

    /// The value of the first stdout line `NAME=value`, waiting up to `timeout` for it.
    public func announcedValue(_ name: String, timeout: Duration = .seconds(60)) async throws -> String {
        let prefix = name + "="
        return try await waitFor("\(name) announced", timeout: timeout) {
            if let line = stdoutLines.value.first(where: { $0.hasPrefix(prefix) }) {
                return String(line.dropFirst(prefix.count))
            }
            guard process.isRunning else {
                throw ExitedEarly(product: product, termination: termination, stderr: stderr)
            }
            return nil
        }
    }

    /// The first line of standard error for which `extract` gives a value, waiting up to `timeout`.
    public func stderrLine<T>(
        _ what: String, timeout: Duration = .seconds(60), _ extract: @escaping (String) -> T?
    ) async throws -> T {
        try await waitFor(what, timeout: timeout) {
            if let value = stderr.split(separator: "\n").lazy.compactMap({ extract(String($0)) }).first {
                return value
            }
            guard process.isRunning else {
                throw ExitedEarly(product: product, termination: termination, stderr: stderr)
            }
            return nil
        }
    }

    private var product: String { process.executableURL?.lastPathComponent ?? "process" }

    public var isRunning: Bool { process.isRunning }

    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Every complete line of standard output so far.
    public var stdout: [String] { stdoutLines.value }

    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// How a process ended: its exit status, or the signal that killed it.
    public enum Termination: Equatable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case killed(Int32)

        public var description: String {
            switch self {
            case .exited(let status): "exit status \(status)"
            case .killed(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// How the process ended; only once it has.
    private var termination: Termination {
        process.terminationReason == .exit ? .exited(process.terminationStatus) : .killed(process.terminationStatus)
    }

    /// Waits for the process to end and its standard output to be read to the end.
    public func waitForExit(timeout: Duration = .seconds(60)) async throws -> Termination {
        try await waitFor("\(product) to exit", timeout: timeout) {
            guard !process.isRunning, stdoutEnded.value else { return nil }
            return termination
        }
    }

    /// Kills the process if it still runs and reaps it; for test teardown.
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }
}

public struct ExitedEarly: Error, CustomStringConvertible {
    public var product: String
    public var termination: ChildProcess.Termination
    public var stderr: String
    public var description: String {
        // A crash report is long: its start says what went wrong.
        if let crash = stderr.range(of: "Fatal error") ?? stderr.range(of: "Crash") {
            return "\(product) crashed (\(termination)):\n\(stderr[crash.lowerBound...].prefix(3000))"
        }
        return "\(product) exited early (\(termination)); its standard error ends with:\n\(stderr.suffix(2000))"
    }
}
