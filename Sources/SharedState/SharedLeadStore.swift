import Foundation
import Logging
import PostgresNIO

/// Where an input record sits in Kafka.
public struct InputRecord: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    public var description: String { "\(topic)/\(partition)@\(offset)" }
}

/// Identifies one claim of a key. The claimer chooses it, so that a claim retried after its answer was lost (a
/// timeout) with the same token is recognised as the same claim rather than seen as held by someone else.
public struct ClaimToken: Sendable, Hashable, CustomStringConvertible {
    public let uuid: UUID

    public init() { uuid = UUID() }

    public var description: String { uuid.uuidString }
}

/// A lead the API accepted, as every relay sees it.
public struct SharedSubmission: Sendable, Equatable {
    public var dedupeKey: String
    public var requestId: String
    public var title: String
    /// By the database's clock.
    public var submittedAt: Date
    public var httpStatus: Int
    /// How many times the lead was posted: more than one when a claim was taken over (in doubt).
    public var attempts: Int
    public var firstAttemptAt: Date
    /// The input record whose claim became the submission.
    public var inputRecord: InputRecord
    /// The API's id of the lead, for a submission found in its listing (reconciled); nil otherwise, and for one
    /// known only from a claim's answer.
    public var leadId: String? = nil
}

/// A key this relay holds: post the lead while `isLive`, then `recordSubmitted` or `release`; `renew` it while
/// the request lasts longer than the claim's TTL.
public struct Claim: Sendable, Equatable {
    public var dedupeKey: String
    public var token: ClaimToken
    public var owner: String
    public var inputRecord: InputRecord
    /// This claim's post is attempt number `attempts` of the lead (1 unless taken over).
    public var attempts: Int
    public var firstAttemptAt: Date
    /// When the claim may expire in the database at the earliest, on this process's monotonic clock: its TTL
    /// counted from before the claim (or its last renewal) was sent.
    public var expiresBy: ContinuousClock.Instant

    /// Whether no other relay can have taken the claim over yet; check it just before posting.
    public var isLive: Bool { ContinuousClock.now < expiresBy }
}

/// Another claim of the key, live when the database answered.
public struct HeldClaim: Sendable, Equatable {
    public var dedupeKey: String
    public var owner: String
    public var inputRecord: InputRecord
    /// How long the claim had left when the database answered; it may be renewed.
    public var remaining: Duration

    public init(dedupeKey: String, owner: String, inputRecord: InputRecord, remaining: Duration) {
        self.dedupeKey = dedupeKey
        self.owner = owner
        self.inputRecord = inputRecord
        self.remaining = remaining
    }
}

/// The answer to `SharedLeadStore.claim`.
public enum ClaimOutcome: Sendable, Equatable {
    /// The key is ours: post the lead.
    case claimed(Claim)
    /// Submitted within the TTL: a DUPLICATE.
    case alreadySubmitted(SharedSubmission)
    /// Another live claim: wait for it (`waitForClaimToEnd`), then claim again.
    case held(HeldClaim)
    /// Another claim expired without an outcome (its owner stopped or lost the database): the key is ours, the
    /// lead is posted again and counted as in doubt, since the previous owner may have posted it.
    case takenOver(Claim, previousOwner: String, previousInputRecord: InputRecord)
}

