import Foundation
import Logging
import PostgresNIO
import RelayPrimitives
import Synchronization

/// One API budget for every relay with the same database and budget key: at most `maxInFlight` requests
/// outstanding at once, and at most `rateLimit` request starts in any `window` as the API counts them.
///
/// ## How a grant is decided
/// The database's clock is the one clock. A grant is one call of `lead_relay_budget_acquire`, which takes
/// `pg_advisory_xact_lock(hashtext(budget key))`, so the grants of a budget are decided one after another, each
/// seeing every grant, write report and release committed before it (the function reads with a snapshot taken
/// after the lock). At the decision's instant `now` (the database's `clock_timestamp()`) it counts the budget's
/// leases neither released nor expired; under `maxInFlight`, it finds the earliest instant `t >= now` at which
/// fewer than `rateLimit` starts count within the counted window (`window + margin` back from `t`) and the
/// previous grant is a pacing step (`countedWindow / rateLimit`) back. When `t` is within `horizon` of `now`, it
/// inserts the grant's row, dated `t`, with a lease until `t + leaseDuration`; otherwise it refuses, saying when
/// `t` comes within the horizon.
///
/// ## When the relay writes, and where a start counts
/// The relay writes a grant's request once the database's clock has surely passed `t` (`Grant.writableAt`, from
/// `DatabaseClock`, which bounds the offset between the two clocks by the clock readings in each grant's answer), so
/// a start is written at `t` or later. Dating grants ahead, rather than refusing until `t` and being asked again,
/// saves each start a sleep and a round trip, which the next window would otherwise inherit.
///
/// A start counts at its write: the relay reports it (`markWritten`) as the latest the database's clock can have
/// read when its head was written, so at or after the real write. (The API client reports a request written on a
/// connection the API has not read from before when its answer arrives instead: the API's first read of a new
/// connection can lag the write by more than the margin, and it came before the answer.) Until the report, the
/// start counts at the instant its lease ends (released or expired), which is after any write it had: an
/// unreported live grant counts in every window.
///
/// ## Why no window holds more than `rateLimit` starts as the API counts them
/// Let `margin` bound the jitter of the network delay `d`: a request written at `w` on a connection the API has
/// read from before arrives within `[w + d, w + d + margin]`; one written on a new connection arrives by its answer,
/// the instant it is counted at. Suppose `rateLimit + 1` requests arrived within one API window, and take the one
/// decided last, dated `t`; it was written at `t` or later, so it arrived at `t + d` or later. Every other one was
/// decided before it, and counted then at an instant `e` at or after its write, so it arrived by `e + d + margin`.
/// One counted at `e <= t - window - margin` arrived at least `window` before the last one, so not in its window;
/// so all `rateLimit` others were counted (`e > t - countedWindow`), and the last grant could not have been dated
/// `t`. Nothing in this depends on how long the relay took between grant and write: a relay paused there
/// (SIGSTOP) that writes when it continues is counted where it wrote, or until its lease ended.
///
/// ## Why no more than `maxInFlight` requests are outstanding
/// A request ends by the API request timeout after its write; when `leaseDuration` is at least that plus the time
/// to the write plus a margin (the request timeout plus 2 s suggested), its lease outlasts it, and it is released
/// after it ended. At every instant the outstanding requests are thus among the live leases, and a grant is given
/// only while fewer than `maxInFlight` leases live. A relay SIGKILLed with requests out gives their capacity back
/// when the leases expire: `leaseDuration` after their grants' instants at most. (Not covered: a relay paused
/// between grant and write for longer than its lease, or an API that serves a request longer than its lease.)
///
/// ## The API's `Retry-After`
/// A `Retry-After` answers the credentials, which every relay of the budget shares: `hold` writes it to the
/// budget's row, and every later decision dates its start at the hold's end at the earliest.
///
/// ## Work conservation and cost
/// A relay with leads uses whatever capacity the others leave: a refused grant says when the budget allows the
/// next start at the earliest (less the horizon), or when the earliest lease expires, and the acquirer asks again
/// then, at the latest after `pollInterval`; when a lease or an unreported start is in the way, also as soon as a
/// release or a write report is notified (`lead_relay_budget`, listened to by `run()`). In a process only the
/// first acquirer asks the database; the others queue behind it. The cost is 1 round trip for a grant given at
/// once, 1 more per refusal, 1 for the write report and 1 for the release. Rows that can no longer count are
/// deleted by the next grant of the same budget, so a budget's rows stay about `rateLimit` plus the leases out.
///
/// The price of the bound is throughput: at most `rateLimit` starts per `window + margin`, so 10 per 205 ms
/// (97.6% of the API's ceiling) with a 5 ms margin, less each start's lag: the width of the clocks' offset bounds
/// (how late `writableAt` can be plus how much a report can overstate its write) and the time from `writableAt` to
/// the write. `markWritten` returns the lag and the width. Neither the database host's clock nor this one may be
/// stepped (slewing, as NTP does, is fine).
public final class SharedRateBudget: Sendable {
    public struct Configuration: Sendable {
        /// Relays with the same database and key share one budget.
        public var budgetKey: String
        public var maxInFlight: Int
        public var rateLimit: Int
        public var window: Duration
        /// The jitter between a request's write and its arrival at the API.
        public var margin: Duration
        /// The longest a grant's query may take to be answered: a later answer is given back (its start counted),
        /// and `acquire` asks again. A grant used late is still counted right; this only keeps a slow answer's
        /// start from being counted long after its request went out.
        public var grantValidity: Duration
        /// How long a grant counts as in flight unless released: the API request timeout plus a margin.
        public var leaseDuration: Duration
        /// How far ahead of the database's clock a grant may be dated: an acquirer asking within it of the
        /// earliest instant the budget allows is granted that instant, and writes at it.
        public var horizon: Duration
        /// The longest a refused acquirer waits before asking again.
        public var pollInterval: Duration
        /// The bound of every database operation.
        public var operationTimeout: Duration
        /// The pause before listening again after the listening connection was lost.
        public var listenRetryDelay: Duration

