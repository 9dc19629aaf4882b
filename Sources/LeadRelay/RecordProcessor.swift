import Foundation
import Kafka
import LeadEvents
import Logging
import RelayPrimitives
import SeekerLeads

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

    /// Runs with the dedupe key held, so that no other record with this key is between lookup and record.
    private func resolve(_ event: LeadEvent, at position: RecordPosition, commitment: LeadCommitment) async
        -> RecordOutcome?
    {
        if let earlier = await retryingStoreAccess({
            try await dedupeStore.submission(forKey: event.dedupeKey, now: Date())
        }) {
            guard commitment.commit() else { return nil }
            return Self.outcome(of: event, at: position, earlier: earlier)
        }
        let body = event.request.canonicalJSON()
        let firstAttemptAt = Date()
        var attempts = 0
        let gate = gates.attemptGate()
        while true {
            let deadline = retryDeadline.map { ContinuousClock.now + $0 }
            let result: (outcome: SubmissionAttemptOutcome, attempts: Int)
            do {
                result = try await submitter.submitLeadRetrying(
                    requestBody: body, traceparent: event.traceparent, deadline: deadline,
                    beforeAttempt: {
                        try await gate.waitForPermission()
                        guard commitment.commit() else {
                            gate.withdraw()
                            throw CancellationError()
                        }
                    },
                    afterAttempt: { gate.observe($0) })
            } catch {
                return nil
            }
            attempts += result.attempts
            switch result.outcome {
            case .accepted(let requestId, let title, let httpStatus):
                let lead = SubmittedLead(
                    dedupeKey: event.dedupeKey, requestId: requestId, title: title, submittedAt: Date(),
                    httpStatus: httpStatus, attempts: attempts, firstAttemptAt: firstAttemptAt, inputRecord: position)
                _ = await retryingStoreAccess { try await dedupeStore.recordSubmitted(lead) }
                return .submitted(lead, LeadIdentity(event))
            case .rejected(let httpStatus, _, _, let detailsJSON):
                return .deadLetter(
                    DeadLetter(
                        stage: .submit, reason: .rejectedByAPI,
                        message: "the API rejected the lead with HTTP \(httpStatus)", detailsJSON: detailsJSON,
                        httpStatus: httpStatus, attempts: attempts))
            case .transient(let httpStatus, let description, _):
                // During an outage the circuit holds every lead; only a lead that keeps failing while
                // others get through has exhausted its retries.
                if gates.isHoldingSubmissions { continue }
                return .deadLetter(
                    DeadLetter(
                        stage: .submit, reason: .retriesExhausted,
                        message: "transient failures until the retry deadline: \(description)",
                        detailsJSON: "[]", httpStatus: httpStatus, attempts: attempts))
            case .authenticationFailed:
                // A configuration fault, not the lead's: the gates hold everything until credentials work.
                continue
            }
        }
    }

    /// The dedupe store is local; a failure is a disk or lock problem that passes, so wait it out
    /// rather than let the record reach an outcome that might post it twice.
    private func retryingStoreAccess<T: Sendable>(_ access: @Sendable () async throws -> T) async -> T {
        let backoff = Backoff(base: .milliseconds(50), max: .seconds(5))
        var failedAttempts = 0
        while true {
            do {
                return try await access()
            } catch {
                logger.error("dedupe store access failed; retrying", metadata: ["error": "\(error)"])
                failedAttempts += 1
                try? await Task.sleep(for: backoff.delay(afterAttempt: failedAttempts))
            }
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