/// The dedupe memory shared by every relay using the database: submitted keys within the TTL, and claims of the
/// keys being worked on, so that no two relays post the same lead at once.
///
/// ## Claims
/// A key has at most one row (its primary key): claimed, with an owner, a token and an expiry, or submitted. The
/// claim function decides under the row's lock (`INSERT ... ON CONFLICT DO NOTHING`, then `SELECT ... FOR UPDATE`),
/// so of relays claiming a key at once one inserts the claim and the others see it held. A held claim ends in one
/// of three ways: `recordSubmitted` (the claim becomes the submission, only while the token is still the
/// claim's), `release` (the row is deleted, the key is free), or expiry without either (its owner was killed or
/// lost the database): the next claim then takes it over, one more attempt, and its relay posts again, *in doubt*.
///
/// Two relays post the same key at once only if an owner posts after its claim expired. `Claim.expiresBy` is the
/// claim's TTL counted on the owner's monotonic clock from before the claim was sent, so never later than the
/// expiry in the database: an owner that posts only while `isLive`, and renews a claim before `expiresBy` for as
/// long as the request may last (or claims with a TTL above the request timeout), never overlaps a take-over.
/// A SIGSTOPped owner that continues finds its claim no longer live, and `renew`, `recordSubmitted` and `release`
/// tell it when the claim was taken over meanwhile.
///
/// A lead costs these round trips to the database (each operation is one statement):
/// - 1 `claim`, or its share of one `submissions(forKeys:)` for a batch when the caller looks keys up first;
/// - 1 `recordSubmitted` after a 2xx, or 1 `release` after a rejection;
/// - 1 `renew` per claim TTL the request outlasts (none with a claim TTL above the API request timeout);
/// - when held by another relay: 1 `waitForClaimToEnd` check, then 1 `claim` again, per wait.
///
/// Waiting for another relay's claim uses LISTEN/NOTIFY: `recordSubmitted` and `release` notify
/// `lead_relay_claims` in their transaction, and `run()` listens on one connection of the client. Notifications
/// are only a shortcut: one sent while this process was not listening is lost, so every wait is also bounded by
/// the claim's remaining time and `claimPollInterval`, and a relay that never calls `run()` still works, only
/// waits longer.
public final class SharedLeadStore: Sendable {
    public struct Configuration: Sendable {
        /// How long a submitted key is remembered.
        public var submissionTTL: Duration
        /// The longest a waiter goes without looking at a held claim again.
        public var claimPollInterval: Duration
        /// The bound of every operation (see `SharedStateError.Kind.timedOut`).
        public var operationTimeout: Duration
        /// The pause before listening again after the listening connection was lost.
        public var listenRetryDelay: Duration

        public init(
            submissionTTL: Duration = .seconds(168 * 3600), claimPollInterval: Duration = .seconds(1),
            operationTimeout: Duration = .seconds(5), listenRetryDelay: Duration = .seconds(1)
        ) {
            self.submissionTTL = submissionTTL
            self.claimPollInterval = claimPollInterval
            self.operationTimeout = operationTimeout
            self.listenRetryDelay = listenRetryDelay
        }
    }

    public let configuration: Configuration
    private let database: SharedDatabase
    private let claimEnded = NotificationHub(channel: "lead_relay_claims")

    /// `client` must be run by the caller (`PostgresClient.run()`), as long as the store is used.
    public init(client: PostgresClient, configuration: Configuration = .init(), logger: Logger) {
        self.configuration = configuration
        database = SharedDatabase(client: client, logger: logger, operationTimeout: configuration.operationTimeout)
    }

    /// Listens for ended claims until cancelled; run it beside the store for waits shorter than the poll bound.
    public func run() async {
        await claimEnded.listen(through: database, reconnectDelay: configuration.listenRetryDelay)
    }

    /// The submissions within the TTL among `keys`, by key.
    public func submissions(forKeys keys: [String]) async throws -> [String: SharedSubmission] {
        let ttl = configuration.submissionTTL.seconds
        return try await database.perform("submission lookup") { client, logger in
            let rows = try await client.query(
                """
                SELECT dedupe_key, request_id, title, submitted_at, http_status, attempts, first_attempt_at,
                    input_topic, input_partition, input_offset, lead_id
                FROM lead_relay_dedupe
                WHERE dedupe_key = ANY(\(keys)) AND state = 'submitted'
                    AND submitted_at > clock_timestamp() - \(ttl) * interval '1 second'
                """, logger: logger)
            var found: [String: SharedSubmission] = [:]
            for try await row in rows.decode(
                (String, String, String, Date, Int32, Int32, Date, String, Int32, Int64, String?).self)
            {
                let (key, requestId, title, submittedAt, status, attempts, firstAttemptAt, topic, partition, offset) =
                    (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9)
                found[key] = SharedSubmission(
                    dedupeKey: key, requestId: requestId, title: title, submittedAt: submittedAt,
                    httpStatus: Int(status), attempts: Int(attempts), firstAttemptAt: firstAttemptAt,
                    inputRecord: InputRecord(topic: topic, partition: partition, offset: offset), leadId: row.10)
            }
            return found
        }
    }