        public init(
            budgetKey: String, maxInFlight: Int = 10, rateLimit: Int = 10, window: Duration = .milliseconds(200),
            margin: Duration = .milliseconds(5), grantValidity: Duration = .milliseconds(100),
            leaseDuration: Duration = .seconds(12), horizon: Duration = .milliseconds(25),
            pollInterval: Duration = .milliseconds(250),
            operationTimeout: Duration = .seconds(5), listenRetryDelay: Duration = .seconds(1)
        ) {
            self.budgetKey = budgetKey
            self.maxInFlight = maxInFlight
            self.rateLimit = rateLimit
            self.window = window
            self.margin = margin
            self.grantValidity = grantValidity
            self.leaseDuration = leaseDuration
            self.horizon = horizon
            self.pollInterval = pollInterval
            self.operationTimeout = operationTimeout
            self.listenRetryDelay = listenRetryDelay
        }

        /// The span within which a grant counts the starts before it.
        public var countedWindow: Duration { window + margin }
    }

    /// One request start and its in-flight lease: report the request's write with `markWritten`, then `release`
    /// it when the request is over (or at once, when it was not used).
    public struct Grant: Sendable, Equatable {
        public let id: UUID
        /// The start's instant, by the database's clock: its request is written at it or later.
        public let startedAt: Date
        /// The first instant of this process's monotonic clock at which the database's clock has surely reached
        /// `startedAt`: its request is not to be written before.
        public let writableAt: ContinuousClock.Instant
        /// When the lease ends unless released, by the database's clock.
        public let leaseExpiresAt: Date
        /// When its answer would have come too late, on this process's monotonic clock.
        public let validUntil: ContinuousClock.Instant
        /// How long `acquire` took.
        public let waited: Duration
        /// Requests in flight in the whole group when it was granted, this one included.
        public let inFlight: Int

