import Foundation
import LeadEvents
import Testing

/// One record of the corpus under Fixtures/ (written by make_fixtures.py) and its expected verdict.
struct Fixture: Decodable, Sendable, CustomTestStringConvertible {
    struct Header: Decodable, Sendable {
        var key: String
        var value: String?
        var valueBase64: String?
    }

    var name: String
    var shape: String
    var value: String?
    var valueBase64: String?
    var valueNull: Bool?
    var headers: [Header]
    var expect: String
    var pointers: [String]?
    var dedupeKey: String?

    var testDescription: String { name }

    var valueBytes: [UInt8]? {
        if valueNull == true { return nil }
        if let valueBase64 { return Data(base64Encoded: valueBase64).map { [UInt8]($0) } }
        return value.map { Array($0.utf8) }
    }

    var headerPairs: [(key: String, value: [UInt8]?)] {
        headers.map { header in
            if let encoded = header.valueBase64 {
                return (header.key, Data(base64Encoded: encoded).map { [UInt8]($0) })
            }
            return (header.key, header.value.map { Array($0.utf8) })
        }
    }

    func decode(with decoder: LeadEventDecoder = LeadEventDecoder()) -> Result<LeadEvent, LeadEventRejection> {
        decoder.decode(key: nil, value: valueBytes, headers: headerPairs)
    }

    /// "valid" or the rejection reason, in the fixture's `expect` vocabulary.
    func verdict(with decoder: LeadEventDecoder = LeadEventDecoder()) -> String {
        switch decode(with: decoder) {
        case .success: "valid"
        case .failure(let rejection): rejection.reason.rawValue
        }
    }
}

enum FixtureCorpus {
    /// The source folder of this test target, for the Python script and the schema beside it.
    static let sourceDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let repositoryRoot = sourceDirectory.deletingLastPathComponent().deletingLastPathComponent()

    static let fixturesDirectory: URL? = Bundle.module.url(forResource: "Fixtures", withExtension: nil)

    /// Empty when the corpus cannot be read; `corpusIsComplete` fails the run in that case.
    static let all: [Fixture] = (try? load()) ?? []

    static func load() throws -> [Fixture] {
        guard let directory = fixturesDirectory else { throw CocoaError(.fileNoSuchFile) }
        let files = try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "jsonl" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let decoder = JSONDecoder()
        var fixtures: [Fixture] = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for line in text.split(separator: "\n") {
                fixtures.append(try decoder.decode(Fixture.self, from: Data(line.utf8)))
            }
        }
        return fixtures
    }
}
