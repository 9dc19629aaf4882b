import Logging
import PostgresNIO
import SharedState
import TestSupport
import Testing

@testable import LeadRelay

/// The shared state's adapters (`SharedRequestBudget`, `SharedSubmissionStore`) as the API client and the relay
/// core use them, against a real PostgreSQL server.
@Suite struct SharedStateAdapterTests {
    private static let logger = Logger(label: "shared-state-adapter-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// `body` with a running client of a fresh server whose schema is prepared.
    private static func withDatabase(_ body: (PostgresClient) async throws -> Void) async throws {
        try await PostgresServer.with { server in
            let url = try DatabaseURL(server.url)
            let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                try await SharedStateSchema.prepare(client: client, logger: logger)
                try await body(client)
            }
        }
    }

    /// A `Retry-After` answers the credentials every relay of the budget shares: the relay that got it holds its
    /// own starts, and the hold reaches the database, where it holds the next start of a relay that got none.
    @Test func aRetryAfterOneRelayGotHoldsAnotherRelaysNextStart() async throws {
        try await Self.withDatabase { client in
            let key = uniqueName("budget")
            func relay(_ holder: String) -> SharedRequestBudget {
                let budget = SharedRateBudget(
                    client: client,
                    configuration: SharedRateBudget.Configuration(
                        budgetKey: key, grantValidity: .seconds(60), leaseDuration: .seconds(3600)),
                    holder: holder, logger: Self.logger)
                return SharedRequestBudget(budget: budget, metrics: SharedStateMetrics(), logger: Self.logger)
            }
            let (answered, other) = (relay("relay-answered"), relay("relay-other"))
            let holdEnd = ContinuousClock.now + .milliseconds(800)
            answered.hold(until: holdEnd)
            #expect(answered.snapshot().holdRemaining != nil)
            try await waitUntil("the hold to reach the database") {
                try await client.query("SELECT count(*) FROM lead_relay_budget_holds WHERE budget_key = \(key)")
                    .decode(Int.self).reduce(0, +) == 1
            }
            let permit = try await other.acquire()
            #expect(ContinuousClock.now >= holdEnd)
            #expect(other.snapshot().holdRemaining == nil)
            other.release(permit)
        }
    }
}