        /// Whether the answer came within the validity.
        public var isValid: Bool { ContinuousClock.now < validUntil }
    }

    public let configuration: Configuration
    private let database: SharedDatabase
    private let holder: String
    private let turns = TurnQueue()
    private let leaseReleased = NotificationHub(channel: "lead_relay_budget")
    private let databaseClock = Mutex(DatabaseClock())
    private let nextAskAt = Mutex<ContinuousClock.Instant?>(nil)

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

    /// Waits for a start, and returns `ahead` before its `writableAt` at the earliest: the caller must not write its
    /// request before that instant, and may build it meanwhile. Throws `SharedStateError` when the database fails
    /// (the caller starts nothing meanwhile) and `CancellationError` when the task is cancelled.
    public func acquire(handingOverAhead ahead: Duration = .zero) async throws -> Grant {
        let arrival = ContinuousClock.now
        let grant = try await turns.withTurn {
            // The next start is a pacing step after the last grant of this process at the earliest: asking before
            // it is within the horizon would only be refused.
            if let nextAsk = nextAskAt.withLock({ $0 }), nextAsk > .now {
                try await Task.sleep(until: nextAsk, clock: .continuous)
            }
            while true {
                var grant: Grant?
                var timeBound: Duration?
                try await leaseReleased.wait(for: configuration.budgetKey) {
                    switch try await ask(arrival: arrival) {
                    case .granted(let granted):
                        grant = granted
                        return nil
                    case .refused(let retryAfter, let notified):
                        // At least a millisecond: the database's answer is rounded, and asking early asks again.
                        let delay = min(max(retryAfter, .milliseconds(1)), configuration.pollInterval)
                        guard notified else {
                            timeBound = delay
                            return nil
                        }
                        return delay
                    }
                }
                if let timeBound {
                    // Only time frees the budget: another relay's release or report would only make it ask early.
                    try await Task.sleep(for: timeBound)
                    continue
                }
                guard let grant else { continue }
                if grant.isValid { return grant }
                // The answer came too late to be used: the start counts anyway, the lease is given back.
                try await release(grant)
            }
        }
        // Outside the turn: the next acquirer of this process may be granted the next instant meanwhile.
        do {
            try await Task.sleep(until: grant.writableAt - ahead, tolerance: .zero, clock: .continuous)
        } catch {
            Task { try? await self.release(grant) }
            throw error
        }
        return grant
    }

    /// The acquirers of this process that were refused a grant and wait to ask again (others queue behind them).
    public var waitingAcquirers: Int { leaseReleased.parked }

    private enum Answer {
        case granted(Grant)
        /// `notified`: a release or a write report may free the budget sooner.
        case refused(retryAfter: Duration, notified: Bool)
    }

