import Foundation
import LeadEvents
import Testing

@Suite("Fixture corpus")
struct FixtureTests {
    @Test("the corpus is complete: at least 150 events, every shape and verdict, unique names")
    func corpusIsComplete() throws {
        let fixtures = try FixtureCorpus.load()
        #expect(fixtures.count >= 150)
        #expect(Set(fixtures.map(\.name)).count == fixtures.count)
        for shape in ["structured", "binary", "plain"] {
            #expect(fixtures.contains { $0.shape == shape && $0.expect == "valid" }, "no valid \(shape) fixture")
        }
        for verdict in ["malformed", "unsupported-type", "schema-violation"] {
            #expect(fixtures.contains { $0.expect == verdict }, "no \(verdict) fixture")
        }
    }

    @Test("each fixture gets its expected verdict, violations, shape and dedupe key", arguments: FixtureCorpus.all)
    func verdict(of fixture: Fixture) throws {
        let result = fixture.decode()
        #expect(fixture.verdict() == fixture.expect)
        switch result {
        case .success(let event):
            #expect(event.shape.rawValue == fixture.shape)
            if let expectedKey = fixture.dedupeKey {
                #expect(event.dedupeKey == expectedKey)
            }
        case .failure(let rejection):
            if let pointers = fixture.pointers {
                #expect(Set(rejection.violations.map(\.pointer)) == Set(pointers))
            }
            #expect(!rejection.violations.isEmpty)
            #expect(!rejection.message.contains("\n") && !rejection.message.contains("\r"))
            #expect(rejection.stage == (rejection.reason == .schemaViolation ? "validate" : "decode"))
            let details =
                try JSONSerialization.jsonObject(with: Data(rejection.detailsJSON.utf8)) as? [[String: String]]
            #expect(details?.map { $0["pointer"] ?? "?" } == rejection.violations.map(\.pointer))
        }
    }
}
