/// Granted by a `RequestBudget`'s `acquire()`; report the write with `markStarted(_:at:)` and give it back with
/// `release(_:)` when the request is over.
public struct BudgetPermit: Sendable {
    /// How long the caller waited for it.
    public let waited: Duration
    /// When the budget lets the request go: its head is not written before it (the transport waits for it). The
    /// permit may be handed over up to `handOverAhead` earlier.
    public let grantedAt: ContinuousClock.Instant
    /// The budget's own name for the permit.
    public let id: UInt64

    public init(waited: Duration, grantedAt: ContinuousClock.Instant, id: UInt64) {
        self.waited = waited
        self.grantedAt = grantedAt
        self.id = id
    }
}

extension BudgetPermit {
    /// How long before its instant a budget may hand a permit over. The caller builds the request meanwhile and
    /// waits the rest on the event loop that writes it: a task's sleep overshoots by up to a millisecond or so, and
    /// each window of the budget would last that much longer.
    public static let handOverAhead = Duration.milliseconds(3)
}

/// The API's budget, as the client asks it before every request: `RateBudget` within one process, or one shared by
/// several relays, which the layer above provides.
public protocol RequestBudget: Sendable {
    /// Waits for a start, and returns at most `BudgetPermit.handOverAhead` before the permit's `grantedAt`. Throws
    /// `CancellationError` when the calling task is cancelled first.
    func acquire() async throws -> BudgetPermit
    /// The API had the permit's request by `instant`: its head's write to a connection the API has read from
    /// before, or its answer's arrival on a new connection. The start the API counts, within the margin.
    func markStarted(_ permit: BudgetPermit, at instant: ContinuousClock.Instant)
    /// Ends a request started with `acquire()`, or gives back a permit that was not used.
    func release(_ permit: BudgetPermit)
    /// Holds every start until `instant` (a `Retry-After`). A later hold extends an earlier one.
    func hold(until instant: ContinuousClock.Instant)
    /// The budget as it stands, for the status page.
    func snapshot() -> BudgetSnapshot
}

/// A budget as it stands: what `GET /status` shows of it.
public struct BudgetSnapshot: Sendable, Equatable {
    /// `process` for a budget of this relay's own, `shared` for one shared through a database.
    public var scope: String
    /// Requests of this relay holding a permit.
    public var inFlight: Int
    /// Of the whole group sharing the budget, as its last grant counted them; nil for a budget of its own.
    public var groupInFlight: Int?
    /// This relay's starts in the last window (those not yet written count too).
    public var startsInLastWindow: Int
    /// Callers waiting for a permit.
    public var waiting: Int
    /// What is left of a `Retry-After` hold; nil when none holds.
    public var holdRemaining: Duration?

    public init(
        scope: String, inFlight: Int, groupInFlight: Int?, startsInLastWindow: Int, waiting: Int,
        holdRemaining: Duration?
    ) {
        self.scope = scope
        self.inFlight = inFlight
        self.groupInFlight = groupInFlight
        self.startsInLastWindow = startsInLastWindow
        self.waiting = waiting
        self.holdRemaining = holdRemaining
    }
}
