import ArgumentParser
import Foundation
import LeadEvents

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
            one is not, 2 when an input cannot be read.
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
        var maxBytes = 65536
        if let maxEventBytes {
            maxBytes = maxEventBytes
        } else if let text = environment["LEAD_RELAY_MAX_EVENT_BYTES"] {
            guard let value = Int(text), value > 0 else {
                printError("lead-relay validate: LEAD_RELAY_MAX_EVENT_BYTES must be a positive integer")
                throw ExitCode(2)
            }
            maxBytes = value
        }
        let decoder = LeadEventDecoder(
            eventType: eventType ?? environment["LEAD_RELAY_EVENT_TYPE"] ?? "lead.submitted",
            maxEventBytes: maxBytes)

        var inputs: [(label: String?, bytes: [UInt8])] = []
        if files.isEmpty {
            inputs.append((nil, [UInt8](FileHandle.standardInput.readDataToEndOfFile())))
        }
        for path in files {
            guard let contents = FileManager.default.contents(atPath: path) else {
                printError("lead-relay validate: cannot read \(path)")
                throw ExitCode(2)
            }
            inputs.append((files.count > 1 ? path : nil, [UInt8](contents)))
        }

        var total = 0
        var invalid = 0
        for input in inputs {
            if let label = input.label { print("\(label):") }
            for (position, event) in LeadEventBatch.events(in: input.bytes).enumerated() {
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
        print("summary: \(total) events, \(total - invalid) valid, \(invalid) invalid")
        if invalid > 0 { throw ExitCode(1) }
    }

    private func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
