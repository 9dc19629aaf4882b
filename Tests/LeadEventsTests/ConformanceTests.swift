import Foundation
import LeadEvents
import TestSupport
import Testing

/// The schema file and the Swift validator must not drift apart: every structured fixture gets the
/// same valid/invalid verdict from Python's jsonschema (Draft 2020-12, format checker on, with
/// rfc3339-validator) on schemas/lead-submitted.schema.json as from LeadEventDecoder.
@Suite("Conformance with Python jsonschema")
struct ConformanceTests {
    /// Fixtures where that validator is laxer than the contract; the contract's verdict (invalid) stands.
    static let namedExceptions: [String: String] = {
        var exceptions: [String: String] = [:]
        let dollarBeforeNewline = "Python's re `$` also matches before a final newline; ECMA-262 `$` does not"
        for name in ["classifiedId-trailing-newline", "phone-trailing-newline", "email-trailing-newline"] {
            exceptions[name] = dollarBeforeNewline
        }
        exceptions["submittedDate-trailing-newline"] =
            "rfc3339-validator's regex ends in `$`, which matches before a final newline"
        let emailOnlyAt = "jsonschema's email format only checks that an `@` is present"
        for name in [
            "email-control-char", "email-display-name", "email-domain-empty-label", "email-domain-hyphen-start",
            "email-domain-space", "email-domain-trailing-dot", "email-double-dot", "email-leading-dot",
            "email-local-65",
            "email-no-domain", "email-no-local", "email-non-ascii", "email-space", "email-trailing-dot-local",
            "email-two-ats",
        ] {
            exceptions[name] = emailOnlyAt
        }
        exceptions["duplicate-key"] = "Python's json keeps the last of duplicate keys; the relay refuses the ambiguity"
        exceptions["lone-high-surrogate-escape"] =
            "Python's json accepts unpaired surrogate escapes; they are not Unicode text"
        exceptions["lone-low-surrogate-escape"] =
            "Python's json accepts unpaired surrogate escapes; they are not Unicode text"
        exceptions["nesting-over-bound"] = "JSON Schema has no nesting bound; the relay refuses more than 32 levels"
        exceptions["too-large-valid-otherwise"] =
            "JSON Schema has no size bound; the relay refuses events over 65536 bytes"
        return exceptions
    }()

    @Test("structured fixtures: Swift verdict equals jsonschema's, except the named exceptions")
    func verdictsMatchPythonJSONSchema() throws {
        let pythonVerdicts = try Self.runPythonValidator()
        let structured = FixtureCorpus.all.filter { $0.shape == "structured" }
        #expect(structured.count >= 100)
        #expect(pythonVerdicts.count == structured.count)
        for fixture in structured {
            let swiftVerdict = fixture.verdict() == "valid" ? "valid" : "invalid"
            let pythonVerdict = try #require(pythonVerdicts[fixture.name], "no Python verdict for \(fixture.name)")
            if let reason = Self.namedExceptions[fixture.name] {
                #expect(pythonVerdict == "valid" && swiftVerdict == "invalid", "\(fixture.name) (exception: \(reason))")
            } else {
                #expect(
                    swiftVerdict == pythonVerdict, "\(fixture.name): Swift \(swiftVerdict), jsonschema \(pythonVerdict)"
                )
            }
        }
        let structuredNames = Set(structured.map(\.name))
        for name in Self.namedExceptions.keys {
            #expect(structuredNames.contains(name), "stale exception \(name)")
        }
    }

    static func runPythonValidator() throws -> [String: String] {
        let run = try CompletedProcess.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            arguments: [
                "python3",
                FixtureCorpus.sourceDirectory.appendingPathComponent("conformance.py").path,
                FixtureCorpus.repositoryRoot.appendingPathComponent("schemas/lead-submitted.schema.json").path,
                FixtureCorpus.sourceDirectory.appendingPathComponent("Fixtures").path,
            ])
        try #require(run.status == 0, "conformance.py failed: \(run.standardError)")
        return try JSONDecoder().decode([String: String].self, from: Data(run.standardOutput.utf8))
    }
}
