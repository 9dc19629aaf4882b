import Foundation
import Kafka
import LeadEvents
import Logging
import RelayPrimitives
import SeekerLeads
import SharedState
import Synchronization

/// Takes consumed records to their outcomes: decode, validate, dedupe, submit, publish.
///
/// A batch is first routed: records that need no API call (invalid ones, and duplicates of submissions in the
/// store) get their outcome at once, from one store read for the whole batch, and are published without a task of
/// their own. The rest go one by one through `submitAndPublish`, which looks the key up again while holding it.
struct RecordProcessor: Sendable {
    let decoder: LeadEventDecoder
    let dedupeStore: any SubmissionStore
    let exclusivity: KeyedExclusivity
    let submitter: any LeadSubmitter
    let gates: SubmissionGates
    let publisher: OutcomePublisher
    let metrics: RelayMetrics
    let tally: OutcomeTally
    /// nil retries transient failures for ever.
    let retryDeadline: Duration?
    /// The longest one API request lasts (`SEEKER_LEADS_TIMEOUT_MS`).
    let requestTimeout: Duration
    /// Looks up the leads whose attempt may have stored them before they are posted again.
    let reconciler: Reconciler
    /// How long after an ambiguous attempt its lead is looked up (`LEAD_RELAY_RECONCILE_AFTER_SECONDS`): the API
    /// lists a lead only once it has processed it.
    let reconcileAfter: Duration
    let logger: Logger

    enum Route: Sendable {
        /// The outcome is known without calling the API.
        case known(RecordOutcome)
        /// A valid lead not found in the dedupe store.
        case submission(LeadEvent)
        /// Its outcome was published here before the partition was revoked and the commit refused: it only completes.
        case finishedBeforeRevocation
    }

    /// Routes each record of `records`, in order.
    func route(_ records: [KafkaConsumerRecord]) async -> [Route] {
        metrics.recordConsumed(count: records.count)
        var routes: [Route] = []
        routes.reserveCapacity(records.count)
        var keys: Set<String> = []
        for record in records {
            switch decoder.decode(
                key: record.key, value: record.value, headers: record.headers.map { ($0.key, $0.value) })
            {
            case .failure(let rejection):
                routes.append(.known(.deadLetter(DeadLetter(rejection))))
            case .success(let event):
                keys.insert(event.dedupeKey)
                routes.append(.submission(event))
            }
        }
        guard !keys.isEmpty else { return routes }
        let known: [String: SubmittedLead]
        do {
            known = try await dedupeStore.submissions(forKeys: keys, now: Date())
        } catch {
            // Every valid record takes the per-record path, which waits for the store.
            logger.warning("dedupe store batch lookup failed", metadata: ["error": "\(error)"])
            return routes
        }
        for (index, record) in records.enumerated() {
            guard case .submission(let event) = routes[index], let earlier = known[event.dedupeKey] else { continue }
            routes[index] = .known(Self.outcome(of: event, at: record.position, earlier: earlier))
        }
        return routes
    }

    /// Publishes a known outcome without waiting; `acknowledged` runs once the broker has it, after the
    /// outcome's metrics.
    func publish(_ outcome: RecordOutcome, of record: KafkaConsumerRecord, acknowledged: @escaping @Sendable () -> Void)
    {
        publisher.publish(outcome, of: record, completedAt: Date()) {
            finished(outcome, of: record)
            acknowledged()
        }
    }

    /// Takes a valid lead to its outcome with its dedupe key held, then publishes it. Returns false when the lead
    /// was abandoned (through `commitment`, with its task cancelled) before the record had an outcome, or its
    /// outcome could not be published before the task was cancelled: the record then stays uncommitted and is
    /// delivered again.
    func submitAndPublish(_ event: LeadEvent, of record: KafkaConsumerRecord, commitment: LeadCommitment) async -> Bool
    {
        let position = record.position
        let resolved = await exclusivity.withExclusiveAccess(to: event.dedupeKey) {
            await resolve(event, at: position, commitment: commitment)
        }
        guard let outcome = resolved, await publisher.publish(outcome, of: record, completedAt: Date()) else {
            return false
        }
        finished(outcome, of: record)
        return true
    }

    /// Counts the outcome once the broker acknowledged it: the end-to-end time runs to that moment.
    private func finished(_ outcome: RecordOutcome, of record: KafkaConsumerRecord) {
        let counted = outcome.metricsOutcome
        metrics.recordOutcome(
            counted, deadLetterReason: outcome.deadLetterReason, recordTimestamp: record.timestamp)
        tally.add(counted)
        if case .deadLetter(let deadLetter) = outcome {
            logger.info(
                "record dead-lettered",
                metadata: [
                    "reason": "\(deadLetter.reason.rawValue)", "stage": "\(deadLetter.stage.rawValue)",
                    "topic": "\(record.topic)", "partition": "\(record.partition)", "offset": "\(record.offset)",
                ])
        }
    }

