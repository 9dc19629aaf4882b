import Foundation
import RelayPrimitives
import SeekerLeads

/// The relay's version, as `lead-relay --version` and `GET /status` give it.
public enum RelayVersion {
    public static let current = "0.14.0"
}

/// One assigned partition in `GET /status`.
public struct PartitionStatus: Sendable, Codable, Equatable {
    public var topic: String
    public var partition: Int32
    /// The group's committed offset (the next to read), as its coordinator answered; nil when none is committed or
    /// it did not answer.
    @NullEncoded public var committedOffset: Int64?
    /// The next offset the consumer fetches.
    @NullEncoded public var position: Int64?
    @NullEncoded public var highWatermark: Int64?
    @NullEncoded public var lag: Int64?
    /// Received and without an acknowledged outcome.
    public var recordsHeld: Int
    /// The first of those: the commit point.
    @NullEncoded public var oldestUnfinishedOffset: Int64?
    /// How long ago it was written to the topic.
    @NullEncoded public var oldestUnfinishedAgeSeconds: Double?
}

/// `GET /status`: where the relay stands and why, for a person (`lead-relay status`) or a script. No personal
/// data: offsets, counts, states and the configuration with its secrets redacted.
public struct RelayStatusDocument: Sendable, Codable {
    public struct Budget: Sendable, Codable {
        /// `process` (this relay's own) or `shared` (through the database, with every relay of its key).
        public var scope: String
        public var maxInFlight: Int
        public var rateLimit: Int
        public var windowMilliseconds: Int
        public var inFlight: Int
        @NullEncoded public var groupInFlight: Int?
        public var startsInLastWindow: Int
        public var callersWaiting: Int
        /// A `Retry-After` hold: how much of it is left; null when none holds.
        @NullEncoded public var retryAfterHold: RetryAfterHold?
    }

    public struct RetryAfterHold: Sendable, Codable {
        public var remainingSeconds: Double
        public var until: String
    }

    public struct Circuit: Sendable, Codable {
        /// `closed` or `open`.
        public var state: String
        @NullEncoded public var openSince: String?
        public var consecutiveFailures: Int
        /// Leads waiting for the circuit to let them try.
        public var leadsWaiting: Int
        @NullEncoded public var nextProbeInSeconds: Double?
    }

    public struct Credentials: Sendable, Codable {
        /// `static-token` or `client-credentials`.
        public var method: String
        /// `ok`, or `failing` while the API refuses them.
        public var state: String
        @NullEncoded public var failingSince: String?
        @NullEncoded public var tokenExpiresAt: String?
    }

    public struct APIAnswers: Sendable, Codable {
        public var count: Int
        public var lastAt: String
    }

    public var version: String
    public var generatedAt: String
    public var partitions: [PartitionStatus]
    public var budget: Budget
    public var circuit: Circuit
    public var credentials: Credentials
    /// The answers to `POST /leads` since start, by HTTP status (or `timeout`, `connection_error`).
    public var apiAnswers: [String: APIAnswers]
    public var configuration: [String: String]
}

/// Assembles `GET /status` from the parts that know each section.
public struct RelayStatusReporter: Sendable {
    let relay: RelayService
    let gates: SubmissionGates
    let client: SeekerLeadsClient
    let configuration: RelayConfiguration

    public func document() async -> RelayStatusDocument {
        let partitions = await relay.partitionStatus()
        let api = await client.status()
        let (circuit, credentials) = gates.snapshot()
        return RelayStatusDocument(
            version: RelayVersion.current, generatedAt: RFC3339Milliseconds.format(Date()), partitions: partitions,
            budget: RelayStatusDocument.Budget(
                scope: api.budget.scope, maxInFlight: configuration.maxInFlight, rateLimit: configuration.rateLimit,
                windowMilliseconds: Int(configuration.rateWindow.nanosecondsValue / 1_000_000),
                inFlight: api.budget.inFlight, groupInFlight: api.budget.groupInFlight,
                startsInLastWindow: api.budget.startsInLastWindow, callersWaiting: api.budget.waiting,
                retryAfterHold: api.budget.holdRemaining.map { remaining in
                    RelayStatusDocument.RetryAfterHold(
                        remainingSeconds: remaining.timeInterval,
                        until: RFC3339Milliseconds.format(Date().addingTimeInterval(remaining.timeInterval)))
                }),
            circuit: RelayStatusDocument.Circuit(
                state: circuit.state == .open ? "open" : "closed",
                openSince: circuit.openSince.map(RFC3339Milliseconds.format),
                consecutiveFailures: circuit.consecutiveFailures, leadsWaiting: circuit.waiting,
                nextProbeInSeconds: circuit.nextProbeIn?.timeInterval),
            credentials: RelayStatusDocument.Credentials(
                method: api.authentication, state: credentials.state == .open ? "failing" : "ok",
                failingSince: credentials.openSince.map(RFC3339Milliseconds.format),
                tokenExpiresAt: api.tokenExpiresAt.map(RFC3339Milliseconds.format)),
            apiAnswers: api.answersByCode.mapValues {
                RelayStatusDocument.APIAnswers(count: $0.count, lastAt: RFC3339Milliseconds.format($0.lastAt))
            },
            configuration: Dictionary(configuration.redactedFields, uniquingKeysWith: { first, _ in first }))
    }

    /// Brings the per-partition gauges up to date: a scrape then reads a current age.
    func refreshGauges() {
        relay.refreshPartitionGauges()
    }

    public func json() async -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(await document()), as: UTF8.self)) ?? "{}"
    }
}
