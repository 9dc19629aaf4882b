import Foundation
import Kafka
import RelayPrimitives

/// `lead-relay dlq summary`: counts of the selected dead letters, with no personal data.
public struct DeadLetterSummary: Sendable, Encodable {
    public var topic: String
    public var total = 0
    public var oldestFailedAt: Date?
    public var newestFailedAt: Date?
    public var byReason: [String: Int] = [:]
    public var byStage: [String: Int] = [:]
    /// `none` for a dead letter that never had an API answer.
    public var byHTTPStatus: [String: Int] = [:]
    /// UTC days, `YYYY-MM-DD`, of `failedAt`.
    public var byDay: [String: Int] = [:]

    public init(topic: String) { self.topic = topic }

    mutating func add(_ entry: DeadLetterEntry) {
        total += 1
        byReason[entry.reason ?? "unknown", default: 0] += 1
        byStage[entry.stage ?? "unknown", default: 0] += 1
        byHTTPStatus[entry.httpStatus.map(String.init) ?? "none", default: 0] += 1
        guard let failedAt = entry.failedAt else {
            byDay["unknown", default: 0] += 1
            return
        }
        byDay[String(RFC3339Milliseconds.format(failedAt).prefix(10)), default: 0] += 1
        oldestFailedAt = min(oldestFailedAt ?? failedAt, failedAt)
        newestFailedAt = max(newestFailedAt ?? failedAt, failedAt)
    }

    private enum CodingKeys: String, CodingKey {
        case topic, total, oldestFailedAt, newestFailedAt, byReason, byStage, byHTTPStatus = "byHttpStatus", byDay
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(topic, forKey: .topic)
        try container.encode(total, forKey: .total)
        try container.encode(oldestFailedAt.map(RFC3339Milliseconds.format), forKey: .oldestFailedAt)
        try container.encode(newestFailedAt.map(RFC3339Milliseconds.format), forKey: .newestFailedAt)
        try container.encode(byReason, forKey: .byReason)
        try container.encode(byStage, forKey: .byStage)
        try container.encode(byHTTPStatus, forKey: .byHTTPStatus)
        try container.encode(byDay, forKey: .byDay)
    }

    /// For a person: the total, the time span, then each breakdown, largest count first.
    public var text: String {
        var lines = ["\(total) dead letter\(total == 1 ? "" : "s") selected in \(topic)"]
        if let oldestFailedAt, let newestFailedAt {
            lines.append(
                "failed from \(RFC3339Milliseconds.format(oldestFailedAt)) to \(RFC3339Milliseconds.format(newestFailedAt))"
            )
        }
        func section(_ title: String, _ counts: [String: Int], byName: Bool = false) {
            guard !counts.isEmpty else { return }
            lines.append("\(title):")
            let width = counts.keys.map(\.count).max() ?? 0
            let ordered = counts.sorted { byName ? $0.key < $1.key : ($0.value, $1.key) > ($1.value, $0.key) }
            for (name, count) in ordered {
                lines.append("  \(name.padding(toLength: width, withPad: " ", startingAt: 0))  \(count)")
            }
        }
        section("by reason", byReason)
        section("by stage", byStage)
        section("by HTTP status", byHTTPStatus)
        section("by day (UTC)", byDay, byName: true)
        return lines.joined(separator: "\n")
    }
}

/// One line of `lead-relay dlq list`: where the dead letter is, where it came from and why it failed. The key and
/// value (personal data) only when asked for.
public struct DeadLetterListing: Sendable, Encodable {
    public var dlqPartition: Int32
    public var dlqOffset: Int64
    @NullEncoded public var sourceTopic: String?
    @NullEncoded public var sourcePartition: Int32?
    @NullEncoded public var sourceOffset: Int64?
    @NullEncoded public var reason: String?
    @NullEncoded public var stage: String?
    @NullEncoded public var message: String?
    @NullEncoded public var httpStatus: Int?
    @NullEncoded public var failedAt: String?
    @NullEncoded public var attempts: Int?
    public var replayCount: Int
    @NullEncoded public var dedupeKey: String?
    /// Only with `--show-values` (personal data); a null key or value is then left out.
    public var key: String?
    public var value: String?

    public init(_ entry: DeadLetterEntry, showValues: Bool) {
        dlqPartition = entry.record.partition
        dlqOffset = entry.record.offset
        sourceTopic = entry.source?.topic
        sourcePartition = entry.source?.partition
        sourceOffset = entry.source?.offset
        reason = entry.reason
        stage = entry.stage
        message = entry.message
        httpStatus = entry.httpStatus
        failedAt = entry.failedAt.map(RFC3339Milliseconds.format)
        attempts = entry.attempts
        replayCount = entry.replayCount
        dedupeKey = entry.dedupeKey
        if showValues {
            key = entry.record.key.map { String(decoding: $0, as: UTF8.self) }
            value = entry.record.value.map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// `<partition>@<offset> <source> <reason> <stage> http=<status> attempts=<n> replays=<n> failed=<time>
    /// key=<dedupe key> "<message>"`, then the record's key and value when shown.
    public var text: String {
        let source =
            sourceTopic.map {
                "\($0)/\(sourcePartition.map(String.init) ?? "?")/\(sourceOffset.map(String.init) ?? "?")"
            }
            ?? "-"
        var fields = [
            "\(dlqPartition)@\(dlqOffset)", "from=\(source)", reason ?? "-", stage ?? "-",
            "http=\(httpStatus.map(String.init) ?? "-")", "attempts=\(attempts.map(String.init) ?? "-")",
            "replays=\(replayCount)", "failed=\(failedAt ?? "-")", "dedupe-key=\(dedupeKey ?? "-")",
            Self.quoted(message ?? ""),
        ]
        if key != nil || value != nil {
            fields.append("key=\(key.map(Self.quoted) ?? "null")")
            fields.append("value=\(value.map(Self.quoted) ?? "null")")
        }
        return fields.joined(separator: " ")
    }

    private static func quoted(_ text: String) -> String { JSONString.quoted(text) }
}