    /// Claims `key` for `owner` (this relay instance: unique per process, so that a restarted relay does not take
    /// its predecessor's claims for its own) working on `inputRecord`, for `claimTTL`. To retry a claim whose
    /// answer was lost, pass the same `token`.
    public func claim(
        _ key: String, owner: String, inputRecord: InputRecord, claimTTL: Duration, token: ClaimToken = ClaimToken()
    ) async throws -> ClaimOutcome {
        let query: PostgresQuery = """
            SELECT * FROM lead_relay_claim(\(key), \(owner), \(token.uuid), \(inputRecord.topic),
                \(inputRecord.partition), \(inputRecord.offset), \(claimTTL.seconds),
                \(configuration.submissionTTL.seconds))
            """
        let sentAt = ContinuousClock.now
        let row = try await database.perform("claim") { client, logger in
            try await ClaimRow.single(from: client.query(query, logger: logger), operation: "claim")
        }
        let recordOfRow = InputRecord(topic: row.inputTopic, partition: row.inputPartition, offset: row.inputOffset)
        let claim = Claim(
            dedupeKey: key, token: token, owner: owner, inputRecord: inputRecord, attempts: Int(row.attempts),
            firstAttemptAt: row.firstAttemptAt, expiresBy: sentAt + claimTTL)
        switch row.outcome {
        case "claimed":
            return .claimed(claim)
        case "taken_over":
            return .takenOver(claim, previousOwner: row.owner, previousInputRecord: recordOfRow)
        case "held":
            return .held(
                HeldClaim(
                    dedupeKey: key, owner: row.owner, inputRecord: recordOfRow,
                    remaining: .seconds(row.remainingSeconds ?? 0)))
        default:
            return .alreadySubmitted(try row.submission(key: key, operation: "claim"))
        }
    }

    /// `claim`, for a caller that has posted nothing under `token`: when the calling task is cancelled while the
    /// claim is out, the claim is given back (`giveBack`) once the database has answered, or failed to, rather
    /// than left to hold the key until it expires (a lead abandoned in a rebalance would otherwise wait out the
    /// TTL on whichever relay gets it next, and be counted in doubt). Then throws `CancellationError`; a
    /// cancelled caller thus waits for the claim's answer, `operationTimeout` at most.
    public func claimBeforeAnyPost(
        _ key: String, owner: String, inputRecord: InputRecord, claimTTL: Duration, token: ClaimToken
    ) async throws -> ClaimOutcome {
        // Not a child task: the claim runs to its answer whatever happens to the caller.
        let claiming = Task {
            try await claim(key, owner: owner, inputRecord: inputRecord, claimTTL: claimTTL, token: token)
        }
        let outcome = await claiming.result
        guard Task.isCancelled else { return try outcome.get() }
        // Also after an error: a claim whose answer was lost may have landed.
        _ = await Task { try? await giveBack(key, token: token) }.value
        throw CancellationError()
    }

    /// Gives back the claim of `key` held with `token` by a caller that posted nothing under it: the key is free
    /// again at once, or, when the claim was taken over (an earlier owner may have posted the lead), it expires
    /// at once, so that the next claim takes it over and the lead stays in doubt. False when the claim was no
    /// longer held with `token`.
    @discardableResult
    public func giveBack(_ key: String, token: ClaimToken) async throws -> Bool {
        try await database.value(
            "claim give-back", "SELECT lead_relay_give_back_claim(\(key), \(token.uuid))", as: Bool.self) ?? false
    }

    /// Extends `claim` by `claimTTL` from now: the renewed claim, or nil when it is no longer ours (taken over
    /// after it expired).
    public func renew(_ claim: Claim, claimTTL: Duration) async throws -> Claim? {
        let sentAt = ContinuousClock.now
        let renewed = try await database.value(
            "claim renewal",
            "SELECT lead_relay_renew_claim(\(claim.dedupeKey), \(claim.token.uuid), \(claimTTL.seconds))",
            as: Bool.self)
        guard renewed == true else { return nil }
        var claim = claim
        claim.expiresBy = sentAt + claimTTL
        return claim
    }

    /// Makes `claim` the key's submission, atomically and only if the claim is still ours; also when the same
    /// claim was recorded before (a retry). Nil when the claim was taken over meanwhile: the lead was then posted
    /// by the relay that took it over as well, and that relay records its own submission.
    /// `leadId`: the API's id of a lead found in its listing.
    public func recordSubmitted(
        _ claim: Claim, requestId: String, title: String, httpStatus: Int, leadId: String? = nil
    ) async throws -> SharedSubmission? {
        let query: PostgresQuery = """
            SELECT * FROM lead_relay_record_submitted(\(claim.dedupeKey), \(claim.token.uuid), \(requestId),
                \(title), \(Int32(clamping: httpStatus)), \(leadId))
            """
        let row = try await database.perform("record submitted") { client, logger in
            try await ClaimRow.optional(from: client.query(query, logger: logger))
        }
        var submission = try row?.submission(key: claim.dedupeKey, operation: "record submitted")
        submission?.leadId = leadId
        return submission
    }

