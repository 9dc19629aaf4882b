import Foundation
import PostgresNIO
import SharedState
import TestSupport
import Testing

@Suite struct SharedRateBudgetTests {
    /// Whether, for the starts sorted by the database's clock, every `limit + 1` consecutive ones span at least
    /// `window`: no window shorter than that holds more than `limit` of them. (A microsecond of slack for the
    /// database's timestamp precision as a `Date`.)
    static func noWindowHoldsMoreThan(_ limit: Int, starts: [Date], window: Duration) -> Bool {
        let sorted = starts.sorted()
        guard sorted.count > limit else { return true }
        let span = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18 - 1e-6
        return (limit..<sorted.count).allSatisfy { sorted[$0].timeIntervalSince(sorted[$0 - limit]) >= span }
    }

    /// A budget that only the in-flight limit constrains, whose acquirers never ask again for want of news: a
    /// refused one is woken only by a release or by the expiry of the lease in the way.
    static func inFlightBound(maxInFlight: Int, leaseDuration: Duration) -> SharedRateBudget.Configuration {
        SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), maxInFlight: maxInFlight, rateLimit: 100, window: .milliseconds(100),
            grantValidity: .milliseconds(50), leaseDuration: leaseDuration, pollInterval: .seconds(3600))
    }

    @Test func threeRelaysTogetherKeepTheRateAndTheInFlightLimit() async throws {
        // A validity long enough for a loaded test machine: the bound is checked against the counted window.
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), maxInFlight: 4, rateLimit: 5, window: .milliseconds(100),
            margin: .milliseconds(2), grantValidity: .milliseconds(50), leaseDuration: .seconds(30))
        let acquirersPerRelay = 12
        let requestsPerAcquirer = 4
        try await PostgresServer.with { server in
            try await withBudgets(3, of: server, configuration: configuration) { budgets in
                let starts = Locked<[Date]>([])
                let inFlight = Locked((now: 0, most: 0))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for budget in budgets {
                        for _ in 0..<acquirersPerRelay {
                            group.addTask {
                                var sent = 0
                                while sent < requestsPerAcquirer {
                                    let grant = try await budget.acquire()
                                    starts.withLock { $0.append(grant.startedAt) }
                                    #expect(grant.inFlight <= configuration.maxInFlight)
                                    guard grant.isValid else {
                                        try await budget.release(grant)
                                        continue
                                    }
                                    inFlight.withLock {
                                        $0.now += 1; $0.most = max($0.most, $0.now)
                                    }
                                    // The request: up to 60 ms at the API, so that the in-flight limit binds too.
                                    try await Task.sleep(for: .milliseconds(Int.random(in: 0...60)))
                                    inFlight.withLock { $0.now -= 1 }
                                    try await budget.release(grant)
                                    sent += 1
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(
                    Self.noWindowHoldsMoreThan(
                        configuration.rateLimit, starts: starts.value, window: configuration.countedWindow))
                #expect(inFlight.value.most <= configuration.maxInFlight)
            }
        }
    }

    @Test func aLeaseNeverReleasedExpiresAndFreesItsCapacity() async throws {
        let configuration = Self.inFlightBound(maxInFlight: 2, leaseDuration: .seconds(2))
        try await PostgresServer.with { server in
            try await withBudgets(2, of: server, configuration: configuration) { budgets in
                // relay-0 takes the whole in-flight budget and is then killed: it never releases.
                let abandoned = [try await budgets[0].acquire(), try await budgets[0].acquire()]
                let earliestExpiry = abandoned.map(\.leaseExpiresAt).min()!
                // relay-1 waits for the leases to expire, not for its poll bound (an hour).
                let grant = try await within(.seconds(30), "a grant once the abandoned leases expire") {
                    try await budgets[1].acquire()
                }
                #expect(grant.startedAt >= earliestExpiry)
                try await budgets[1].release(grant)
            }
        }
    }

    @Test func aReleaseWakesAWaitingAcquirerOfAnotherRelay() async throws {
        let configuration = Self.inFlightBound(maxInFlight: 1, leaseDuration: .seconds(3600))
        try await PostgresServer.with { server in
            try await withBudgets(2, of: server, configuration: configuration) { budgets in
                let first = try await budgets[0].acquire()
                // Neither the lease (an hour) nor the poll bound (an hour) ends the wait: only the notification.
                async let granted = within(.seconds(30), "the waiting acquirer to be woken by the release") {
                    try await budgets[1].acquire()
                }
                try await waitUntil("relay-1 to be refused and wait") { budgets[1].waitingAcquirers == 1 }
                try await budgets[0].release(first)
                let second = try await granted
                #expect(second.startedAt > first.startedAt)
                #expect(second.inFlight == 1)
            }
        }
    }

    /// A start whose write is not reported yet counts in every window (its relay may write it at any moment), and
    /// once reported it counts at its write: the next start is granted at the report, not a window after the grant.
    @Test func anUnreportedStartCountsInEveryWindowAndAReportedOneAtItsWrite() async throws {
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), maxInFlight: 10, rateLimit: 1, window: .milliseconds(100),
            margin: .zero, leaseDuration: .seconds(3600), pollInterval: .seconds(3600))
        try await PostgresServer.with { server in
            try await withBudgets(2, of: server, configuration: configuration) { budgets in
                try await Self.withDatabaseClock(of: server) { databaseNow in
                    try await Self.reportedWriteLetsTheNextStartThrough(budgets, databaseNow: databaseNow)
                }
            }
        }
    }

    static func withDatabaseClock(
        of server: PostgresServer, _ body: (@Sendable () async throws -> Date) async throws -> Void
    ) async throws {
        try await withClients(1, of: server) { clients in
            let client = clients[0]
            try await body {
                var now = Date.distantPast
                for try await value in try await client.query("SELECT clock_timestamp()").decode(Date.self) {
                    now = value
                }
                return now
            }
        }
    }

    static func reportedWriteLetsTheNextStartThrough(
        _ budgets: [SharedRateBudget], databaseNow: @Sendable () async throws -> Date
    ) async throws {
        let first = try await budgets[0].acquire()
        let secondGranted = Locked(false)
        async let second = within(.seconds(30), "the second start to be granted after the report") {
            let grant = try await budgets[1].acquire()
            secondGranted.withLock { $0 = true }
            return grant
        }
        try await waitUntil("relay-1 to be refused and wait") { budgets[1].waitingAcquirers == 1 }
        // Well past a window after the first grant, by the database's clock: counted at its grant, the
        // first start would have let the second through by now.
        try await waitUntil("a window and more to pass since the first grant") {
            try await databaseNow() > first.startedAt.addingTimeInterval(0.4)
        }
        #expect(!secondGranted.withLock { $0 })
        let reportedAt = try await databaseNow()
        try await budgets[0].markWritten(first, at: first.writableAt)
        let granted = try await second
        #expect(granted.startedAt >= reportedAt)
        try await budgets[0].release(first)
        try await budgets[1].release(granted)
    }

    /// The next start the window allows is granted ahead, at the very instant the reported write leaves the
    /// window (not at the later instant a refused acquirer would ask again), and `acquire` returns only once the
    /// database's clock has passed it: the request is written at its instant or later. (A long validity: a grant
    /// answered too late on a loaded machine would be given back, and the next one dated a window later.)
    @Test func aGrantIsDatedAtTheInstantTheWindowAllowsAndReturnedWhenItComes() async throws {
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), maxInFlight: 10, rateLimit: 1, window: .milliseconds(300),
            margin: .zero, grantValidity: .seconds(60), leaseDuration: .seconds(3600), horizon: .seconds(1),
            pollInterval: .seconds(3600))
        try await PostgresServer.with { server in
            try await withBudgets(2, of: server, configuration: configuration) { budgets in
                try await withClients(1, of: server) { clients in
                    let first = try await budgets[0].acquire()
                    let report = try await budgets[0].markWritten(first, at: .now)
                    let written = try await clients[0].query(
                        "SELECT written_at FROM lead_relay_budget_grants WHERE grant_id = \(first.id)"
                    ).decode(Date.self).reduce(into: [Date]()) { $0.append($1) }
                    let writtenAt = try #require(written.first)
                    #expect(writtenAt >= first.startedAt)
                    // The lag reported is where the start counts (the database keeps microseconds), and it includes
                    // the width of the clock bounds: the write came after `writableAt`, the lower bound's instant.
                    #expect(abs(writtenAt.timeIntervalSince(first.startedAt) - report.lag.timeInterval) < 2e-6)
                    let uncertainty = try #require(report.clockUncertainty)
                    #expect(report.lag.timeInterval >= uncertainty.timeInterval - 1e-6)
                    let second = try await budgets[1].acquire()
                    let databaseNow = try await clients[0].query("SELECT clock_timestamp()").decode(Date.self)
                        .reduce(into: [Date]()) { $0.append($1) }
                    #expect(abs(second.startedAt.timeIntervalSince(writtenAt) - 0.3) < 1e-5)
                    #expect(try #require(databaseNow.first) >= second.startedAt)
                    #expect(ContinuousClock.now >= second.writableAt)
                    try await budgets[0].release(first)
                    try await budgets[1].release(second)
                }
            }
        }
    }

    /// Asked to hand a grant over ahead, `acquire` returns before the instant the request may be written: the caller
    /// waits the rest (the API client, on its event loop).
    @Test func aGrantHandedOverAheadReturnsBeforeItsInstant() async throws {
        let window = Duration.seconds(2)
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), maxInFlight: 10, rateLimit: 1, window: window, margin: .zero,
            grantValidity: .seconds(60), leaseDuration: .seconds(3600), horizon: .seconds(3),
            pollInterval: .seconds(3600))
        try await PostgresServer.with { server in
            try await withBudgets(1, of: server, configuration: configuration) { budgets in
                let first = try await budgets[0].acquire()
                let report = try await budgets[0].markWritten(first, at: .now)
                let second = try await budgets[0].acquire(handingOverAhead: window)
                let handedOverAt = ContinuousClock.now
                #expect(
                    abs(second.startedAt.timeIntervalSince(first.startedAt) - (report.lag + window).timeInterval) < 1e-5
                )
                #expect(handedOverAt < second.writableAt, "the second grant waited for its instant")
                #expect(handedOverAt >= second.writableAt - window)
                try await budgets[0].release(first)
                try await budgets[0].release(second)
            }
        }
    }

    /// The clock bounds come from the grant's exchange alone: a grant that waits a second for the pool's one
    /// connection (busy with a `pg_sleep`) is not a second less certain of the database's clock.
    @Test func theClockBoundsLeaveOutTheWaitForAConnection() async throws {
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), grantValidity: .seconds(60), leaseDuration: .seconds(3600))
        try await PostgresServer.with { server in
            var options = PostgresClient.Configuration.Options()
            options.maximumConnections = 1
            let client = PostgresClient(
                configuration: try DatabaseURL(server.url).clientConfiguration(options: options),
                backgroundLogger: quietLogger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                try await SharedStateSchema.prepare(client: client, logger: quietLogger)
                let budget = SharedRateBudget(
                    client: client, configuration: configuration, holder: "relay-0", logger: quietLogger)
                let busy = Task {
                    for try await _ in try await client.query("SELECT 1 FROM pg_sleep(1)").decode(Int32.self) {}
                }
                try await withClients(1, of: server) { observers in
                    try await waitUntil("the pool's connection to be busy") {
                        var sleeping = 0
                        for try await count in try await observers[0].query(
                            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT 1 FROM pg_sleep(1)'"
                        ).decode(Int.self) {
                            sleeping = count
                        }
                        return sleeping == 1
                    }
                }
                let grant = try await budget.acquire()
                #expect(grant.waited > .milliseconds(500), "the grant did not wait for the connection")
                let report = try await budget.markWritten(grant, at: .now)
                let uncertainty = try #require(report.clockUncertainty)
                #expect(uncertainty < .milliseconds(500), "the bounds include the wait: \(uncertainty)")
                try await budget.release(grant)
                try await busy.value
            }
        }
    }

    /// The API's `Retry-After` answers the credentials: a hold one relay sets dates every relay's next start at its
    /// end at the earliest, and a shorter hold after it does not shorten it.
    @Test func aHoldOneRelaySetsHoldsEveryRelaysStarts() async throws {
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), grantValidity: .seconds(60), leaseDuration: .seconds(3600))
        try await PostgresServer.with { server in
            try await withBudgets(2, of: server, configuration: configuration) { budgets in
                let before = try await budgets[1].acquire()
                try await budgets[1].release(before)
                let heldUntil = try #require(try await budgets[0].hold(for: .milliseconds(800)))
                #expect(heldUntil.timeIntervalSince(before.startedAt) > 0.7)
                #expect(try await budgets[0].hold(for: .milliseconds(10)) == heldUntil)
                let after = try await budgets[1].acquire()
                #expect(after.startedAt >= heldUntil)
                #expect(ContinuousClock.now >= after.writableAt)
                try await budgets[1].release(after)
            }
        }
    }

    @Test func aCancelledAcquirerLeavesTheQueueAndTheNextOneIsServed() async throws {
        let configuration = Self.inFlightBound(maxInFlight: 1, leaseDuration: .seconds(3600))
        try await PostgresServer.with { server in
            try await withBudgets(1, of: server, configuration: configuration) { budgets in
                let budget = budgets[0]
                let first = try await budget.acquire()
                let cancelled = Task { try await budget.acquire() }
                try await waitUntil("the first waiter to be refused and wait") { budget.waitingAcquirers == 1 }
                let served = Task { try await budget.acquire() }
                cancelled.cancel()
                await #expect(throws: CancellationError.self) { try await cancelled.value }
                try await budget.release(first)
                let grant = try await within(.seconds(30), "the waiter behind the cancelled one to be served") {
                    try await withTaskCancellationHandler {
                        try await served.value
                    } onCancel: {
                        served.cancel()
                    }
                }
                #expect(grant.inFlight == 1)
            }
        }
    }

    @Test func aGrantIsOnlyValidForItsValidity() async throws {
        let configuration = SharedRateBudget.Configuration(
            budgetKey: uniqueName("budget"), grantValidity: .milliseconds(200))
        try await PostgresServer.with { server in
            try await withBudgets(1, of: server, configuration: configuration) { budgets in
                let before = ContinuousClock.now
                let grant = try await budgets[0].acquire()
                #expect(grant.validUntil <= ContinuousClock.now + configuration.grantValidity)
                #expect(grant.validUntil > before)
                // A relay paused past the validity (SIGSTOP) finds its grant unusable when it continues.
                try await waitUntil("the grant to expire") { !grant.isValid }
                #expect(ContinuousClock.now >= grant.validUntil)
                try await budgets[0].release(grant)
            }
        }
    }
}
