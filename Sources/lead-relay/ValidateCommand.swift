import ArgumentParser
import Foundation
import LeadEvents
import LeadRelay

/// Judges events offline, exactly as the relay would: same decoder, same limits, same verdicts.
/// Synchronous on purpose: it only reads files and standard input, which block.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Checks lead events against the createLeadRequest contract.",
        discussion: """
            Reads each FILE (standard input when none is given): one JSON event per line, or one JSON \
            array of events. Each event is a structured CloudEvent or a plain createLeadRequest. Prints \
            one verdict per event with its violations. Exit status: 0 when every event is valid, 1 when \
            one is not or an input holds no event, 2 when an input cannot be read.
            """
    )

    @Argument(help: "Files of events. Standard input when none is given.")
    var files: [String] = []

    @Option(help: "The accepted event type (default: LEAD_RELAY_EVENT_TYPE, else lead.submitted).")
    var eventType: String?

    @Option(help: "The largest event in bytes (default: LEAD_RELAY_MAX_EVENT_BYTES, else 65536).")
    var maxEventBytes: Int?

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        let maxBytes: Int
        if let maxEventBytes {
            maxBytes = maxEventBytes
        } else {
            do {
                maxBytes = try RelayConfiguration.maxEventBytes(environment)
            } catch {
                printError(error.line)
                throw ExitCode(2)
            }
        }
        let decoder = LeadEventDecoder(
            eventType: eventType ?? environment["LEAD_RELAY_EVENT_TYPE"] ?? "lead.submitted",
            maxEventBytes: maxBytes)

        var inputs: [(name: String, bytes: [UInt8])] = []
        if files.isEmpty {
            inputs.append(("standard input", [UInt8](FileHandle.standardInput.readDataToEndOfFile())))
        }
        for path in files {
            switch Self.contents(ofFile: path) {
            case .success(let bytes):
                inputs.append((path, bytes))
            case .failure(let error):
                printError("lead-relay validate: cannot read \(path): \(error)")
                throw ExitCode(2)
            }
        }

        var total = 0
        var invalid = 0
        // An empty input is most likely the wrong file or a producer that wrote nothing: not a success.
        var empty = 0
        for input in inputs {
            if files.count > 1 { print("\(input.name):") }
            let events = LeadEventBatch.events(in: input.bytes)
            if events.isEmpty {
                empty += 1
                printError("lead-relay validate: no events in \(input.name)")
            }
            for (position, event) in events.enumerated() {
                total += 1
                switch decoder.decode(key: nil, value: Array(event), headers: []) {
                case .success(let leadEvent):
                    print("event \(position + 1): valid (\(leadEvent.shape.rawValue), key \(leadEvent.dedupeKey))")
                case .failure(let rejection):
                    invalid += 1
                    print("event \(position + 1): invalid (\(rejection.reason.rawValue))")
                    for violation in rejection.violations {
                        print("  \(violation.pointer.isEmpty ? "(event)" : violation.pointer): \(violation.message)")
                    }
                }
            }
        }
        print("summary: \(total) \(total == 1 ? "event" : "events"), \(total - invalid) valid, \(invalid) invalid")
        if invalid > 0 || empty > 0 { throw ExitCode(1) }
    }

    /// The bytes of a file, or the system's reason why they cannot be read (`No such file or directory`):
    /// FileManager's `contents(atPath:)` only says that they cannot.
    static func contents(ofFile path: String) -> Result<[UInt8], SystemError> {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .failure(SystemError(code: errno)) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count > 0 {
                bytes += chunk[..<count]
            } else if count == 0 {
                return .success(bytes)
            } else if errno != EINTR {
                return .failure(SystemError(code: errno))
            }
        }
    }

}

/// An `errno` value, described as the C library describes it.
struct SystemError: Error, CustomStringConvertible {
    let code: Int32
    var description: String { String(cString: strerror(code)) }
}