    /// What an earlier submission of the event's key makes of it.
    private static func outcome(of event: LeadEvent, at position: RecordPosition, earlier: SubmittedLead)
        -> RecordOutcome
    {
        let identity = LeadIdentity(event)
        // This very record, submitted before a crash that came ahead of its result: that submission is its
        // outcome, not a duplicate of it.
        if earlier.inputRecord == position { return .submitted(earlier, identity) }
        return .duplicate(earlier, identity)
    }

    /// Runs with the dedupe key held, so that no other record of this process with this key is between lookup and
    /// record. Each attempt reserves the key in the store first (a claim, with a shared store), once it has its
    /// place among the attempts: so a relay claims only the leads it is about to post, and another relay's record
    /// of the key waits for that post's outcome instead of posting it too.
    private func resolve(_ event: LeadEvent, at position: RecordPosition, commitment: LeadCommitment) async
        -> RecordOutcome?
    {
        let body = event.request.canonicalJSON()
        let firstAttemptAt = Date()
        let reservation = ReservationSlot()
        let attempts = AttemptHistory()
        let gate = gates.attemptGate()
        var deadline = retryDeadline.map { ContinuousClock.now + $0 }
        let liveness = reservationLiveness
        let fingerprint = LeadFingerprint(event.request)
        /// The submission of a lead found in the API's listing: its post's answer was lost.
        @Sendable func reconciled(_ leadId: String) -> SubmittedLead {
            SubmittedLead(
                dedupeKey: event.dedupeKey, requestId: "", title: "", submittedAt: Date(), httpStatus: 0,
                attempts: attempts.count, firstAttemptAt: firstAttemptAt, inputRecord: position, leadId: leadId)
        }
        while true {
            let result: (outcome: SubmissionAttemptOutcome, attempts: Int)
            do {
                result = try await submitter.submitLeadRetrying(
                    requestBody: body, traceparent: event.traceparent, deadline: deadline,
                    beforeAttempt: {
                        // Before the attempt's permission: a lead waiting for its lookup holds no slot.
                        if let pending = attempts.takeDoubt(),
                            let leadId = try await reconcile(
                                pending, fingerprint, key: event.dedupeKey, at: position, in: reservation)
                        {
                            throw FoundReconciled(lead: reconciled(leadId))
                        }
                        try await gate.waitForPermission()
                        try await reserve(event.dedupeKey, at: position, in: reservation, gate: gate)
                        guard commitment.commit() else {
                            gate.withdraw()
                            throw CancellationError()
                        }
                        attempts.attemptStarting()
                    },
                    mayWrite: { reservation.current?.isLive(for: liveness.atWrite) ?? false },
                    afterAttempt: { outcome in
                        gate.observe(outcome)
                        if attempts.attemptEnded(inDoubt: outcome.isInDoubt, lookAfter: reconcileAfter) {
                            reconciler.countInDoubt(.ambiguousAnswer)
                        }
                    })
            } catch let found as FoundSubmitted {
                guard commitment.commit() else { return nil }
                return Self.outcome(of: event, at: position, earlier: found.lead)
            } catch let found as FoundReconciled {
                guard let held = reservation.current, commitment.commit() else { return nil }
                return await record(found.lead, of: event, under: held)
            } catch let lookUp as LookUpFirst {
                attempts.inheritDoubt(since: lookUp.since, lookAfter: reconcileAfter)
                continue
            } catch is SubmissionWithdrawn {
                // Asked after the attempt's permission: it is given back, and the next attempt renews the
                // reservation, or learns that another relay took the key over meanwhile.
                gate.withdraw()
                continue
            } catch {
                // An abandoned lead was never sent by this relay: its key is free for the record's next owner at
                // once. Its own task is cancelled, so another one tells the store.
                if commitment.isAbandoned, let held = reservation.current {
                    let store = dedupeStore
                    Task { try? await store.abandon(event.dedupeKey, held) }
                }
                return nil
            }
            guard let held = reservation.current else { return nil }
            switch result.outcome {
            case .accepted(let requestId, let title, let httpStatus):
                let lead = SubmittedLead(
                    dedupeKey: event.dedupeKey, requestId: requestId, title: title, submittedAt: Date(),
                    httpStatus: httpStatus, attempts: attempts.count, firstAttemptAt: firstAttemptAt,
                    inputRecord: position)
                return await record(lead, of: event, under: held)
            case .rejected(let httpStatus, _, _, let detailsJSON):
                guard await retryingStoreAccess({ try await dedupeStore.release(event.dedupeKey, held) }) != nil else {
                    return nil
                }
                return .deadLetter(
                    DeadLetter(
                        stage: .submit, reason: .rejectedByAPI,
                        message: "the API rejected the lead with HTTP \(httpStatus)", detailsJSON: detailsJSON,
                        httpStatus: httpStatus, attempts: attempts.count, dedupeKey: event.dedupeKey))
            case .transient(let httpStatus, let description, _, _):
                // During an outage the circuit holds every lead; only a lead that keeps failing while
                // others get through has exhausted its retries.
                if gates.isHoldingSubmissions {
                    deadline = retryDeadline.map { ContinuousClock.now + $0 }
                    continue
                }
                // A lead given up on may still have been stored: it is looked up first, so that a re-drive of its
                // dead letter cannot post it twice.
                if let pending = attempts.takeDoubt() {
                    do {
                        if let leadId = try await reconcile(
                            pending, fingerprint, key: event.dedupeKey, at: position, in: reservation)
                        {
                            return await record(reconciled(leadId), of: event, under: held)
                        }
                    } catch let submitted as FoundSubmitted {
                        return Self.outcome(of: event, at: position, earlier: submitted.lead)
                    } catch {
                        return nil
                    }
                }
                // Not released: the lead may have reached the API, so its key stays reserved until the reservation
                // lapses, and a re-driven copy posted after that counts as in doubt.
                return .deadLetter(
                    DeadLetter(
                        stage: .submit, reason: .retriesExhausted,
                        message: "transient failures until the retry deadline: \(description)",
                        detailsJSON: "[]", httpStatus: httpStatus, attempts: attempts.count,
                        dedupeKey: event.dedupeKey))
            case .authenticationFailed:
                // A configuration fault, not the lead's: the gates hold everything until credentials work.
                deadline = retryDeadline.map { ContinuousClock.now + $0 }
                continue
            }
        }
    }