    private func ask(arrival: ContinuousClock.Instant) async throws -> Answer {
        let grantID = UUID()
        let query: PostgresQuery = """
            SELECT * FROM lead_relay_budget_acquire(\(configuration.budgetKey), \(holder), \(grantID),
                \(Int32(clamping: configuration.maxInFlight)), \(Int32(clamping: configuration.rateLimit)),
                \(configuration.countedWindow.seconds), \(configuration.leaseDuration.seconds),
                \(configuration.horizon.seconds))
            """
        let askedAt = ContinuousClock.now
        let (row, sentAt, answeredAt) = try await database.perform("budget grant") { client, logger in
            try await client.withConnection { connection in
                // Read around this exchange alone, so that the pool's lease and the hops of `perform`'s task stay
                // outside the bounds on the clocks' offset, which every start's lag includes.
                let sentAt = ContinuousClock.now
                let row = try await connection.query(query, logger: logger).decode(
                    (Bool, Date?, Date?, Double?, Int32, Int32?, Bool, Date, Date).self
                ).firstOfAll()
                return (row, sentAt, ContinuousClock.now)
            }
        }
        guard let (granted, startedAt, leaseExpiresAt, retryAfter, inFlight, _, notified, decidedAt, returnedAt) = row
        else {
            throw SharedStateError(kind: .rejected, operation: "budget grant", reason: "the database returned no row")
        }
        // The next start is a pacing step after this one at the earliest, and is asked for once within the horizon.
        let untilNextAsk = (configuration.countedWindow / configuration.rateLimit - configuration.horizon).timeInterval
        let (writableAt, nextAsk) = databaseClock.withLock { clock in
            clock.record(decidedAt, returnedAt, sent: sentAt, answered: answeredAt)
            return (
                startedAt.flatMap { clock.localInstant(whenDatabaseReaches: $0) },
                startedAt.flatMap { clock.localInstant(whenDatabaseReaches: $0 + untilNextAsk) }
            )
        }
        guard granted, let startedAt, let leaseExpiresAt, let writableAt else {
            return .refused(retryAfter: .seconds(retryAfter ?? 0), notified: notified)
        }
        nextAskAt.withLock { $0 = nextAsk }
        return .granted(
            Grant(
                id: grantID, startedAt: startedAt, writableAt: writableAt, leaseExpiresAt: leaseExpiresAt,
                validUntil: askedAt + configuration.grantValidity, waited: answeredAt - arrival,
                inFlight: Int(inFlight)))
    }

    /// Reports that the grant's request head was written at `instant` (this process's monotonic clock): the start
    /// then counts there, at the latest the database's clock can have read then, rather than in every window.
    /// Reporting twice keeps the first. Returns how long after the grant's instant the start counts, and how wide
    /// the bounds on the clocks' offset were then (a part of that lag).
    @discardableResult
    public func markWritten(_ grant: Grant, at instant: ContinuousClock.Instant) async throws -> StartReport {
        // The grant's own answer was a reading, so the bound is there; the lease's end is only a fallback.
        let (latest, uncertainty) = databaseClock.withLock {
            ($0.latestDatabaseTime(at: instant), $0.uncertainty(at: instant))
        }
        let writtenBy = latest ?? grant.leaseExpiresAt
        let secondsAfterStart = writtenBy.timeIntervalSince(grant.startedAt)
        _ = try await database.value(
            "budget write report", "SELECT lead_relay_budget_written(\(grant.id), \(secondsAfterStart))",
            as: Bool.self)
        return StartReport(lag: .seconds(secondsAfterStart), clockUncertainty: uncertainty)
    }

    /// Where a reported start counts.
    public struct StartReport: Sendable {
        /// From the grant's instant to the instant the start counts at, by the database's clock: every window of
        /// the budget is longer than `window + margin` by about this much.
        public let lag: Duration
        /// The width of the bounds on the clocks' offset at the report, included in `lag`.
        public let clockUncertainty: Duration?
    }

    /// Ends the grant's lease; its start still counts in the window. Releasing twice is harmless.
    public func release(_ grant: Grant) async throws {
        _ = try await database.value(
            "budget release", "SELECT lead_relay_budget_release(\(grant.id))", as: Bool.self)
    }

    /// Holds every start of the budget, every relay's, for `duration` from when the database has the hold (the
    /// API's `Retry-After`, which is its answer to the credentials the relays share); a hold ending later stays.
    /// Returns when the hold ends, by the database's clock. A grant decided before the hold landed may still start.
    @discardableResult
    public func hold(for duration: Duration) async throws -> Date? {
        try await database.value(
            "budget hold", "SELECT lead_relay_budget_hold(\(configuration.budgetKey), \(duration.seconds))",
            as: Date.self)
    }

    /// Whether the database answers and the budget's table is there (for a readiness check).
    public func checkHealth() async throws {
        _ = try await database.value(
            "budget health check", "SELECT 1 FROM lead_relay_budget_grants LIMIT 1", as: Int32.self)
    }
}
