import Foundation
import Kafka
import SeekerLeads
import SharedState

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
    func positions() -> [TopicPartition: KafkaPartitionPosition]
    /// What the group committed for the assigned partitions, as the coordinator answers; nil when it did not
    /// within `timeout`.
    func committedOffsets(timeout: Duration) async throws -> [TopicPartition: Int64]?
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
    /// Calls `beforeAttempt` before each attempt (throwing from it ends the submission) and `afterAttempt` after;
    /// `mayWrite` once an attempt's budget permit is granted, just before the request goes out (false ends the
    /// submission with `SubmissionWithdrawn`, nothing sent).
    func submitLeadRetrying(
        requestBody: [UInt8], traceparent: String?, deadline: ContinuousClock.Instant?,
        beforeAttempt: @Sendable () async throws -> Void,
        mayWrite: @escaping @Sendable () -> Bool,
        afterAttempt: @Sendable (SubmissionAttemptOutcome) async -> Void
    ) async throws -> (outcome: SubmissionAttemptOutcome, attempts: Int)
    func checkCredentials() async -> Bool
}

/// The right to post a lead: no other record's post of its dedupe key overlaps it while it is live.
struct LeadReservation: Sendable, Equatable {
    /// The shared store's claim behind it; nil for one process's store, where holding the key in
    /// `KeyedExclusivity` is the reservation, and it never lapses.
    var claim: Claim?
    /// Set when an attempt to post the lead began before this reservation (another relay's, whose claim was taken
    /// over, or one of an earlier run of this relay or of another record) and never came to an outcome: the lead
    /// may be stored already, so it is looked up first. The instant is when that attempt began at the latest.
    var inDoubtSince: Date? = nil

    /// One process's reservation.
    static let local = LeadReservation(claim: nil)

    /// Whether it stays live for at least `duration` from now.
    func isLive(for duration: Duration) -> Bool {
        claim.map { ContinuousClock.now + duration < $0.expiresBy } ?? true
    }
}

/// What `SubmissionStore.reserve` found.
enum LeadReservationOutcome: Sendable, Equatable {
    /// Submitted within the TTL: no post.
    case submitted(SubmittedLead)
    /// Post it under this reservation, then `recordSubmitted` or `release`.
    case reserved(LeadReservation)
    /// Another record holds the key (another relay's): `waitUntilReleased`, then reserve again.
    case heldElsewhere(HeldClaim)
}

/// The dedupe memory: the leads the API accepted within the TTL, by dedupe key, and the keys being posted.
protocol SubmissionStore: Sendable {
    func submissions(forKeys keys: Set<String>, now: Date) async throws -> [String: SubmittedLead]
    /// The key's submission, a reservation to post it under for the record at `position`, or the reservation of
    /// another record. Passing the reservation held before renews it. `token` names the record's reservation, the
    /// same on every try, so that a reservation whose answer was lost is recognised as the record's own.
    /// Nothing is posted under a reservation that is not renewing one: when the calling task is cancelled while it
    /// is being made, it is given back (`abandon`), and `CancellationError` is thrown.
    func reserve(_ key: String, for position: RecordPosition, token: ClaimToken, renewing: LeadReservation?)
        async throws -> LeadReservationOutcome
    /// Returns once `held` may have ended (it did, it lapsed, or a poll bound passed): reserve again to learn.
    func waitUntilReleased(_ held: HeldClaim) async throws
    /// Records the lead the API accepted under `reservation`.
    func recordSubmitted(_ lead: SubmittedLead, under reservation: LeadReservation) async throws
    /// Gives `key` up after a rejection, so that a re-driven copy of the lead may post it.
    func release(_ key: String, _ reservation: LeadReservation) async throws
    /// Gives up a reservation under which this relay posted nothing (its lead was abandoned): the key is free
    /// again, unless the reservation was in doubt (an earlier attempt may have stored the lead), which the key's
    /// next reservation then inherits.
    func abandon(_ key: String, _ reservation: LeadReservation) async throws
    /// Returns how many expired submissions were removed.
    func purgeExpired(now: Date) async throws -> Int
}

extension KafkaConsumer: RelayConsumer {}
extension KafkaProducer: OutcomeProducer {}
extension SeekerLeadsClient: LeadSubmitter {}

/// One process's store: `KeyedExclusivity` keeps two records of a key apart, so a reservation is a lookup, and a
/// note that an attempt began (which a crash leaves behind, for the next run to find the lead in doubt).
extension DedupeStore: SubmissionStore {
    func reserve(_ key: String, for position: RecordPosition, token: ClaimToken, renewing: LeadReservation?) throws
        -> LeadReservationOutcome
    {
        if let earlier = try submission(forKey: key, now: Date()) { return .submitted(earlier) }
        guard renewing == nil else { return .reserved(.local) }
        return .reserved(LeadReservation(claim: nil, inDoubtSince: try noteAttemptBegun(forKey: key)))
    }

    func recordSubmitted(_ lead: SubmittedLead, under reservation: LeadReservation) throws {
        try recordSubmitted(lead)
    }

    func release(_ key: String, _ reservation: LeadReservation) throws {
        try forgetAttempt(forKey: key)
    }

    func abandon(_ key: String, _ reservation: LeadReservation) throws {
        // The note of the earlier, unfinished attempt stays for the key's next reservation.
        guard reservation.inDoubtSince == nil else { return }
        try forgetAttempt(forKey: key)
    }

    func waitUntilReleased(_ held: HeldClaim) {}
}
