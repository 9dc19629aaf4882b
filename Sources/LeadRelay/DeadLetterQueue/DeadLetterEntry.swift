import Foundation
import Kafka

/// One record of the dead-letter topic, with what its headers say of its failure. Its key and value (personal data)
/// are kept apart in `record`, and shown only when asked for.
public struct DeadLetterEntry: Sendable {
    public var record: KafkaConsumerRecord
    public var reason: String?
    public var stage: String?
    public var message: String?
    public var httpStatus: Int?
    public var failedAt: Date?
    public var attempts: Int?
    /// 0 for a record never replayed.
    public var replayCount: Int
    public var dedupeKey: String?
    public var source: KafkaRecordPosition?

    public init(_ record: KafkaConsumerRecord) {
        self.record = record
        // The last of a repeated header: a record copied into the input topic by hand keeps its old failure's
        // headers, and the relay appends the new failure's after them.
        var values: [String: String] = [:]
        for header in record.headers where header.key.hasPrefix("lead-relay.") {
            values[header.key] = header.value.map { String(decoding: $0, as: UTF8.self) }
        }
        reason = values[DeadLetterHeader.reason]
        stage = values[DeadLetterHeader.stage]
        message = values[DeadLetterHeader.message]
        httpStatus = values[DeadLetterHeader.httpStatus].flatMap { Int($0) }
        failedAt = values[DeadLetterHeader.failedAt].flatMap(RFC3339Timestamp.parse)
        attempts = values[DeadLetterHeader.attempts].flatMap { Int($0) }
        replayCount = values[DeadLetterHeader.replayCount].flatMap { Int($0) } ?? 0
        dedupeKey = values[DeadLetterHeader.dedupeKey]
        if let topic = values[DeadLetterHeader.sourceTopic],
            let partition = values[DeadLetterHeader.sourcePartition].flatMap({ Int32($0) }),
            let offset = values[DeadLetterHeader.sourceOffset].flatMap({ Int64($0) })
        {
            source = KafkaRecordPosition(topic: topic, partition: partition, offset: offset)
        }
    }

    /// `<topic>/<partition>/<offset>`: where this dead letter sits, as `lead-relay.replayed-from` names it.
    public var location: String { "\(record.topic)/\(record.partition)/\(record.offset)" }

    /// The record a replay publishes to the input topic: the original key, value and headers, with the replay's
    /// two headers in place of the failure's.
    func replayHeaders() -> [KafkaHeader] {
        record.headers.filter { !DeadLetterHeader.isDroppedByReplay($0.key) } + [
            KafkaHeader(key: DeadLetterHeader.replayedFrom, value: Array(location.utf8)),
            KafkaHeader(key: DeadLetterHeader.replayCount, value: Array(String(replayCount + 1).utf8)),
        ]
    }
}

/// RFC 3339 timestamps as operators type them and as the relay writes them (with or without fractional seconds).
enum RFC3339Timestamp {
    static func parse(_ text: String) -> Date? {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let withoutFraction = Date.ISO8601FormatStyle()
        return (try? withFraction.parse(text)) ?? (try? withoutFraction.parse(text))
    }
}
