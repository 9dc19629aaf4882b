import Metrics
import RelayPrimitives
import Synchronization

/// The API's budget shared by every caller in the process: at most `maxInFlight` requests
/// outstanding and at most `rateLimit` starts in any sliding window of `window + margin`, spread
/// evenly over it.
///
/// A start is the instant the request head reaches the socket, because that is (within the
/// loopback or network delay) when the API counts it; the instant the budget decides is earlier by
/// a scheduling delay of unknown length. So a permit takes a slot in the window when it is granted,
/// and `markStarted(_:at:)` moves the slot to the instant of the write (or, for a request written on a
/// connection the API has not read from before, to its answer's arrival: `ProvenConnections`). Until then the
/// slot counts as inside every window, so no later start can be granted against a write that has not happened.
///
/// Callers are served first come, first served. A waiting caller that is cancelled leaves the queue
/// at once. When the next start is held back only by time, one timer wakes the queue at the exact
/// instant the window allows it, so no start is lost to polling.
public final class RateBudget: RequestBudget {
    public typealias Permit = BudgetPermit

    private typealias Waiter = CheckedContinuation<Permit, any Error>

    /// One start in the sliding window.
    private struct Slot {
        let id: UInt64
        /// The grant instant until the write is reported, then the write instant.
        var startedAt: ContinuousClock.Instant
        var written: Bool
    }

    private struct State {
        var inFlight = 0
        /// Starts that can still constrain a future start, in grant order.
        var slots: [Slot] = []
        var nextSlotID: UInt64 = 0
        var heldUntil: ContinuousClock.Instant?
        /// Waiter ids in arrival order; ids whose waiter was cancelled stay until they reach the head.
        var queue: [UInt64] = []
        var queueHead = 0
        var waiters: [UInt64: (waiter: Waiter, arrival: ContinuousClock.Instant)] = [:]
        var nextWaiterID: UInt64 = 0
        var timerDeadline: ContinuousClock.Instant?
        /// The instant pacing counts the last grant at: its due instant when the timer fired up to half a step
        /// late, so that lateness does not add up grant after grant.
        var pacedFrom: ContinuousClock.Instant?
    }

    public let configuration: RateBudgetConfiguration
    private let state = Mutex(State())
    private let clock = ContinuousClock()
    private let waitTimer = Timer(label: "lead_relay_budget_wait_seconds")
    private let timerLateness = Timer(label: "lead_relay_budget_timer_lateness_seconds")

    public init(configuration: RateBudgetConfiguration) {
        self.configuration = configuration
    }

    /// Waits for a start. Throws `CancellationError` when the calling task is cancelled first.
    public func acquire() async throws -> Permit {
        let arrival = clock.now
        let immediate = state.withLock { state -> Permit? in
            guard state.waiters.isEmpty, let earliest = earliestStart(&state, now: arrival), earliest <= arrival else {
                return nil
            }
            return grant(arrivedAt: arrival, now: arrival, in: &state)
        }
        let permit: Permit
        if let immediate {
            permit = immediate
        } else {
            permit = try await enqueueAndWait(arrival: arrival)
        }
        waitTimer.recordNanoseconds(permit.waited.nanosecondsValue)
        return permit
    }

    /// Moves the permit's start to `instant`, when its request head was written to the socket.
    /// Call at most once per permit, before `release(_:)`.
    public func markStarted(_ permit: Permit, at instant: ContinuousClock.Instant) {
        let actions = state.withLock { state -> GrantActions in
            guard let index = state.slots.firstIndex(where: { $0.id == permit.id }) else { return GrantActions() }
            state.slots[index].startedAt = max(state.slots[index].startedAt, instant)
            state.slots[index].written = true
            return grantWaiters(&state)
        }
        perform(actions)
    }

    /// Ends a request started with `acquire()`. A request whose write was never reported may still
    /// have reached the API at any moment until now, so its start counts as now.
    public func release(_ permit: Permit) {
        let now = clock.now
        let actions = state.withLock { state -> GrantActions in
            state.inFlight -= 1
            if let index = state.slots.firstIndex(where: { $0.id == permit.id }), !state.slots[index].written {
                state.slots[index].startedAt = now
                state.slots[index].written = true
            }
            return grantWaiters(&state)
        }
        perform(actions)
    }

    /// Holds every start until `instant` (a `Retry-After`). A later hold extends an earlier one.
    public func hold(until instant: ContinuousClock.Instant) {
        let actions = state.withLock { state -> GrantActions in
            if let heldUntil = state.heldUntil, heldUntil >= instant { return GrantActions() }
            state.heldUntil = instant
            return grantWaiters(&state)
        }
        perform(actions)
    }

    /// The number of requests currently holding a permit.
    public var inFlight: Int { state.withLock { $0.inFlight } }

