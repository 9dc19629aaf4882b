import Foundation
import Logging
import PostgresNIO

/// One API budget for every relay with the same database and budget key: at most `maxInFlight` requests
/// outstanding at once, and at most `rateLimit` request starts in any `window` as the API counts them.
///
/// ## How a grant is decided
/// The database's clock is the one clock. A grant is one call of `lead_relay_budget_acquire`, which takes
/// `pg_advisory_xact_lock(hashtext(budget key))`, so the grants of a budget are decided one after another, each
/// seeing every grant and release committed before it (the function reads with a snapshot taken after the lock).
/// It reads the budget's rows: starts within the counted window (`window + margin + grantValidity` back from the
/// grant's instant `t`) and leases neither released nor expired. When both are under their limits it inserts the
/// grant's row: its start at `t` and a lease until `t + leaseDuration`. `t` is the database's `clock_timestamp()`,
/// or the budget's latest start if that is later (a clock set back on the database host).
///
/// ## Why no window holds more than `rateLimit` starts as the API counts them
/// The caller takes the instant `s` on its monotonic clock before it sends the grant's query, and uses the grant
/// only if it writes the request before `s + grantValidity` (`Grant.isValid`, checked just before the write).
/// The grant's `t` lies between the query's sending and its answer, so the write `w` is within
/// `[t, t + grantValidity]`; the request reaches the API within `[w + d, w + d + margin]` for the network delay `d`
/// when `margin` bounds its jitter. Every arrival is thus within `[t + d, t + d + grantValidity + margin]` of its
/// grant. If `rateLimit + 1` requests arrived within one API window of `window`, their grants' instants would lie
/// within `window + margin + grantValidity` of each other; but the last of them, decided after the others had
/// committed, counted `rateLimit` starts within that span and would not have been granted. Measuring the validity
/// from the sending rather than from the answer also covers an answer delayed on its way back, and a relay paused
/// (SIGSTOP) between grant and write finds its grant expired when it continues: it discards it, and the grant's
/// start, which still counts, only makes the budget stricter.
///
/// ## Why no more than `maxInFlight` requests are outstanding
/// A request is written within `grantValidity` of its grant and ends by the API request timeout after that, so
/// before its lease expires when `leaseDuration` is at least the request timeout plus a margin (2 s suggested),
/// and it is released after it ended. At every instant the outstanding requests are thus among the live leases,
/// and a grant is given only while fewer than `maxInFlight` leases live. A relay SIGKILLed with requests out gives
/// their capacity back when the leases expire: `leaseDuration` after their grants at most. (Not covered: an API
/// that goes on serving a request longer than its lease after the relay that sent it stopped, paused or gone.)
///
/// ## Work conservation and cost
/// A relay with leads uses whatever capacity the others leave: a refused grant says when the budget allows the
/// next start at the earliest (the start in the way leaves the window, or the earliest lease expires), and the
/// acquirer asks again then, or sooner when a release is notified (`lead_relay_budget`, listened to by `run()`),
/// or after `pollInterval` at the latest. In a process only the first acquirer asks the database; the others queue
/// behind it. The cost is 1 round trip for a grant given at once, 1 more per refusal, and 1 for the release.
/// Rows that can no longer count are deleted by the next grant of the same budget, so a budget's rows stay about
/// `rateLimit` plus the leases out.
///
/// The price of the bound is throughput: at most `rateLimit` starts per `window + margin + grantValidity`, so
/// 10 per 205 ms (97.6% of the API's ceiling) with the defaults. A longer validity costs throughput for certain;
/// a shorter one wastes the grants whose round trip and write take longer (each discarded grant's start counts).
/// The database host's clock must not be stepped forward (slewing, as NTP does, is fine).
public final class SharedRateBudget: Sendable {
    public struct Configuration: Sendable {
        /// Relays with the same database and key share one budget.
        public var budgetKey: String
        public var maxInFlight: Int
        public var rateLimit: Int
        public var window: Duration
        /// The jitter between a request's write and its arrival at the API.
        public var margin: Duration
        /// How long after its query was sent a grant may be used. Longer than the database's round trip, or no
        /// grant is ever usable: each is discarded (its start counted) and `acquire` asks again.
        public var grantValidity: Duration
        /// How long a grant counts as in flight unless released: the API request timeout plus a margin.
        public var leaseDuration: Duration
        /// The longest a refused acquirer waits before asking again.
        public var pollInterval: Duration
        /// The bound of every database operation.
        public var operationTimeout: Duration
        /// The pause before listening again after the listening connection was lost.
        public var listenRetryDelay: Duration

        public init(
            budgetKey: String, maxInFlight: Int = 10, rateLimit: Int = 10, window: Duration = .milliseconds(200),
            margin: Duration = .milliseconds(2), grantValidity: Duration = .milliseconds(3),
            leaseDuration: Duration = .seconds(12), pollInterval: Duration = .milliseconds(250),
            operationTimeout: Duration = .seconds(5), listenRetryDelay: Duration = .seconds(1)
        ) {
            self.budgetKey = budgetKey
            self.maxInFlight = maxInFlight
            self.rateLimit = rateLimit
            self.window = window
            self.margin = margin
            self.grantValidity = grantValidity
            self.leaseDuration = leaseDuration
            self.pollInterval = pollInterval
            self.operationTimeout = operationTimeout
            self.listenRetryDelay = listenRetryDelay
        }

