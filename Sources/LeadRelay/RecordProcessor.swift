import Foundation
import Kafka
import LeadEvents
import Logging
import SeekerLeads

/// Takes one consumed record to its outcome: decode, validate, dedupe, submit, publish.
struct RecordProcessor: Sendable {
    let decoder: LeadEventDecoder
    let dedupeStore: DedupeStore
    let exclusivity: KeyedExclusivity
    let client: SeekerLeadsClient
    let gates: SubmissionGates
    let publisher: OutcomePublisher
    let metrics: RelayMetrics
    let tally: OutcomeTally
    /// nil retries transient failures for ever.
    let retryDeadline: Duration?
    let logger: Logger

    /// Returns false only when the task was cancelled before the record had an outcome: the record
    /// then stays uncommitted and is delivered again.
    func process(_ record: KafkaConsumerRecord) async -> Bool {
        metrics.recordConsumed()
        let outcome: RecordOutcome
        switch decoder.decode(key: record.key, value: record.value, headers: record.headers.map { ($0.key, $0.value) })
        {
        case .failure(let rejection):
            outcome = .deadLetter(
                DeadLetter(
                    stage: rejection.stage == "validate" ? .validate : .decode,
                    reason: DeadLetter.Reason(rawValue: rejection.reason.rawValue) ?? .malformed,
                    message: rejection.message, detailsJSON: rejection.detailsJSON, httpStatus: nil, attempts: 0))
        case .success(let event):
            let position = RecordPosition(topic: record.topic, partition: record.partition, offset: record.offset)
            let resolved = await exclusivity.withExclusiveAccess(to: event.dedupeKey) {
                await resolve(event, at: position)
            }
            guard let resolved else { return false }
            outcome = resolved
        }
        let completedAt = Date()
        await publisher.publish(outcome, of: record, completedAt: completedAt)
        let counted = outcome.metricsOutcome
        metrics.recordOutcome(
            counted, deadLetterReason: outcome.deadLetterReason, recordTimestamp: record.timestamp,
            completedAt: completedAt)
        tally.add(counted)
        if case .deadLetter(let deadLetter) = outcome {
            logger.info(
                "record dead-lettered",
                metadata: [
                    "reason": "\(deadLetter.reason.rawValue)", "stage": "\(deadLetter.stage.rawValue)",
                    "topic": "\(record.topic)", "partition": "\(record.partition)", "offset": "\(record.offset)",
                ])
        }
        return true
    }

    /// Runs with the dedupe key held, so that no other record with this key is between lookup and record.
    private func resolve(_ event: LeadEvent, at position: RecordPosition) async -> RecordOutcome? {
        let identity = LeadIdentity(
            eventID: event.id, eventSource: event.source, classifiedID: event.request.classifiedId)
        if let earlier = await retryingStoreAccess({ try dedupeStore.submission(forKey: event.dedupeKey) }) {
            // This very record, submitted before a crash that came ahead of its result: that submission
            // is its outcome, not a duplicate of it.
            if earlier.inputRecord == position { return .submitted(earlier, identity) }
            return .duplicate(earlier, identity)
        }
        let body = event.request.canonicalJSON()
        let firstAttemptAt = Date()
        var attempts = 0
        let gate = gates.attemptGate()
        while true {
            let deadline = retryDeadline.map { ContinuousClock.now + $0 }
            let result: (outcome: SubmissionAttemptOutcome, attempts: Int)
            do {
                result = try await client.submitLeadRetrying(
                    requestBody: body, traceparent: event.traceparent, deadline: deadline,
                    beforeAttempt: { try await gate.waitForPermission() },
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
                _ = await retryingStoreAccess { try dedupeStore.recordSubmitted(lead) }
                return .submitted(lead, identity)
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
    private func retryingStoreAccess<T: Sendable>(_ access: @Sendable () throws -> T) async -> T {
        var delay: Duration = .milliseconds(50)
        while true {
            do {
                return try access()
            } catch {
                logger.error("dedupe store access failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}
