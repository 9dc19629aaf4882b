import Logging
import Metrics
import PostgresNIO
import RelayPrimitives

/// What the store and the budget share: the client, the logger, and the bound of every operation.
struct SharedDatabase: Sendable {
    let client: PostgresClient
    let logger: Logger
    let operationTimeout: Duration

    /// Runs `body` within `operationTimeout`, turning whatever it throws into a `SharedStateError` naming `name`.
    ///
    /// While the database is unreachable postgres-nio's pool queues requests and keeps trying to connect (its
    /// circuit breaker opens only after a minute): the bound keeps every caller in control of how long it waits,
    /// whatever the pool's state, and a request cut short leaves the pool's queue. An operation cut short may still
    /// have been committed: every operation of the store and the budget is safe to retry, or conservative when not.
    func perform<Result: Sendable>(
        _ name: String, _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> Result
    ) async throws -> Result {
        let client = client
        let logger = logger
        Counter(label: "lead_relay_database_round_trips_total", dimensions: [("operation", name)]).increment()
        return try await Self.bounded(name, timeout: operationTimeout) { try await body(client, logger) }
    }

    /// `body`'s result within `timeout`, or a `SharedStateError` naming `name` (what `body` threw, classified).
    /// The bound holds even when `body` does not answer its cancellation (a request postgres-nio's pool keeps
    /// waiting for a connection to a server that went away): it runs in a task of its own, cancelled once the
    /// bound or the caller's cancellation ended the wait, and left to finish in the background.
    static func bounded<Result: Sendable>(
        _ name: String, timeout: Duration, _ body: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        let work = Task { try await body() }
        let result: Result?
        do {
            result = try await withTimeout(timeout) { try await work.value }
        } catch {
            // A cancelled caller gets the cancellation, not what postgres-nio made of it.
            if error is CancellationError || Task.isCancelled { throw CancellationError() }
            throw SharedStateError(operation: name, cause: error)
        }
        guard let result else {
            work.cancel()
            if Task.isCancelled { throw CancellationError() }
            throw SharedStateError(
                kind: .timedOut, operation: name,
                reason: "no answer within \(timeout) (the database is unreachable, or too slow)")
        }
        return result
    }

    /// The first column of the first row of `query`'s answer, nil when it has no row.
    func value<Value: PostgresDecodable & Sendable>(
        _ name: String, _ query: PostgresQuery, as type: Value.Type
    ) async throws -> Value? {
        try await perform(name) { client, logger in
            try await client.query(query, logger: logger).decode(Value.self).firstOfAll()
        }
    }
}

extension AsyncSequence {
    /// The first element, after reading the sequence to its end: a query's rows are read whole, so that its
    /// connection goes back to the pool at once rather than when an abandoned iterator is cleaned up.
    func firstOfAll() async throws -> Element? {
        var first: Element?
        for try await element in self where first == nil {
            first = element
        }
        return first
    }
}

extension Duration {
    /// The duration in seconds, for the database's `interval` arithmetic.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
