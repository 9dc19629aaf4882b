import Logging
import PostgresNIO
import SharedState
import TestSupport

/// Logs nothing: the tests assert on behaviour, not on log lines.
let quietLogger = Logger(label: "shared-state-tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// `count` clients of the server, each running (as separate relays' would) while `body` runs, then closed.
func withClients<Result: Sendable>(
    _ count: Int, of server: PostgresServer, _ body: ([PostgresClient]) async throws -> Result
) async throws -> Result {
    let url = try DatabaseURL(server.url)
    let clients = (0..<count).map { _ in
        PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: quietLogger)
    }
    return try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
        for client in clients {
            group.addTask { await client.run() }
        }
        defer { group.cancelAll() }
        return try await body(clients)
    }
}

/// One relay's part (`make`) per client, each `listen`ing while `body` runs, after every client prepared the
/// schema at once, as relays starting together do.
func withRelays<Relay: Sendable, Result: Sendable>(
    _ count: Int, of server: PostgresServer, make: (PostgresClient, Int) -> Relay,
    listen: @escaping @Sendable (Relay) async -> Void, _ body: ([Relay]) async throws -> Result
) async throws -> Result {
    try await withClients(count, of: server) { clients in
        try await prepareAtOnce(clients)
        let relays = clients.enumerated().map { index, client in make(client, index) }
        return try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
            for relay in relays {
                group.addTask { await listen(relay) }
            }
            defer { group.cancelAll() }
            return try await body(relays)
        }
    }
}

/// One store per client, each listening for ended claims.
func withStores<Result: Sendable>(
    _ count: Int, of server: PostgresServer, configuration: SharedLeadStore.Configuration = .init(),
    _ body: ([SharedLeadStore]) async throws -> Result
) async throws -> Result {
    try await withRelays(
        count, of: server,
        make: { client, _ in SharedLeadStore(client: client, configuration: configuration, logger: quietLogger) },
        listen: { await $0.run() }, body)
}

/// One budget per client with the same configuration, each listening for releases.
func withBudgets<Result: Sendable>(
    _ count: Int, of server: PostgresServer, configuration: SharedRateBudget.Configuration,
    _ body: ([SharedRateBudget]) async throws -> Result
) async throws -> Result {
    try await withRelays(
        count, of: server,
        make: { client, index in
            SharedRateBudget(
                client: client, configuration: configuration, holder: "relay-\(index)", logger: quietLogger)
        },
        listen: { await $0.run() }, body)
}

/// Prepares the schema through every client at once.
func prepareAtOnce(_ clients: [PostgresClient]) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for client in clients {
            group.addTask { try await SharedStateSchema.prepare(client: client, logger: quietLogger) }
        }
        try await group.waitForAll()
    }
}

/// `body`'s result, or `TimedOut` when it takes longer than `limit`: bounds a wait that should end much sooner
/// (a notification), so that a broken wake-up fails the test instead of passing slowly.
func within<Result: Sendable>(
    _ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let result = try await group.next() ?? nil else { throw TimedOut(what: what) }
        return result
    }
}

/// A claim's answer was not the one the test expects.
struct UnexpectedOutcome: Error, CustomStringConvertible {
    var description: String
}

extension ClaimOutcome {
    func claimed() throws -> Claim {
        guard case .claimed(let claim) = self else { throw UnexpectedOutcome(description: "expected claimed: \(self)") }
        return claim
    }

    func held() throws -> HeldClaim {
        guard case .held(let held) = self else { throw UnexpectedOutcome(description: "expected held: \(self)") }
        return held
    }

    func submitted() throws -> SharedSubmission {
        guard case .alreadySubmitted(let submission) = self else {
            throw UnexpectedOutcome(description: "expected already submitted: \(self)")
        }
        return submission
    }
}

/// Claims `key` until the answer is not `held`, waiting for each held claim to end in between, as a relay
/// does; `onHeld` is told of each held answer.
func claimWaiting(
    _ store: SharedLeadStore, _ key: String, owner: String, inputRecord: InputRecord, claimTTL: Duration,
    onHeld: (HeldClaim) -> Void = { _ in }
) async throws -> (outcome: ClaimOutcome, timesHeld: Int) {
    var timesHeld = 0
    while true {
        let outcome = try await store.claim(key, owner: owner, inputRecord: inputRecord, claimTTL: claimTTL)
        guard case .held(let held) = outcome else { return (outcome, timesHeld) }
        timesHeld += 1
        onHeld(held)
        try await store.waitForClaimToEnd(held)
    }
}
