import Foundation
import LeadEvents

/// What became of one input record: exactly one of these is published for every record.
enum RecordOutcome: Sendable {
    case submitted(SubmittedLead, LeadIdentity)
    case duplicate(SubmittedLead, LeadIdentity)
    case deadLetter(DeadLetter)
}

extension RecordOutcome {
    var metricsOutcome: RelayMetrics.Outcome {
        switch self {
        case .submitted: .submitted
        case .duplicate: .duplicate
        case .deadLetter: .deadLettered
        }
    }

    var deadLetterReason: DeadLetter.Reason? {
        if case .deadLetter(let deadLetter) = self { deadLetter.reason } else { nil }
    }
}

/// The parts of a lead event that its result record names.
struct LeadIdentity: Sendable {
    var eventID: String?
    var eventSource: String?
    var classifiedID: String
}

/// Why a record could not be relayed, as the dead-letter headers tell it.
struct DeadLetter: Sendable {
    enum Stage: String, Sendable {
        case decode, validate, submit
    }

    enum Reason: String, Sendable, CaseIterable {
        case malformed
        case unsupportedType = "unsupported-type"
        case schemaViolation = "schema-violation"
        case rejectedByAPI = "rejected-by-api"
        case retriesExhausted = "retries-exhausted"
    }

    var stage: Stage
    var reason: Reason
    /// One line, free of personal data.
    var message: String
    /// JSON: the violations with their pointers, or the API's problem details.
    var detailsJSON: String
    var httpStatus: Int?
    var attempts: Int
    /// Known once the record decoded into a lead: the key a replay can be selected by (`lead-relay dlq --key`).
    var dedupeKey: String? = nil
}

extension DeadLetter {
    /// A record the decoder refused: schema violations fail validation, everything else fails decoding.
    init(_ rejection: LeadEventRejection) {
        let (stage, reason): (Stage, Reason) =
            switch rejection.reason {
            case .malformed: (.decode, .malformed)
            case .unsupportedType: (.decode, .unsupportedType)
            case .schemaViolation: (.validate, .schemaViolation)
            }
        self.init(
            stage: stage, reason: reason, message: rejection.message, detailsJSON: rejection.detailsJSON,
            httpStatus: nil, attempts: 0)
    }
}