        /// The span within which a grant counts the starts before it.
        public var countedWindow: Duration { window + margin + grantValidity }
    }

    /// One request start and its in-flight lease: write the request only while `isValid`, then `release` it
    /// when the request is over (or at once, when it was not used).
    public struct Grant: Sendable, Equatable {
        public let id: UUID
        /// The start's instant, by the database's clock.
        public let startedAt: Date
        /// When the lease ends unless released, by the database's clock.
        public let leaseExpiresAt: Date
        /// The last instant, on this process's monotonic clock, at which the request may be written.
        public let validUntil: ContinuousClock.Instant
        /// How long `acquire` took.
        public let waited: Duration
        /// Requests in flight in the whole group when it was granted, this one included.
        public let inFlight: Int

        /// Whether the request may still be written; check it as the last thing before the write.
        public var isValid: Bool { ContinuousClock.now < validUntil }
    }

    public let configuration: Configuration
    private let database: SharedDatabase
    private let holder: String
    private let turns = TurnQueue()
    private let leaseReleased = NotificationHub(channel: "lead_relay_budget")

    /// `holder` names this relay instance in the budget's rows. `client` must be run by the caller.
    public init(client: PostgresClient, configuration: Configuration, holder: String, logger: Logger) {
        precondition(
            configuration.maxInFlight > 0 && configuration.rateLimit > 0 && configuration.grantValidity > .zero,
            "an empty budget, or grants valid for no time, grant nothing")
        self.configuration = configuration
        self.holder = holder
        database = SharedDatabase(client: client, logger: logger, operationTimeout: configuration.operationTimeout)
    }

    /// Listens for released leases until cancelled, so that a waiting acquirer asks again as soon as one is.
    public func run() async {
        await leaseReleased.listen(through: database, reconnectDelay: configuration.listenRetryDelay)
    }

    /// Waits for a start within the budget. Throws `SharedStateError` when the database fails (the caller starts
    /// nothing meanwhile) and `CancellationError` when the task is cancelled.
    public func acquire() async throws -> Grant {
        let arrival = ContinuousClock.now
        return try await turns.withTurn {
            while true {
                var grant: Grant?
                try await leaseReleased.wait(for: configuration.budgetKey) {
                    switch try await ask(arrival: arrival) {
                    case .granted(let granted):
                        grant = granted
                        return nil
                    case .refused(let retryAfter):
                        // At least a millisecond: the database's answer is rounded, and asking early asks again.
                        return min(max(retryAfter, .milliseconds(1)), configuration.pollInterval)
                    }
                }
                guard let grant else { continue }
                if grant.isValid { return grant }
                // The answer came too late to be used: the start counts anyway, the lease is given back.
                try await release(grant)
            }
        }
    }

    /// The acquirers of this process that were refused a grant and wait to ask again (others queue behind them).
    public var waitingAcquirers: Int { leaseReleased.parked }

    private enum Answer {
        case granted(Grant)
        case refused(retryAfter: Duration)
    }

    private func ask(arrival: ContinuousClock.Instant) async throws -> Answer {
        let grantID = UUID()
        let query: PostgresQuery = """
            SELECT * FROM lead_relay_budget_acquire(\(configuration.budgetKey), \(holder), \(grantID),
                \(Int32(clamping: configuration.maxInFlight)), \(Int32(clamping: configuration.rateLimit)),
                \(configuration.countedWindow.seconds), \(configuration.leaseDuration.seconds))
            """
        let sentAt = ContinuousClock.now
        let row = try await database.perform("budget grant") { client, logger in
            try await client.query(query, logger: logger).decode((Bool, Date?, Date?, Double?, Int32, Int32).self)
                .firstOfAll()
        }
        guard let (granted, startedAt, leaseExpiresAt, retryAfter, inFlight, _) = row else {
            throw SharedStateError(kind: .rejected, operation: "budget grant", reason: "the database returned no row")
        }
        guard granted, let startedAt, let leaseExpiresAt else {
            return .refused(retryAfter: .seconds(retryAfter ?? 0))
        }
        return .granted(
            Grant(
                id: grantID, startedAt: startedAt, leaseExpiresAt: leaseExpiresAt,
                validUntil: sentAt + configuration.grantValidity, waited: ContinuousClock.now - arrival,
                inFlight: Int(inFlight)))
    }

    /// Ends the grant's lease; its start still counts in the window. Releasing twice is harmless.
    public func release(_ grant: Grant) async throws {
        _ = try await database.value(
            "budget release", "SELECT lead_relay_budget_release(\(grant.id))", as: Bool.self)
    }

    /// Whether the database answers and the budget's table is there (for a readiness check).
    public func checkHealth() async throws {
        _ = try await database.value(
            "budget health check", "SELECT 1 FROM lead_relay_budget_grants LIMIT 1", as: Int32.self)
    }
}
