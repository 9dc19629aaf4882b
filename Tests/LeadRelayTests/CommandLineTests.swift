import Foundation
import LeadRelayDemo
import TestSupport
import Testing

/// The built `lead-relay` as a person runs it from a shell: its help and the demo's output.
@Suite("lead-relay on the command line")
struct CommandLineTests {
    struct Run {
        var status: Int32
        var output: String
        var lines: [String] { output.split(separator: "\n").map(String.init) }
    }

    /// Runs `lead-relay` to its end with standard output on a pipe (so not a terminal) and standard error in a
    /// file of `scratch`. The deadline only bounds a hung run; it never decides a passing one.
    static func run(_ arguments: [String], scratch: ScratchDirectory) throws -> Run {
        let executable = ChildProcess.productsDirectory.appendingPathComponent("lead-relay")
        try #require(FileManager.default.isExecutableFile(atPath: executable.path), "build lead-relay first")
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        let errorPath = scratch.path("lead-relay-\(UUID().uuidString.prefix(8)).stderr")
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        try process.run()
        let watchdog = DispatchWorkItem { [process] in if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 300, execute: watchdog)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        watchdog.cancel()
        let run = Run(status: process.terminationStatus, output: text)
        if run.status != 0 {
            let errors = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            Issue.record("lead-relay \(arguments.joined(separator: " ")) exited \(run.status): \(errors.suffix(2000))")
        }
        return run
    }

    @Test("kafka-dev --help shows the default topics in the NAME:PARTITIONS form the flag takes")
    func kafkaDevHelpShowsTopicsAsTheFlagTakesThem() throws {
        let scratch = try ScratchDirectory()
        let help = try Self.run(["kafka-dev", "--help"], scratch: scratch)
        // The help wraps long lines: compare with single spaces.
        let text = help.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("(default: leads.submitted:6, leads.results:6, leads.dlq:1)"), "\(help.output)")
        #expect(!text.contains("TopicSpec"))
    }

    @Test("two default demo runs print the same counts, those of the seeded sample mix")
    func demoIsReproducible() throws {
        let scratch = try ScratchDirectory()
        let count = 40
        let arguments = ["demo", "--count", String(count), "--http-port", "0"]
        let first = try Self.run(arguments, scratch: scratch)
        let second = try Self.run(arguments, scratch: scratch)

        // The demo's defaults: 10% duplicates, 10% invalid, seed 1.
        let mix = SampleLeads.mix(count: count, duplicateFraction: 0.1, invalidFraction: 0.1, seed: 1)
        let submitted = mix.filter { $0.expectation == .submitted }.count
        let duplicates = mix.filter { $0.expectation == .duplicate }.count
        let deadLetters = mix.count - submitted - duplicates
        try #require(duplicates > 0 && deadLetters > 0, "the mix should have every outcome")
        var deadLettersByReason: [String: Int] = [:]
        for record in mix {
            if case .deadLettered(let reason) = record.expectation { deadLettersByReason[reason, default: 0] += 1 }
        }
        let expected = """
              outcomes: \(submitted) submitted, \(duplicates) duplicate\(duplicates == 1 ? "" : "s"), \
            \(deadLetters) dead letters
            """

        for run in [first, second] {
            #expect(run.lines.filter { $0.hasPrefix("  outcomes: ") } == [expected], "\(run.output)")
            #expect(run.lines.contains("produced \(count) sample records to leads.submitted (seed 1)"))
            // The pointer at `lead-relay dlq summary`, with what it says of the demo's dead letters.
            let pointer = run.lines.firstIndex {
                $0.hasPrefix("\(deadLetters) dead letters: `lead-relay dlq summary` shows them by reason")
            }
            #expect(pointer.map { run.lines[$0 + 1] } == "  \(deadLetters) dead letters selected in leads.dlq")
            for (reason, letters) in deadLettersByReason {
                #expect(
                    run.lines.contains { $0.hasPrefix("    \(reason) ") && $0.hasSuffix(" \(letters)") },
                    "\(reason): \(letters) dead letters not in \(run.output)")
            }
            // Not a terminal: whole lines, no redrawing.
            #expect(!run.output.contains("\r"))
            #expect(run.lines.contains { $0.hasPrefix("\(count)/\(count) handled: \(submitted) submitted, ") })
        }
    }
}
