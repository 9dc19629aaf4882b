import Foundation
import Kafka
import Logging
import RelayPrimitives

/// Publishes each record's outcome: a result record, or the input record byte for byte with the
/// dead-letter headers after its own (a replayed record's `lead-relay.replay-count` among them, so the count
/// survives each round). Either way completes only once the broker acknowledged the write, because the
/// record's offset may be committed only then; a failed write is retried with back-off until it succeeds.
struct OutcomePublisher: Sendable {
    let producer: any OutcomeProducer
    let resultsTopic: String
    let deadLetterTopic: String
    let logger: Logger

    private static let retryBackoff = Backoff(base: .milliseconds(200), max: .seconds(5))

    /// Returns false when it gave up: the task was cancelled (a shutdown or revocation stopped waiting for it) or the
    /// producer is closed. The record then has no outcome and must stay uncommitted.
    func publish(_ outcome: RecordOutcome, of record: KafkaConsumerRecord, completedAt: Date) async -> Bool {
        let message = self.message(for: outcome, of: record, completedAt: completedAt)
        return await sendRetrying(message, of: record, failedAttempts: 0)
    }

    /// Enqueues without waiting; `acknowledged` runs once the broker has the record: on the producer's poll
    /// thread, or in a task of its own when the first attempt failed and had to be retried (never, if that task gives
    /// up: see `publish(_:of:completedAt:)`).
    func publish(
        _ outcome: RecordOutcome, of record: KafkaConsumerRecord, completedAt: Date,
        acknowledged: @escaping @Sendable () -> Void
    ) {
        let message = self.message(for: outcome, of: record, completedAt: completedAt)
        let retryInTask: @Sendable (any Error) -> Void = { error in
            logFailure(error, message, of: record, attempt: 1)
            Task {
                if await sendRetrying(message, of: record, failedAttempts: 1) { acknowledged() }
            }
        }
        do {
            try producer.enqueue(
                topic: message.topic, partition: nil, key: message.key, value: message.value, headers: message.headers
            ) { result in
                switch result {
                case .success: acknowledged()
                case .failure(let error): retryInTask(error)
                }
            }
        } catch {
            retryInTask(error)
        }
    }

    private func sendRetrying(_ message: OutgoingMessage, of record: KafkaConsumerRecord, failedAttempts: Int) async
        -> Bool
    {
        var attempt = failedAttempts
        while !Task.isCancelled, !producer.isClosed {
            if attempt > 0 {
                try? await Task.sleep(for: Self.retryBackoff.delay(afterAttempt: attempt))
            }
            do {
                _ = try await producer.send(
                    topic: message.topic, partition: nil, key: message.key, value: message.value,
                    headers: message.headers)
                return true
            } catch {
                attempt += 1
                logFailure(error, message, of: record, attempt: attempt)
            }
        }
        return false
    }

    private func logFailure(
        _ error: any Error, _ message: OutgoingMessage, of record: KafkaConsumerRecord, attempt: Int
    ) {
        logger.warning(
            "publishing an outcome failed; retrying",
            metadata: [
                "topic": "\(message.topic)", "input.partition": "\(record.partition)",
                "input.offset": "\(record.offset)", "attempt": "\(attempt)", "error": "\(error)",
            ])
    }

    private struct OutgoingMessage: Sendable {
        var topic: String
        var key: [UInt8]?
        var value: [UInt8]?
        var headers: [KafkaHeader]
    }

    private static let jsonContentType = KafkaHeader(key: "content-type", value: Array("application/json".utf8))

    private func message(
        for outcome: RecordOutcome, of record: KafkaConsumerRecord, completedAt: Date
    ) -> OutgoingMessage {
        switch outcome {
        case .submitted(let lead, let identity):
            return resultMessage(
                status: "SUBMITTED", lead: lead, attempts: lead.attempts, identity, record, completedAt)
        case .duplicate(let lead, let identity):
            return resultMessage(status: "DUPLICATE", lead: lead, attempts: 0, identity, record, completedAt)
        case .deadLetter(let deadLetter):
            return OutgoingMessage(
                topic: deadLetterTopic, key: record.key, value: record.value,
                headers: record.headers + Self.deadLetterHeaders(deadLetter, record, failedAt: completedAt))
        }
    }

    private func resultMessage(
        status: String, lead: SubmittedLead, attempts: Int, _ identity: LeadIdentity,
        _ record: KafkaConsumerRecord, _ completedAt: Date
    ) -> OutgoingMessage {
        var json = JSONObjectWriter()
        json.field("status", string: status)
        json.field("dedupeKey", string: lead.dedupeKey)
        json.field("eventId", string: identity.eventID)
        json.field("eventSource", string: identity.eventSource)
        json.field("classifiedId", string: identity.classifiedID)
        if lead.isReconciled {
            // The API never answered the post that stored it: there is no request id, title or status to give.
            json.field("requestId", rawJSON: "null")
            json.field("title", rawJSON: "null")
            json.field("httpStatus", rawJSON: "null")
        } else {
            json.field("requestId", string: lead.requestId)
            json.field("title", string: lead.title)
            json.field("httpStatus", integer: lead.httpStatus)
        }
        json.field("reconciled", rawJSON: lead.isReconciled ? "true" : "false")
        if let leadId = lead.leadId {
            json.field("leadId", string: leadId)
        }
        json.field("attempts", integer: attempts)
        json.field("firstAttemptAt", string: RFC3339Milliseconds.format(lead.firstAttemptAt))
        json.field("submittedAt", string: RFC3339Milliseconds.format(lead.submittedAt))
        json.field("completedAt", string: RFC3339Milliseconds.format(completedAt))
        var input = JSONObjectWriter()
        input.field("topic", string: record.topic)
        input.field("partition", integer: Int(record.partition))
        input.field("offset", integer: Int(record.offset))
        json.field("input", rawJSON: input.finish())
        return OutgoingMessage(
            topic: resultsTopic, key: Array(lead.dedupeKey.utf8), value: Array(json.finish().utf8),
            headers: [Self.jsonContentType])
    }

    private static func deadLetterHeaders(
        _ deadLetter: DeadLetter, _ record: KafkaConsumerRecord, failedAt: Date
    ) -> [KafkaHeader] {
        var headers: [(String, String)] = [
            (DeadLetterHeader.stage, deadLetter.stage.rawValue),
            (DeadLetterHeader.reason, deadLetter.reason.rawValue),
            (DeadLetterHeader.message, deadLetter.message),
            (DeadLetterHeader.details, deadLetter.detailsJSON),
        ]
        if let status = deadLetter.httpStatus {
            headers.append((DeadLetterHeader.httpStatus, String(status)))
        }
        if let dedupeKey = deadLetter.dedupeKey {
            headers.append((DeadLetterHeader.dedupeKey, dedupeKey))
        }
        headers.append(contentsOf: [
            (DeadLetterHeader.sourceTopic, record.topic),
            (DeadLetterHeader.sourcePartition, String(record.partition)),
            (DeadLetterHeader.sourceOffset, String(record.offset)),
        ])
        if let timestamp = record.timestamp {
            headers.append(
                (DeadLetterHeader.sourceTimestamp, String(Int64(timestamp.timeIntervalSince1970 * 1000))))
        }
        headers.append(contentsOf: [
            (DeadLetterHeader.attempts, String(deadLetter.attempts)),
            (DeadLetterHeader.failedAt, RFC3339Milliseconds.format(failedAt)),
        ])
        return headers.map { KafkaHeader(key: $0.0, value: Array($0.1.utf8)) }
    }
}
