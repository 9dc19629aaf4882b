import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A process the benchmark starts (kafka-dev, the simulator, the relay): its announced stdout line, its
/// resource use from /proc, and its orderly end.
///
/// Unchecked: `Process` is not Sendable, but after `run()` only its thread-safe accessors are used.
final class ChildProcess: @unchecked Sendable {
    let name: String
    let startedAt: ContinuousClock.Instant
    private let process: Process
    private let stdoutText = Mutex<String>("")

    /// Standard error goes to `logPath`, so a failed run can be read afterwards.
    init(name: String, executable: String, arguments: [String], environment: [String: String], logPath: String)
        throws
    {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
            throw BenchError.failed("cannot create \(logPath)")
        }
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let output = Pipe()
        process.standardOutput = output
        self.process = process
        self.startedAt = .now
        try process.run()
        Self.started.withLock { $0.append(self) }
        // The child keeps writing until it ends; draining on a thread of our own keeps its pipe from filling.
        let reader = output.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { return }
                stdoutText.withLock { $0 += String(decoding: chunk, as: UTF8.self) }
            }
        }
    }

    /// Every process the benchmark started, so that a failed scenario leaves none running.
    private static let started = Mutex<[ChildProcess]>([])

    static func terminateAll() async {
        for child in started.withLock({ $0 }).reversed() {
            await child.terminate(timeout: .seconds(10))
        }
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var exitStatus: Int32 { process.terminationStatus }

    /// The value of the first `NAME=value` line on standard output that starts with `prefix`.
    func announcedValue(prefix: String, timeout: Duration = .seconds(60)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let line = stdoutText.withLock { text in
                text.split(separator: "\n").first { $0.hasPrefix(prefix) }
            }
            if let line { return String(line.dropFirst(prefix.count)) }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw BenchError.failed("\(name) did not print \(prefix)")
    }

    /// Everything the process wrote to standard output so far.
    var standardOutput: String { stdoutText.withLock { $0 } }

    func waitForExit() async {
        while process.isRunning {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// VmHWM: the peak resident set size so far, in bytes.
    func peakResidentBytes() -> Int? {
        statusField("VmHWM:").map { $0 * 1024 }
    }

    /// User plus system CPU time consumed so far, from /proc/<pid>/stat.
    func cpuSeconds() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let afterName = stat.range(of: ") ")
        else { return nil }
        // Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
        let fields = stat[afterName.upperBound...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    private func statusField(_ label: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(label) }) else { return nil }
        return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
    }

    /// Sends SIGTERM and waits for the exit; returns the seconds it took, or nil when it had to be killed.
    @discardableResult
    func terminate(timeout: Duration = .seconds(40)) async -> Double? {
        guard process.isRunning else { return 0 }
        let signalledAt = ContinuousClock.now
        kill(pid, SIGTERM)
        while process.isRunning {
            if ContinuousClock.now - signalledAt > timeout {
                kill(pid, SIGKILL)
                process.waitUntilExit()
                return nil
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return (ContinuousClock.now - signalledAt).seconds
    }
}

enum BenchError: Error, CustomStringConvertible {
    case failed(String)

    var description: String {
        switch self {
        case .failed(let message): message
        }
    }
}

extension Duration {
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

/// A value behind a lock that closures and tasks can share (a `Mutex` itself cannot be captured).
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        mutex = Mutex(value)
    }

    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }
}
