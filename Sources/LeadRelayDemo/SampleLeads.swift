import Kafka

/// Sample lead records for the demo, the benchmarks and the end-to-end tests: every shape the
/// relay reads, with re-sent duplicates and invalid records mixed in, each labelled with the
/// outcome the relay must reach. The contact data is synthetic (example.com, 555 numbers).
public enum SampleLeads {
    public enum Expectation: Sendable, Equatable {
        case submitted
        case duplicate
        case deadLettered(reason: String)
    }

    public struct Record: Sendable {
        public var key: [UInt8]?
        public var value: [UInt8]?
        public var headers: [KafkaHeader]
        public var expectation: Expectation
        /// The classifiedId of a valid lead: unique per distinct lead, so tests can match API calls to records.
        public var classifiedID: String?
    }

    public enum Shape: CaseIterable, Sendable {
        case structured, binary, plain
    }

    /// A reproducible mix: the record at each position depends only on `seed` and the position.
    /// A duplicate re-sends, byte for byte, an earlier valid record of this mix.
    public static func mix(
        count: Int, duplicateFraction: Double, invalidFraction: Double, seed: UInt64 = 1, namespace: String = "demo"
    ) -> [Record] {
        var random = SplitMix64(seed: seed)
        var records: [Record] = []
        var validRecords: [Record] = []
        records.reserveCapacity(count)
        for position in 0..<count {
            let draw = Double(random.next() % 10_000) / 10_000
            if draw < invalidFraction {
                records.append(invalid(variant: Int(random.next() % UInt64(invalidVariants)), position: position))
            } else if draw < invalidFraction + duplicateFraction,
                let original = validRecords.randomElement(using: &random)
            {
                var copy = original
                copy.expectation = .duplicate
                records.append(copy)
            } else {
                let shape = Shape.allCases[Int(random.next() % 3)]
                let record = valid(index: validRecords.count, shape: shape, namespace: namespace, seed: seed)
                validRecords.append(record)
                records.append(record)
            }
        }
        return records
    }

    /// A valid lead in one shape; `index` makes it distinct from every other index of the same namespace and seed.
    public static func valid(index: Int, shape: Shape, namespace: String = "demo", seed: UInt64 = 1) -> Record {
        let classifiedID = classifiedID(for: index, seed: seed)
        let request = """
            {"firstName":"Sample","lastName":"Seeker \(index)","email":"seeker.\(index)@example.com",\
            "language":"FR","phoneNumbers":[{"number":"+33 555 \(String(format6(index)))","type":"MOBILE"}],\
            "message":"I would like to visit this property.","classifiedId":"\(classifiedID)",\
            "submittedDate":"2026-11-29T10:00:00+01:00"}
            """
        let eventID = "\(namespace)-\(seed)-\(index)"
        let key = Array(classifiedID.utf8)
        switch shape {
        case .structured:
            let value = """
                {"specversion":"1.0","id":"\(eventID)","source":"/portals/\(namespace)","type":"lead.submitted",\
                "time":"2026-11-29T09:00:00Z","datacontenttype":"application/json","data":\(request)}
                """
            return Record(
                key: key, value: Array(value.utf8), headers: [], expectation: .submitted, classifiedID: classifiedID)
        case .binary:
            let headers = [
                ("ce_specversion", "1.0"), ("ce_id", eventID), ("ce_source", "/portals/\(namespace)"),
                ("ce_type", "lead.submitted"), ("ce_time", "2026-11-29T09:00:00Z"),
                ("content-type", "application/json"),
            ].map { KafkaHeader(key: $0.0, value: Array($0.1.utf8)) }
            return Record(
                key: key, value: Array(request.utf8), headers: headers, expectation: .submitted,
                classifiedID: classifiedID)
        case .plain:
            return Record(
                key: key, value: Array(request.utf8), headers: [], expectation: .submitted, classifiedID: classifiedID)
        }
    }

    private static let invalidVariants = 4

    private static func invalid(variant: Int, position: Int) -> Record {
        let key = Array("invalid-\(position)".utf8)
        switch variant {
        case 0:
            return Record(
                key: key, value: Array("{\"lastName\": \"Seeker\", \"email\": ".utf8), headers: [],
                expectation: .deadLettered(reason: "malformed"))
        case 1:
            let value = """
                {"lastName":"Seeker","email":"not-an-email","phoneNumbers":[{"number":"12"}],\
                "message":"Hello","classifiedId":"12ABCDEFGHIO","submittedDate":"2026-02-30T10:00:00Z"}
                """
            return Record(
                key: key, value: Array(value.utf8), headers: [],
                expectation: .deadLettered(reason: "schema-violation"))
        case 2:
            let value = """
                {"specversion":"1.0","id":"x-\(position)","source":"/portals/demo","type":"lead.deleted",\
                "data":{}}
                """
            return Record(
                key: key, value: Array(value.utf8), headers: [],
                expectation: .deadLettered(reason: "unsupported-type"))
        default:
            return Record(
                key: nil, value: [0xFF, 0xFE, 0x00, 0x7B], headers: [KafkaHeader(key: "trace", value: nil)],
                expectation: .deadLettered(reason: "malformed"))
        }
    }

    /// Two digits and ten characters of [1-9A-NP-Z], distinct for every index below 34^10.
    static func classifiedID(for index: Int, seed: UInt64) -> String {
        let alphabet = Array("123456789ABCDEFGHIJKLMNPQRSTUVWXYZ")
        var rest = index
        var characters: [Character] = []
        for _ in 0..<10 {
            characters.append(alphabet[rest % alphabet.count])
            rest /= alphabet.count
        }
        let prefix = String(format2(Int(seed % 100)))
        return prefix + String(characters.reversed())
    }

    private static func format2(_ value: Int) -> String {
        value < 10 ? "0\(value)" : "\(value)"
    }

    private static func format6(_ value: Int) -> String {
        let digits = String(value % 1_000_000)
        return String(repeating: "0", count: 6 - digits.count) + digits
    }
}

/// A small, fast, seedable generator, so that a sample mix is the same on every run.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
