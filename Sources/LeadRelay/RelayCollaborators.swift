import Foundation
import Kafka
import SeekerLeads

// What the relay core (`RecordProcessor`, `OutcomePublisher`, `RelayService`) needs of each part it talks to. The
// core sees only these, so that its routing, dedupe, dead-lettering, abandonment and commits run in tests against
// in-memory stand-ins, in milliseconds; `RelayRuntime` gives it the real parts, which conform below.

/// The input side: a group member that delivers records and rebalances in poll order, and commits on request.
protocol RelayConsumer: Sendable {
    associatedtype Events: AsyncSequence<KafkaConsumerEvent, Never> & Sendable
    /// Read by one reader only.
    var events: Events { get }
    func subscribe(topics: [String]) throws
    /// Stops fetching (not polling) while the relay holds as many records as it may.
    func holdFetching(_ hold: Bool)
    /// Commits the next offsets to read; returns whether the group acknowledged them within `timeout`.
    func commitAndWait(_ offsets: [TopicPartition: Int64], timeout: Duration) async throws -> Bool
    /// Leaves the group and ends `events`; returns whether that finished within `timeout`.
    @discardableResult
    func close(timeout: Duration) async throws -> Bool
    func assignment() -> Set<TopicPartition>
    func lag() -> [TopicPartition: Int64]
}

/// The output side: writes outcome records and reports when the broker has them.
protocol OutcomeProducer: Sendable {
    func send(topic: String, partition: Int32?, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader])
        async throws -> KafkaDeliveryReport
    /// `onDelivery` runs once the broker answered, unless this throws.
    func enqueue(
        topic: String, partition: Int32?, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader],
        onDelivery: @escaping @Sendable (Result<KafkaDeliveryReport, KafkaError>) -> Void
    ) throws
    var isClosed: Bool { get }
    func flush(timeout: Duration) async throws
    func close(flushTimeout: Duration) async
}

/// The API: posts one lead (with its own retries, budget and credentials) and checks the credentials.
protocol LeadSubmitter: Sendable {
    /// Calls `beforeAttempt` before each attempt (throwing from it ends the submission) and `afterAttempt` after.
    func submitLeadRetrying(
        requestBody: [UInt8], traceparent: String?, deadline: ContinuousClock.Instant?,
        beforeAttempt: @Sendable () async throws -> Void,
        afterAttempt: @Sendable (SubmissionAttemptOutcome) async -> Void
    ) async throws -> (outcome: SubmissionAttemptOutcome, attempts: Int)
    func checkCredentials() async -> Bool
}

/// The dedupe memory: the leads the API accepted within the TTL, by dedupe key.
protocol SubmissionStore: Sendable {
    func submission(forKey key: String, now: Date) async throws -> SubmittedLead?
    func submissions(forKeys keys: Set<String>, now: Date) async throws -> [String: SubmittedLead]
    func recordSubmitted(_ lead: SubmittedLead) async throws
    /// Returns how many expired submissions were removed.
    func purgeExpired(now: Date) async throws -> Int
}

extension KafkaConsumer: RelayConsumer {}
extension KafkaProducer: OutcomeProducer {}
extension SeekerLeadsClient: LeadSubmitter {}
extension DedupeStore: SubmissionStore {}