    /// Frees the key of `claim` (the lead was rejected), so that the next claim, a re-driven dead letter's among
    /// them, goes through. False when the claim was no longer ours.
    @discardableResult
    public func release(_ claim: Claim) async throws -> Bool {
        try await database.value(
            "claim release", "SELECT lead_relay_release_claim(\(claim.dedupeKey), \(claim.token.uuid))",
            as: Bool.self) ?? false
    }

    /// Returns once `held` may have ended: its owner recorded or released it (notified), it expired, or
    /// `claimPollInterval` passed; claim again to learn the outcome. Returns at once when it is already over.
    public func waitForClaimToEnd(_ held: HeldClaim) async throws {
        let pollInterval = configuration.claimPollInterval
        try await claimEnded.wait(for: held.dedupeKey) {
            let remaining = try await database.value(
                "claim wait",
                """
                SELECT extract(epoch FROM claim_expires_at - clock_timestamp())::double precision
                FROM lead_relay_dedupe
                WHERE dedupe_key = \(held.dedupeKey) AND state = 'claimed' AND claim_owner = \(held.owner)
                    AND claim_expires_at > clock_timestamp()
                """, as: Double.self)
            return remaining.map { min(.seconds($0), pollInterval) }
        }
    }

    /// The tasks of this process waiting for another relay's claim to end now.
    public var claimWaiters: Int { claimEnded.parked }

    /// Forgets submissions older than the TTL, and claims that expired longer than the TTL ago (leads never
    /// re-delivered after their relay stopped); returns how many keys were removed.
    @discardableResult
    public func purgeExpired() async throws -> Int {
        let ttl = configuration.submissionTTL.seconds
        return try await database.value(
            "purge",
            """
            WITH purged AS (
                DELETE FROM lead_relay_dedupe
                WHERE (state = 'submitted' AND submitted_at <= clock_timestamp() - \(ttl) * interval '1 second')
                    OR (state = 'claimed' AND claim_expires_at <= clock_timestamp() - \(ttl) * interval '1 second')
                RETURNING 1)
            SELECT count(*) FROM purged
            """, as: Int.self) ?? 0
    }

    /// Whether the database answers and the store's table is there (for a readiness check); the error says why not.
    public func checkHealth() async throws {
        _ = try await database.value("health check", "SELECT 1 FROM lead_relay_dedupe LIMIT 1", as: Int32.self)
    }
}

/// One row of `SharedStateSchema.claimColumns`.
private struct ClaimRow: Sendable {
    var outcome: String
    var owner: String
    var remainingSeconds: Double?
    var inputTopic: String
    var inputPartition: Int32
    var inputOffset: Int64
    var attempts: Int32
    var firstAttemptAt: Date
    var requestId: String?
    var title: String?
    var httpStatus: Int32?
    var submittedAt: Date?

    static func optional(from rows: PostgresRowSequence) async throws -> ClaimRow? {
        let columns = try await rows.decode(
            (
                String, String, UUID?, Double?, String, Int32, Int64, Int32, Date, String?, String?, Int32?,
                Date?
            ).self
        ).firstOfAll()
        return columns.map { columns in
            ClaimRow(
                outcome: columns.0, owner: columns.1, remainingSeconds: columns.3, inputTopic: columns.4,
                inputPartition: columns.5, inputOffset: columns.6, attempts: columns.7, firstAttemptAt: columns.8,
                requestId: columns.9, title: columns.10, httpStatus: columns.11, submittedAt: columns.12)
        }
    }

    static func single(from rows: PostgresRowSequence, operation: String) async throws -> ClaimRow {
        guard let row = try await optional(from: rows) else {
            throw SharedStateError(kind: .rejected, operation: operation, reason: "the database returned no row")
        }
        return row
    }

    func submission(key: String, operation: String) throws -> SharedSubmission {
        guard let requestId, let title, let httpStatus, let submittedAt else {
            throw SharedStateError(
                kind: .rejected, operation: operation, reason: "a submission without its request id or status")
        }
        return SharedSubmission(
            dedupeKey: key, requestId: requestId, title: title, submittedAt: submittedAt,
            httpStatus: Int(httpStatus), attempts: Int(attempts), firstAttemptAt: firstAttemptAt,
            inputRecord: InputRecord(topic: inputTopic, partition: inputPartition, offset: inputOffset))
    }
}
