import CoreMetrics
import Foundation
import Logging
import RelayPrimitives
import SeekerLeads
import SharedState
import Synchronization

// The shared state of `SharedState` (PostgreSQL) as the relay core and the API client use it, when
// `LEAD_RELAY_DATABASE_URL` is set.

/// The metrics of the shared state as this relay sees it.
/// (`lead_relay_database_round_trips_total` is counted by the SharedState module itself.)
struct SharedStateMetrics: Sendable {
    let grants: Counter
    let grantWait: CoreMetrics.Timer
    let groupInFlight: Gauge
    let startLag: CoreMetrics.Timer
    let clockUncertainty: Gauge
    let claimsWaited: Counter
    let claimsTakenOver: Counter
    let inDoubtAfterTakeOver: Counter

    init(factory: any MetricsFactory = MetricsSystem.factory) {
        grants = Counter(label: "lead_relay_shared_budget_grants_total", factory: factory)
        grantWait = CoreMetrics.Timer(label: "lead_relay_shared_budget_grant_wait_seconds", factory: factory)
        groupInFlight = Gauge(label: "lead_relay_shared_budget_group_in_flight", factory: factory)
        startLag = CoreMetrics.Timer(label: "lead_relay_shared_budget_start_lag_seconds", factory: factory)
        clockUncertainty = Gauge(label: "lead_relay_database_clock_uncertainty_seconds", factory: factory)
        claimsWaited = Counter(label: "lead_relay_claims_waited_total", factory: factory)
        claimsTakenOver = Counter(label: "lead_relay_claims_taken_over_total", factory: factory)
        inDoubtAfterTakeOver = Counter(
            label: "lead_relay_in_doubt_total", dimensions: [("cause", "claim_taken_over")], factory: factory)
    }
}

/// The dedupe memory of every relay using the database: a reservation is a claim of the key in the database.
struct SharedSubmissionStore: SubmissionStore {
    let store: SharedLeadStore
    /// This process, as claims name their owner: unique per start, so that a restarted relay does not take its
    /// predecessor's claims for its own.
    let instance: String
    /// How long a claim lasts unless renewed. A claim whose owner stopped is taken over this long after it was
    /// last renewed at the latest.
    let claimTTL: Duration
    let metrics: SharedStateMetrics
    let logger: Logger

    func submissions(forKeys keys: Set<String>, now: Date) async throws -> [String: SubmittedLead] {
        try await store.submissions(forKeys: Array(keys)).mapValues(SubmittedLead.init)
    }

    func reserve(_ key: String, for position: RecordPosition, token: ClaimToken, renewing: LeadReservation?)
        async throws -> LeadReservationOutcome
    {
        let record = InputRecord(topic: position.topic, partition: position.partition, offset: position.offset)
        let outcome =
            if renewing != nil {
                try await store.claim(key, owner: instance, inputRecord: record, claimTTL: claimTTL, token: token)
            } else {
                try await store.claimBeforeAnyPost(
                    key, owner: instance, inputRecord: record, claimTTL: claimTTL, token: token)
            }
        switch outcome {
        case .claimed(let claim):
            return .reserved(LeadReservation(claim: claim))
        case .takenOver(let claim, let previousOwner, let previousRecord):
            metrics.claimsTakenOver.increment()
            metrics.inDoubtAfterTakeOver.increment()
            logger.warning(
                "took over an expired claim: the lead is looked up in the API's listing before it is posted again",
                metadata: [
                    "previous_owner": "\(previousOwner)", "previous_partition": "\(previousRecord.partition)",
                    "previous_offset": "\(previousRecord.offset)", "topic": "\(record.topic)",
                    "partition": "\(record.partition)", "offset": "\(record.offset)", "attempt": "\(claim.attempts)",
                ])
            return .reserved(LeadReservation(claim: claim, inDoubtSince: claim.firstAttemptAt))
        case .alreadySubmitted(let submission):
            // A claim's answer does not carry a reconciled submission's lead id; the lookup does.
            guard submission.httpStatus == 0, submission.leadId == nil,
                let withLeadId = try await store.submissions(forKeys: [key])[key]
            else { return .submitted(SubmittedLead(submission)) }
            return .submitted(SubmittedLead(withLeadId))
        case .held(let held):
            return .heldElsewhere(held)
        }
    }

    func waitUntilReleased(_ held: HeldClaim) async throws {
        metrics.claimsWaited.increment()
        try await store.waitForClaimToEnd(held)
    }

    func recordSubmitted(_ lead: SubmittedLead, under reservation: LeadReservation) async throws {
        guard let claim = reservation.claim else { return }
        let recorded = try await store.recordSubmitted(
            claim, requestId: lead.requestId, title: lead.title, httpStatus: lead.httpStatus, leadId: lead.leadId)
        if recorded == nil {
            // Only a relay that posted after its claim lapsed gets here; the one that took it over records its own.
            logger.warning(
                "the claim was taken over before the submission was recorded: the lead reached the API twice",
                metadata: [
                    "topic": "\(claim.inputRecord.topic)", "partition": "\(claim.inputRecord.partition)",
                    "offset": "\(claim.inputRecord.offset)",
                ])
        }
    }

    func release(_ key: String, _ reservation: LeadReservation) async throws {
        guard let claim = reservation.claim else { return }
        try await store.release(claim)
    }

    func abandon(_ key: String, _ reservation: LeadReservation) async throws {
        guard let claim = reservation.claim else { return }
        try await store.giveBack(key, token: claim.token)
    }

    func purgeExpired(now: Date) async throws -> Int {
        try await store.purgeExpired()
    }
}

