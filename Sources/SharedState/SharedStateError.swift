import PostgresNIO

/// An operation on the shared state that did not complete: the database could not be reached, did not answer in
/// time, or refused the statement. The message names the operation and the cause, never a password: postgres-nio's
/// own descriptions are generic on purpose, so the cause is assembled here from the parts that carry no secret.
public struct SharedStateError: Error, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// No connection to the database (refused, closed, the pool's circuit breaker open).
        case unavailable
        /// No answer within the operation's timeout.
        case timedOut
        /// The database answered with an error (the schema, a constraint, a bad argument).
        case rejected
    }

    public var kind: Kind
    /// What was attempted, for instance `claim`.
    public var operation: String
    /// Why it failed, in words.
    public var reason: String

    public var description: String {
        let what =
            switch kind {
            case .unavailable: "database unavailable"
            case .timedOut: "timed out"
            case .rejected: "refused by the database"
            }
        return "shared state: \(operation): \(what): \(reason)"
    }

    public init(kind: Kind, operation: String, reason: String) {
        self.kind = kind
        self.operation = operation
        self.reason = reason
    }

    /// Classifies an error thrown by postgres-nio.
    init(operation: String, cause: any Error) {
        self.operation = operation
        switch cause {
        case let error as SharedStateError:
            self = error
        case let error as PSQLError:
            if let message = error.serverInfo?[.message] {
                let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                // Admin shutdown and its kin: the server is going away, not refusing the statement.
                let goingAway = ["57P01", "57P02", "57P03"].contains(error.serverInfo?[.sqlState] ?? "")
                kind = goingAway ? .unavailable : .rejected
                reason = message + state
            } else {
                kind = .unavailable
                let underlying = error.underlying.map { ": \(String(describing: $0))" } ?? ""
                reason = "\(error.code)\(underlying)"
            }
        case let error as PostgresTransactionError:
            let inner = error.closureError ?? error.beginError ?? error.commitError ?? error.rollbackError
            self =
                inner.map { SharedStateError(operation: operation, cause: $0) }
                ?? SharedStateError(kind: .unavailable, operation: operation, reason: "the transaction failed")
        default:
            // ConnectionPoolError and NIO's channel errors describe themselves without configuration values.
            kind = .unavailable
            reason = String(describing: cause)
        }
    }
}