    /// Makes `slot` hold a reservation live for an attempt, with the attempt's permission held: renews the one it
    /// holds when it would lapse too soon. Gives the permission back while another relay's record holds the key,
    /// and when it throws: `FoundSubmitted` when the key turns out submitted.
    private func reserve(
        _ key: String, at position: RecordPosition, in slot: ReservationSlot, gate: SubmissionGates.AttemptGate
    ) async throws {
        while true {
            let held = slot.current
            if let held, held.isLive(for: reservationLiveness.atAttempt) { return }
            let outcome = await retryingStoreAccess {
                try await dedupeStore.reserve(key, for: position, token: slot.token, renewing: held)
            }
            switch outcome {
            case nil:
                gate.withdraw()
                throw CancellationError()
            case .reserved(let reserved)?:
                slot.current = reserved
                guard let since = reserved.inDoubtSince else { return }
                // An attempt before this reservation may have stored the lead: look it up first, without the slot.
                gate.withdraw()
                if reserved.claim == nil { reconciler.countInDoubt(.unfinishedAttempt) }
                throw LookUpFirst(since: since)
            case .submitted(let lead)?:
                gate.withdraw()
                throw FoundSubmitted(lead: lead)
            case .heldElsewhere(let other)?:
                gate.withdraw()
                _ = await retryingStoreAccess { try await dedupeStore.waitUntilReleased(other) }
                try await gate.waitForPermission()
            }
        }
    }

    /// Records the lead as submitted under `held`: its outcome, or nil when the task was cancelled first.
    private func record(_ lead: SubmittedLead, of event: LeadEvent, under held: LeadReservation) async
        -> RecordOutcome?
    {
        guard await retryingStoreAccess({ try await dedupeStore.recordSubmitted(lead, under: held) }) != nil else {
            return nil
        }
        return .submitted(lead, LeadIdentity(event))
    }

    /// Looks the lead of an ambiguous attempt up in the API's listing, once `reconcileAfter` has passed since the
    /// attempt, keeping its reservation live meanwhile: the API's id of the lead when it has it, nil when not.
    /// Throws `FoundSubmitted` when the key turns out submitted meanwhile (by another relay, which took it over),
    /// and `CancellationError` when the task is cancelled.
    private func reconcile(
        _ pending: AttemptHistory.Doubt, _ fingerprint: LeadFingerprint, key: String, at position: RecordPosition,
        in slot: ReservationSlot
    ) async throws -> String? {
        while ContinuousClock.now < pending.lookAt {
            try await Task.sleep(until: min(pending.lookAt, .now + .seconds(1)), clock: .continuous)
            try await keepLive(key, at: position, in: slot)
        }
        return try await reconciler.lookUp(fingerprint, firstWrittenAt: pending.since)
    }