extension SubmittedLead {
    init(_ submission: SharedSubmission) {
        self.init(
            dedupeKey: submission.dedupeKey, requestId: submission.requestId, title: submission.title,
            submittedAt: submission.submittedAt, httpStatus: submission.httpStatus, attempts: submission.attempts,
            firstAttemptAt: submission.firstAttemptAt,
            inputRecord: RecordPosition(
                topic: submission.inputRecord.topic, partition: submission.inputRecord.partition,
                offset: submission.inputRecord.offset),
            leadId: submission.leadId)
    }
}

/// The API budget of every relay using the database with the same budget key, as the API client asks it.
///
/// Each start is reported to the database once the API client says when the API had the request (`markStarted`: its
/// head's write, or on a new connection its answer), so that it counts where the API counts it. While the database
/// fails, `acquire` waits (and retries) rather than throw: a lead then stays before its attempt, counted nowhere as
/// an API failure. A `Retry-After` holds this relay's starts at once, and every relay's once the database has it.
final class SharedRequestBudget: RequestBudget {
    private struct State {
        var grants: [UInt64: SharedRateBudget.Grant] = [:]
        var nextID: UInt64 = 0
        var heldUntil: ContinuousClock.Instant?
        /// When this relay's recent requests were granted, for the status page.
        var recentGrants: [ContinuousClock.Instant] = []
        var lastGroupInFlight: Int?
    }

    private let budget: SharedRateBudget
    private let metrics: SharedStateMetrics
    private let logger: Logger
    private let state = Mutex(State())
    private let retryBackoff = Backoff(base: .milliseconds(50), max: .seconds(2))

    init(budget: SharedRateBudget, metrics: SharedStateMetrics, logger: Logger) {
        self.budget = budget
        self.metrics = metrics
        self.logger = logger
    }

    func acquire() async throws -> BudgetPermit {
        let arrival = ContinuousClock.now
        while let heldUntil = state.withLock({ $0.heldUntil }), heldUntil > .now {
            try await Task.sleep(until: heldUntil, clock: .continuous)
        }
        var failures = 0
        while true {
            let grant: SharedRateBudget.Grant
            do {
                grant = try await budget.acquire(handingOverAhead: BudgetPermit.handOverAhead)
            } catch let error as SharedStateError {
                failures += 1
                if failures == 1 || failures.isMultiple(of: 20) {
                    logger.warning(
                        "the shared budget is unavailable; no request starts until it is back",
                        metadata: ["error": "\(error)", "failed_attempts": "\(failures)"])
                }
                try await Task.sleep(for: retryBackoff.delay(afterAttempt: failures))
                continue
            }
            let waited = grant.writableAt - arrival
            metrics.grants.increment()
            metrics.grantWait.recordNanoseconds(waited.nanosecondsValue)
            metrics.groupInFlight.record(grant.inFlight)
            let now = ContinuousClock.now
            let window = budget.configuration.window
            let id = state.withLock { state in
                state.nextID += 1
                state.grants[state.nextID] = grant
                state.lastGroupInFlight = grant.inFlight
                state.recentGrants.removeAll { $0.advanced(by: window) <= now }
                state.recentGrants.append(now)
                return state.nextID
            }
            return BudgetPermit(waited: waited, grantedAt: grant.writableAt, id: id)
        }
    }

    func markStarted(_ permit: BudgetPermit, at instant: ContinuousClock.Instant) {
        guard let grant = state.withLock({ $0.grants[permit.id] }) else { return }
        // Until the report lands the start counts in every window, which is only stricter.
        let metrics = metrics
        offTheRequestPath("budget write report failed") { budget in
            let report = try await budget.markWritten(grant, at: instant)
            metrics.startLag.recordNanoseconds(report.lag.nanosecondsValue)
            if let uncertainty = report.clockUncertainty { metrics.clockUncertainty.record(uncertainty.timeInterval) }
        }
    }

    func release(_ permit: BudgetPermit) {
        guard let grant = state.withLock({ $0.grants.removeValue(forKey: permit.id) }) else { return }
        offTheRequestPath("budget release failed; the lease expires on its own") { try await $0.release(grant) }
    }

    func hold(until instant: ContinuousClock.Instant) {
        let extended = state.withLock { state in
            if let heldUntil = state.heldUntil, heldUntil >= instant { return false }
            state.heldUntil = instant
            return true
        }
        guard extended else { return }
        offTheRequestPath("budget hold failed; only this relay holds its starts") {
            try await $0.hold(for: instant - .now)
        }
    }

    func snapshot() -> BudgetSnapshot {
        let now = ContinuousClock.now
        let window = budget.configuration.window
        let waiting = budget.waitingAcquirers
        return state.withLock { state in
            BudgetSnapshot(
                scope: "shared", inFlight: state.grants.count, groupInFlight: state.lastGroupInFlight,
                startsInLastWindow: state.recentGrants.count { $0.advanced(by: window) > now }, waiting: waiting,
                holdRemaining: state.heldUntil.flatMap { $0 > now ? $0 - now : nil })
        }
    }

    /// Tells the database in a task of its own, so that no request waits for it; a failure is only logged, since
    /// what it would have told is conservative left untold.
    private func offTheRequestPath(
        _ failure: String, _ operation: @escaping @Sendable (SharedRateBudget) async throws -> Void
    ) {
        let budget = budget
        let logger = logger
        Task {
            do {
                try await operation(budget)
            } catch {
                logger.debug("\(failure)", metadata: ["error": "\(error)"])
            }
        }
    }
}