    /// The number of callers waiting.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    public func snapshot() -> BudgetSnapshot {
        let now = clock.now
        return state.withLock { state in
            BudgetSnapshot(
                scope: "process", inFlight: state.inFlight, groupInFlight: nil,
                startsInLastWindow: state.slots.count {
                    !$0.written || $0.startedAt.advanced(by: configuration.window) > now
                },
                waiting: state.waiters.count,
                holdRemaining: state.heldUntil.flatMap { $0 > now ? $0 - now : nil })
        }
    }

    // MARK: - Queue

    private func enqueueAndWait(arrival: ContinuousClock.Instant) async throws -> Permit {
        let waiterID = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Waiter) in
                let actions = state.withLock { state -> GrantActions? in
                    if Task.isCancelled { return nil }
                    state.waiters[waiterID] = (continuation, arrival)
                    state.queue.append(waiterID)
                    return grantWaiters(&state)
                }
                if let actions {
                    perform(actions)
                } else {
                    continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let cancelled = state.withLock { state in state.waiters.removeValue(forKey: waiterID) }
            cancelled?.waiter.resume(throwing: CancellationError())
        }
    }

    private struct GrantActions {
        var granted: [(Waiter, Permit)] = []
        var armTimerAt: ContinuousClock.Instant?
    }

    /// Lets the queue's head start while the budget allows, then arms the timer when the head
    /// waits for time rather than for a write report or a release.
    private func grantWaiters(_ state: inout State) -> GrantActions {
        var actions = GrantActions()
        let now = clock.now
        while state.queueHead < state.queue.count {
            let waiterID = state.queue[state.queueHead]
            guard state.waiters[waiterID] != nil else {
                state.queueHead += 1
                continue
            }
            guard let earliest = earliestStart(&state, now: now) else { break }
            guard earliest <= now else {
                if state.timerDeadline.map({ $0 > earliest }) ?? true {
                    state.timerDeadline = earliest
                    actions.armTimerAt = earliest
                }
                break
            }
            guard let (waiter, arrival) = state.waiters.removeValue(forKey: waiterID) else { break }
            state.queueHead += 1
            actions.granted.append((waiter, grant(arrivedAt: arrival, now: now, in: &state)))
        }
        if state.queueHead > 1024, state.queueHead * 2 > state.queue.count {
            state.queue.removeFirst(state.queueHead)
            state.queueHead = 0
        }
        return actions
    }

    private func perform(_ actions: GrantActions) {
        for (waiter, permit) in actions.granted {
            waiter.resume(returning: permit)
        }
        if let deadline = actions.armTimerAt {
            Task { [self] in
                try? await Task.sleep(until: deadline, tolerance: .zero, clock: clock)
                timerFired(deadline: deadline)
            }
        }
    }

    private func timerFired(deadline: ContinuousClock.Instant) {
        timerLateness.recordNanoseconds((clock.now - deadline).nanosecondsValue)
        let actions = state.withLock { state -> GrantActions in
            if state.timerDeadline == deadline { state.timerDeadline = nil }
            return grantWaiters(&state)
        }
        perform(actions)
    }

    // MARK: - Budget arithmetic

    /// The earliest instant the next start is allowed by the window and any hold (possibly in the
    /// past), or nil when only a write report or a release can make room. Forgets slots that can
    /// no longer constrain a start at or after `now`.
    private func earliestStart(_ state: inout State, now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        guard state.inFlight < configuration.maxInFlight else { return nil }
        let span = configuration.window + configuration.margin
        state.slots.removeAll { $0.written && $0.startedAt.advanced(by: span) <= now }
        let unwritten = state.slots.count { !$0.written }
        guard unwritten < configuration.rateLimit else { return nil }
        // The new start needs fewer than `rateLimit` slots inside the window ending at it; unwritten
        // slots are inside every window, so the written ones may contribute `rateLimit - unwritten - 1`.
        // It can go once the `(rateLimit - unwritten)`-th most recent write leaves the window.
        let allowedWritten = configuration.rateLimit - unwritten
        var earliest = state.heldUntil
        // Grants are spread evenly, one per `span / rateLimit`, instead of going out in bursts: the API reads
        // a burst one request after another, in an order that can differ from one burst to the next, and that
        // moves the instants it counts by more than the margin covers. Pacing runs from the grants, not the
        // writes, so the delay before each write is not added to every step; the window above still counts writes.
        if let pacedFrom = state.pacedFrom {
            let paced = pacedFrom.advanced(by: pacingStep)
            earliest = max(earliest ?? paced, paced)
        }
        let writes = state.slots.lazy.filter(\.written).map(\.startedAt)
        if writes.count >= allowedWritten {
            let bounding = writes.sorted(by: >)[allowedWritten - 1]
            let windowEnd = bounding.advanced(by: span)
            earliest = max(earliest ?? windowEnd, windowEnd)
        }
        return earliest ?? .zeroReference
    }

    private var pacingStep: Duration { (configuration.window + configuration.margin) / configuration.rateLimit }

    private func grant(arrivedAt arrival: ContinuousClock.Instant, now: ContinuousClock.Instant, in state: inout State)
        -> Permit
    {
        state.inFlight += 1
        let step = pacingStep
        state.pacedFrom = state.pacedFrom.map { max($0.advanced(by: step), now.advanced(by: step / -2)) } ?? now
        state.nextSlotID += 1
        state.slots.append(Slot(id: state.nextSlotID, startedAt: now, written: false))
        return Permit(waited: now - arrival, grantedAt: now, id: state.nextSlotID)
    }
}

extension ContinuousClock.Instant {
    /// An instant that every real instant is after: "no constraint".
    fileprivate static let zeroReference = ContinuousClock.now.advanced(by: .seconds(-1_000_000))
}
