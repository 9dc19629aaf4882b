import Foundation
import TestSupport
import Testing

/// A health and metrics port another socket listens on stops `run` and `demo` before anything else happens:
/// exit status 2 and one line naming the address and the setting to change.
@Suite struct EndToEndPortInUseTests {
    /// A socket listening on a free loopback port, until closed.
    final class Listener {
        let descriptor: Int32
        let port: Int

        init() throws {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            try #require(descriptor >= 0)
            self.descriptor = descriptor
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                    bind(descriptor, pointer, length) == 0 && listen(descriptor, 1) == 0
                        && getsockname(descriptor, pointer, &length) == 0
                }
            }
            try #require(bound, "listening socket: \(String(cString: strerror(errno)))")
            port = Int(UInt16(bigEndian: address.sin_port))
        }

        deinit { close(descriptor) }
    }

    /// Runs `lead-relay` to its end, standard output read to its end. The deadline only bounds a hung run.
    static func run(_ arguments: [String], environment: [String: String], scratch: ScratchDirectory) throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        let process = Process()
        process.executableURL = ChildProcess.productsDirectory.appendingPathComponent("lead-relay")
        process.arguments = arguments
        let inherited = ProcessInfo.processInfo.environment.filter {
            ["PATH", "HOME", "TMPDIR", "LANG"].contains($0.key)
        }
        process.environment = inherited.merging(environment) { _, new in new }
        let output = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        let errorPath = scratch.path("lead-relay-\(UUID().uuidString.prefix(8)).stderr")
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        try process.run()
        let watchdog = DispatchWorkItem { [process] in if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        watchdog.cancel()
        return (process.terminationStatus, text, (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "")
    }

    @Test func runStopsWithTheVariableToChange() throws {
        let listener = try Listener()
        let scratch = try ScratchDirectory()
        var environment = EndToEndConfigurationTests.validEnvironment(scratch)
        environment["LEAD_RELAY_HTTP_PORT"] = String(listener.port)
        let run = try Self.run(["run"], environment: environment, scratch: scratch)
        #expect(run.status == 2, "standard error: \(run.stderr)")
        let lines = run.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 1, "standard error: \(run.stderr)")
        #expect(lines.first?.hasPrefix("lead-relay: LEAD_RELAY_HTTP_PORT: ") == true, "\(run.stderr)")
        #expect(lines.first?.contains("127.0.0.1:\(listener.port)") == true, "\(run.stderr)")
        #expect(run.stderr.contains("Address already in use"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("dedupe.sqlite")), "the dedupe store was opened")
    }

    @Test func demoStopsBeforeProducingWithTheFlagToChange() throws {
        let listener = try Listener()
        let scratch = try ScratchDirectory()
        let run = try Self.run(
            ["demo", "--http-port", String(listener.port), "--count", "5"], environment: [:], scratch: scratch)
        #expect(run.status == 2, "standard error: \(run.stderr)")
        let lines = run.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 1, "standard error: \(run.stderr)")
        #expect(lines.first?.hasPrefix("lead-relay: --http-port: ") == true, "\(run.stderr)")
        #expect(lines.first?.contains("127.0.0.1:\(listener.port)") == true, "\(run.stderr)")
        #expect(!run.stdout.contains("produced"), "standard output: \(run.stdout)")
    }
}