    /// Renews the slot's reservation when it would lapse before an attempt could end.
    private func keepLive(_ key: String, at position: RecordPosition, in slot: ReservationSlot) async throws {
        guard let held = slot.current, !held.isLive(for: reservationLiveness.atAttempt) else { return }
        switch await retryingStoreAccess({
            try await dedupeStore.reserve(key, for: position, token: slot.token, renewing: held)
        }) {
        case nil:
            throw CancellationError()
        case .reserved(let renewed)?:
            slot.current = renewed
        case .submitted(let lead)?:
            throw FoundSubmitted(lead: lead)
        case .heldElsewhere(let other)?:
            // The reservation lapsed (the store was out of reach): whoever holds the key now posts or finds it.
            _ = await retryingStoreAccess { try await dedupeStore.waitUntilReleased(other) }
            try await keepLive(key, at: position, in: slot)
        }
    }

    /// How long a reservation must still be live when an attempt begins (its wait for the budget, then the request)
    /// and when its request goes out (the request): past that, another relay may take the key over.
    private var reservationLiveness: (atAttempt: Duration, atWrite: Duration) {
        (requestTimeout + .seconds(2), requestTimeout + .milliseconds(500))
    }

    /// The store may be a database across the network: a failure passes (a lock, a restart, an outage), so wait
    /// it out rather than let the record reach an outcome that might post it twice. Nil once the task is cancelled:
    /// the record then stays uncommitted.
    private func retryingStoreAccess<T: Sendable>(_ access: @Sendable () async throws -> T) async -> T? {
        let backoff = Backoff(base: .milliseconds(50), max: .seconds(5))
        var failedAttempts = 0
        while !Task.isCancelled {
            do {
                return try await access()
            } catch {
                if Task.isCancelled { return nil }
                failedAttempts += 1
                if failedAttempts == 1 || failedAttempts.isMultiple(of: 20) {
                    logger.error(
                        "dedupe store access failed; retrying",
                        metadata: ["error": "\(error)", "failed_attempts": "\(failedAttempts)"])
                }
                try? await Task.sleep(for: backoff.delay(afterAttempt: failedAttempts))
            }
        }
        return nil
    }
}

/// The key's reservation for one record's attempts; written by an attempt's preparation, read at its write.
private final class ReservationSlot: Sendable {
    /// Names the record's reservation in the store, the same on every try, so that one whose answer was lost is
    /// recognised as the record's own.
    let token = ClaimToken()
    private let reservation = Mutex<LeadReservation?>(nil)

    var current: LeadReservation? {
        get { reservation.withLock { $0 } }
        set { reservation.withLock { $0 = newValue } }
    }
}

/// The key was found submitted when an attempt was about to reserve it: the record's outcome, with no post.
private struct FoundSubmitted: Error {
    var lead: SubmittedLead
}

/// The reservation says an earlier attempt, begun by `since`, may have stored the lead: it is looked up before an
/// attempt of this record.
private struct LookUpFirst: Error {
    var since: Date
}

/// The lead of an ambiguous attempt was found in the API's listing: the record's outcome, with no further post.
private struct FoundReconciled: Error {
    var lead: SubmittedLead
}

/// The attempts of one record: how many were made, and the ambiguous one whose lead is still to be looked up.
private final class AttemptHistory: Sendable {
    struct Doubt: Sendable {
        /// When the first ambiguous attempt not looked up yet started (at or before its write).
        var since: Date
        /// When its lead may be looked up: the API lists a lead only once it has processed it.
        var lookAt: ContinuousClock.Instant
    }

    private struct State {
        var attemptStartedAt = Date()
        var pending: Doubt?
        var count = 0
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.count } }

    func attemptStarting() {
        state.withLock { $0.attemptStartedAt = Date() }
    }

    /// Returns whether the attempt put the lead in doubt (when it was not already).
    func attemptEnded(inDoubt: Bool, lookAfter delay: Duration) -> Bool {
        state.withLock { state in
            state.count += 1
            guard inDoubt else { return false }
            let since = state.pending?.since ?? state.attemptStartedAt
            let isNew = state.pending == nil
            state.pending = Doubt(since: since, lookAt: .now + delay)
            return isNew
        }
    }

    /// An attempt that began by `since`, before this record's, left the lead in doubt.
    func inheritDoubt(since: Date, lookAfter delay: Duration) {
        let elapsed = Duration(timeInterval: max(0, Date().timeIntervalSince(since)))
        let lookAt = ContinuousClock.now + max(.zero, delay - elapsed)
        state.withLock { state in
            state.pending = Doubt(since: min(since, state.pending?.since ?? since), lookAt: lookAt)
        }
    }

    func takeDoubt() -> Doubt? {
        state.withLock { state in
            defer { state.pending = nil }
            return state.pending
        }
    }
}

extension KafkaConsumerRecord {
    var position: RecordPosition { RecordPosition(topic: topic, partition: partition, offset: offset) }
}

extension LeadIdentity {
    init(_ event: LeadEvent) {
        self.init(eventID: event.id, eventSource: event.source, classifiedID: event.request.classifiedId)
    }
}
