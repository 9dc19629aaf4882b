import Foundation
import TestSupport
import Testing

/// Runs the built `lead-relay validate` (it sits next to the test bundle in the build folder).
@Suite("lead-relay validate")
struct ValidateCommandTests {
    struct Run {
        var status: Int32
        var lines: [String]
        var errorLines: [String]
    }

    static var executable: URL? {
        FixtureCorpus.fixturesDirectory?.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("lead-relay")
    }

    static func run(_ arguments: [String], standardInput: [UInt8] = []) throws -> Run {
        let executable = try #require(Self.executable)
        try #require(FileManager.default.isExecutableFile(atPath: executable.path), "build lead-relay first")
        let run = try CompletedProcess.run(
            executable, arguments: ["validate"] + arguments, standardInput: standardInput)
        return Run(
            status: run.status, lines: run.standardOutput.split(separator: "\n").map(String.init),
            errorLines: run.standardError.split(separator: "\n").map(String.init))
    }

    static func temporaryFile(_ bytes: [UInt8]) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lead-events-\(UUID().uuidString).jsonl")
        try Data(bytes).write(to: url)
        return url
    }

    @Test("every header-less fixture gets its expected verdict from the command")
    func fixtureCorpusVerdicts() throws {
        // One event per line, so only values without line breaks; headers cannot be given to the command.
        let eligible = FixtureCorpus.all.filter { fixture in
            guard fixture.headers.isEmpty, let bytes = fixture.valueBytes else { return false }
            return !bytes.contains(0x0A) && !bytes.contains(0x0D) && bytes.contains { $0 != 0x20 && $0 != 0x09 }
        }.sorted { ($0.expect == "valid" ? 0 : 1) < ($1.expect == "valid" ? 0 : 1) }
        #expect(eligible.count >= 150)
        var file: [UInt8] = []
        for fixture in eligible {
            file += fixture.valueBytes ?? []
            file.append(0x0A)
        }
        let url = try Self.temporaryFile(file)
        defer { try? FileManager.default.removeItem(at: url) }

        let run = try Self.run([url.path])
        #expect(run.status == 1)
        let verdictLines = run.lines.filter { $0.hasPrefix("event ") }
        try #require(verdictLines.count == eligible.count)
        for (position, fixture) in eligible.enumerated() {
            let expected =
                fixture.expect == "valid"
                ? "event \(position + 1): valid (\(fixture.shape), key "
                : "event \(position + 1): invalid (\(fixture.expect))"
            #expect(verdictLines[position].hasPrefix(expected), "\(fixture.name): \(verdictLines[position])")
        }
    }

    @Test("a JSON array on standard input: verdicts with violations, exit 1; all valid: exit 0")
    func arrayOnStandardInput() throws {
        let valid = try #require(FixtureCorpus.all.first { $0.name == "structured-full" }?.value)
        let plain = try #require(FixtureCorpus.all.first { $0.name == "plain-minimal" }?.value)
        let badEmail = try #require(FixtureCorpus.all.first { $0.name == "email-no-at" }?.value)

        let mixed = try Self.run([], standardInput: Array("[\(valid),\n \(badEmail), \(plain)]".utf8))
        #expect(mixed.status == 1)
        #expect(mixed.lines.contains { $0.hasPrefix("event 1: valid (structured, key ce:/portals/slg|") })
        #expect(mixed.lines.contains("event 2: invalid (schema-violation)"))
        #expect(mixed.lines.contains("  /data/email: is not a valid email address"))
        #expect(mixed.lines.contains { $0.hasPrefix("event 3: valid (plain, key sha256:") })

        let allValid = try Self.run([], standardInput: Array("[\(valid), \(plain)]".utf8))
        #expect(allValid.status == 0)
        #expect(allValid.lines.filter { $0.contains(": valid (") }.count == 2)
        #expect(allValid.lines.last == "summary: 2 events, 2 valid, 0 invalid")
    }

    @Test("one event is counted in the singular")
    func singleEvent() throws {
        let valid = try #require(FixtureCorpus.all.first { $0.name == "structured-full" }?.value)
        let run = try Self.run([], standardInput: Array("\(valid)\n".utf8))
        #expect(run.status == 0)
        #expect(run.lines.last == "summary: 1 event, 1 valid, 0 invalid")
    }

    @Test("an unreadable file exits 2 with the system's reason")
    func unreadableInput() throws {
        let missing = try Self.run(["/nonexistent/lead-events.jsonl"])
        #expect(missing.status == 2)
        #expect(
            missing.errorLines == [
                "lead-relay validate: cannot read /nonexistent/lead-events.jsonl: No such file or directory"
            ])

        let directory = try Self.run([FileManager.default.temporaryDirectory.path])
        #expect(directory.status == 2)
        #expect(directory.errorLines.first?.hasSuffix(": Is a directory") == true, "\(directory.errorLines)")
    }

    @Test("an input without events exits 1 and says so, on standard input and in a file")
    func emptyInput() throws {
        for standardInput in ["", "\n  \n", "[]"] {
            let run = try Self.run([], standardInput: Array(standardInput.utf8))
            #expect(run.status == 1, "\(standardInput.debugDescription)")
            #expect(run.errorLines == ["lead-relay validate: no events in standard input"])
            #expect(run.lines.last == "summary: 0 events, 0 valid, 0 invalid")
        }

        let valid = try #require(FixtureCorpus.all.first { $0.name == "structured-full" }?.value)
        let full = try Self.temporaryFile(Array("\(valid)\n".utf8))
        let empty = try Self.temporaryFile([])
        defer {
            try? FileManager.default.removeItem(at: full)
            try? FileManager.default.removeItem(at: empty)
        }
        let run = try Self.run([full.path, empty.path])
        #expect(run.status == 1)
        #expect(run.errorLines == ["lead-relay validate: no events in \(empty.path)"])
        #expect(run.lines.last == "summary: 1 event, 1 valid, 0 invalid")
    }
}
