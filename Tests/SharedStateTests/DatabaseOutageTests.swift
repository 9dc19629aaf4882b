import SharedState
import TestSupport
import Testing

@Suite struct DatabaseOutageTests {
    @Test func operationsFailClearlyWhileTheDatabaseIsDownAndWorkAgainWhenItIsBack() async throws {
        // Hour-long claims, leases and poll bounds: after the outage only the notifications, listened to again
        // by the same store and budget, can end the waits below.
        let storeConfiguration = SharedLeadStore.Configuration(
            claimPollInterval: .seconds(3600), operationTimeout: .seconds(2))
        let budgetConfiguration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), maxInFlight: 1, grantValidity: .milliseconds(50),
            leaseDuration: .seconds(3600), pollInterval: .seconds(3600), operationTimeout: .seconds(2))
        let record = InputRecord(topic: "leads.submitted", partition: 0, offset: 1)
        try await PostgresServer.with { server in
            try await withClients(1, of: server) { clients in
                let store = SharedLeadStore(client: clients[0], configuration: storeConfiguration, logger: quietLogger)
                let budget = SharedRateBudget(
                    client: clients[0], configuration: budgetConfiguration, holder: "relay-0", logger: quietLogger)
                try await withThrowingTaskGroup(of: Void.self) { listeners in
                    listeners.addTask { await store.run() }
                    listeners.addTask { await budget.run() }
                    defer { listeners.cancelAll() }
                    try await SharedStateSchema.prepare(client: clients[0], logger: quietLogger)
                    let before = try await store.claim(
                        "sha256:before", owner: "relay-0", inputRecord: record, claimTTL: .seconds(3600)
                    ).claimed()
                    try await budget.release(try await budget.acquire())

                    await server.stop()
                    // Ten seconds down: every operation fails, with an error that says which and why.
                    let downUntil = ContinuousClock.now + .seconds(10)
                    while ContinuousClock.now < downUntil {
                        let claimError = await #expect(throws: SharedStateError.self) {
                            try await store.claim(
                                "sha256:during", owner: "relay-0", inputRecord: record, claimTTL: .seconds(60))
                        }
                        #expect(Self.isClearOutage(claimError, operation: "claim", password: server.password))
                        let grantError = await #expect(throws: SharedStateError.self) { try await budget.acquire() }
                        #expect(Self.isClearOutage(grantError, operation: "budget grant", password: server.password))
                        await #expect(throws: SharedStateError.self) { try await store.checkHealth() }
                    }

                    try await server.start()
                    // The same client, store and budget, not restarted: they work again once the pool reconnects.
                    let after = try await waitFor(
                        "the store to work again", timeout: .seconds(60), every: .milliseconds(100)
                    ) {
                        try? await store.claim(
                            "sha256:after", owner: "relay-0", inputRecord: record, claimTTL: .seconds(3600))
                    }
                    let claim = try after.claimed()
                    try await store.checkHealth()
                    try await budget.checkHealth()
                    // What was stored before the outage is still there.
                    let stillHeld = try await store.claim(
                        "sha256:before", owner: "relay-1", inputRecord: record, claimTTL: .seconds(60)
                    ).held()
                    #expect(stillHeld.owner == before.owner)

                    // A relay waiting for the claim is woken by its outcome: the store listens again.
                    async let waited = within(.seconds(30), "the claim's waiter to be woken after the outage") {
                        try await claimWaiting(
                            store, "sha256:after", owner: "relay-1", inputRecord: record, claimTTL: .seconds(60))
                    }
                    try await waitUntil("relay-1 to wait for the claim") { store.claimWaiters == 1 }
                    _ = try await store.recordSubmitted(claim, requestId: "r-after", title: "t", httpStatus: 201)
                    #expect(try await waited.outcome.submitted().requestId == "r-after")

                    // An acquirer refused for want of capacity is woken by the release: the budget listens again.
                    let first = try await budget.acquire()
                    async let second = within(.seconds(30), "the acquirer to be woken after the outage") {
                        try await budget.acquire()
                    }
                    try await waitUntil("the second acquirer to wait") { budget.waitingAcquirers == 1 }
                    try await budget.release(first)
                    try await budget.release(try await second)
                }
            }
        }
    }

    /// An outage's error: the operation named first, then that the database is unavailable or silent, no password.
    static func isClearOutage(_ error: SharedStateError?, operation: String, password: String) -> Bool {
        guard let error else { return false }
        let message = "\(error)"
        return [.unavailable, .timedOut].contains(error.kind) && message.hasPrefix("shared state: \(operation): ")
            && !message.contains(password)
    }
}
