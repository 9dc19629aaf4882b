import Foundation
import Kafka
import Testing

@testable import LeadRelay

/// How `lead-relay dlq` reads a dead letter, selects it, counts it and re-drives it, without a broker.
@Suite struct DeadLetterQueueTests {
    private static func deadLetter(
        offset: Int64, reason: String, failedAt: String = "2026-12-01T10:00:00.000Z", extra: [(String, String)] = []
    ) -> KafkaConsumerRecord {
        let headers =
            [("portal", "p1"), ("lead-relay.replay-count", "1"), ("lead-relay.replayed-from", "leads.dlq/0/3")]
            + [
                ("lead-relay.error.stage", reason == "rejected-by-api" ? "submit" : "validate"),
                ("lead-relay.error.reason", reason), ("lead-relay.error.message", "why"),
                ("lead-relay.source.topic", "leads.submitted"), ("lead-relay.source.partition", "2"),
                ("lead-relay.source.offset", String(offset * 10)), ("lead-relay.attempts", "1"),
                ("lead-relay.failed-at", failedAt),
            ] + extra
        return KafkaConsumerRecord(
            topic: "leads.dlq", partition: 0, offset: offset, key: Array("k".utf8), value: Array("v".utf8),
            headers: headers.map { KafkaHeader(key: $0.0, value: Array($0.1.utf8)) })
    }

    @Test func aReplayKeepsTheRecordsOwnHeadersAndCountsOneMoreRound() {
        let entry = DeadLetterEntry(
            Self.deadLetter(offset: 7, reason: "rejected-by-api", extra: [("lead-relay.error.http-status", "422")]))
        #expect(entry.replayCount == 1)
        #expect(entry.httpStatus == 422)
        #expect(entry.source == KafkaRecordPosition(topic: "leads.submitted", partition: 2, offset: 70))
        let headers = entry.replayHeaders().map { ($0.key, String(decoding: $0.value ?? [], as: UTF8.self)) }
        #expect(headers.map(\.0) == ["portal", "lead-relay.replayed-from", "lead-relay.replay-count"])
        #expect(headers.map(\.1) == ["p1", "leads.dlq/0/7", "2"])
    }

    @Test func filtersSelectByEveryConditionGiven() throws {
        let now = try #require(RFC3339Timestamp.parse("2026-12-02T10:00:00Z"))
        let rejected = DeadLetterEntry(Self.deadLetter(offset: 1, reason: "rejected-by-api"))
        let invalid = DeadLetterEntry(
            Self.deadLetter(offset: 2, reason: "schema-violation", failedAt: "2026-11-20T10:00:00Z"))
        var filter = DeadLetterFilter()
        filter.reasons = ["rejected-by-api"]
        #expect(filter.matches(rejected, now: now) && !filter.matches(invalid, now: now))
        filter = DeadLetterFilter()
        filter.since = DeadLetterFilter.TimeBound("48h")
        #expect(filter.since != nil)
        #expect(filter.matches(rejected, now: now) && !filter.matches(invalid, now: now))
        filter.since = DeadLetterFilter.TimeBound("2026-11-01T00:00:00+01:00")
        filter.until = DeadLetterFilter.TimeBound("1d12h")
        #expect(filter.since != nil && filter.until != nil)
        #expect(!filter.matches(rejected, now: now) && filter.matches(invalid, now: now))
        filter = DeadLetterFilter()
        filter.sourceOffsets = 15...25
        #expect(!filter.matches(rejected, now: now) && filter.matches(invalid, now: now))
        filter.sourcePartitions = [3]
        #expect(!filter.matches(invalid, now: now))
        filter = DeadLetterFilter()
        filter.dedupeKeys = ["ce:/portals/p1|e-1"]
        let keyed = DeadLetterEntry(
            Self.deadLetter(
                offset: 3, reason: "rejected-by-api", extra: [("lead-relay.error.dedupe-key", "ce:/portals/p1|e-1")]))
        #expect(filter.matches(keyed, now: now) && !filter.matches(rejected, now: now))
        for bad in ["", "24", "h", "1x", "2026-13-01T00:00:00Z"] {
            #expect(DeadLetterFilter.TimeBound(bad) == nil, "\(bad)")
        }
    }

    @Test func theSameFiltersNameTheSameProgressGroupAndOthersAnother() throws {
        let queue = DeadLetterQueue(
            configuration: try DeadLetterToolConfiguration.fromEnvironment([
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "LEAD_RELAY_GROUP_ID": "relays",
            ]), logger: .init(label: "test"))
        var first = DeadLetterFilter()
        first.reasons = ["rejected-by-api", "retries-exhausted"]
        var reordered = DeadLetterFilter()
        reordered.reasons = ["retries-exhausted", "rejected-by-api"]
        var other = DeadLetterFilter()
        other.reasons = ["rejected-by-api"]
        #expect(queue.progressGroup(for: first) == queue.progressGroup(for: reordered))
        #expect(queue.progressGroup(for: first) != queue.progressGroup(for: other))
        #expect(queue.progressGroup(for: other).hasPrefix("relays.dlq-replay."))
    }

    @Test func theSummaryCountsByReasonStageStatusAndDay() {
        var summary = DeadLetterSummary(topic: "leads.dlq")
        summary.add(DeadLetterEntry(Self.deadLetter(offset: 1, reason: "rejected-by-api")))
        summary.add(DeadLetterEntry(Self.deadLetter(offset: 2, reason: "rejected-by-api")))
        summary.add(
            DeadLetterEntry(Self.deadLetter(offset: 3, reason: "malformed", failedAt: "2026-11-30T23:59:59.999Z")))
        #expect(summary.total == 3)
        #expect(summary.byReason == ["rejected-by-api": 2, "malformed": 1])
        #expect(summary.byStage == ["submit": 2, "validate": 1])
        #expect(summary.byHTTPStatus == ["none": 3])
        #expect(summary.byDay == ["2026-12-01": 2, "2026-11-30": 1])
        #expect(summary.oldestFailedAt == RFC3339Timestamp.parse("2026-11-30T23:59:59.999Z"))
        #expect(summary.text.contains("rejected-by-api  2"))
    }

    @Test func aBadMaximumOfReplaysStopsWithTheVariableNamed() {
        #expect(throws: ConfigurationErrors.self) {
            try DeadLetterToolConfiguration.fromEnvironment([
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "LEAD_RELAY_MAX_REPLAYS": "0",
            ])
        }
        do {
            _ = try DeadLetterToolConfiguration.fromEnvironment(["LEAD_RELAY_MAX_REPLAYS": "x"])
        } catch {
            #expect(error.lines.contains { $0.hasPrefix("lead-relay: LEAD_RELAY_MAX_REPLAYS: ") })
            #expect(error.lines.contains { $0.hasPrefix("lead-relay: KAFKA_BOOTSTRAP_SERVERS: ") })
        }
    }
}
