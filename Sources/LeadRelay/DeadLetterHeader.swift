/// The headers a dead letter carries besides the input record's own: written by the relay, read by `lead-relay dlq`.
public enum DeadLetterHeader {
    public static let stage = "lead-relay.error.stage"
    public static let reason = "lead-relay.error.reason"
    /// One line, free of personal data.
    public static let message = "lead-relay.error.message"
    /// JSON: the violations with their pointers, or the API's problem details.
    public static let details = "lead-relay.error.details"
    public static let httpStatus = "lead-relay.error.http-status"
    public static let dedupeKey = "lead-relay.error.dedupe-key"
    public static let sourceTopic = "lead-relay.source.topic"
    public static let sourcePartition = "lead-relay.source.partition"
    public static let sourceOffset = "lead-relay.source.offset"
    /// The input record's timestamp, in milliseconds since 1970.
    public static let sourceTimestamp = "lead-relay.source.timestamp"
    public static let attempts = "lead-relay.attempts"
    /// RFC 3339, in milliseconds.
    public static let failedAt = "lead-relay.failed-at"
    /// Set by a replay on the record it publishes to the input topic: `<dlq topic>/<partition>/<offset>`.
    public static let replayedFrom = "lead-relay.replayed-from"
    /// How many times the record was replayed; absent on a record never replayed. Carried into the record's next
    /// dead letter with the input record's other headers.
    public static let replayCount = "lead-relay.replay-count"

    /// The headers a replay leaves out of the record it publishes: those of the failure it re-drives, and the
    /// replay headers it writes anew.
    static func isDroppedByReplay(_ key: String) -> Bool {
        key.hasPrefix("lead-relay.error.") || key.hasPrefix("lead-relay.source.") || key == attempts
            || key == failedAt || key == replayedFrom || key == replayCount
    }
}
