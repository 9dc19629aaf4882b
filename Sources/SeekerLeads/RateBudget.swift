import Metrics
import Synchronization

/// The API's budget shared by every caller in the process: at most `maxInFlight` requests
/// outstanding and at most `rateLimit` starts in any sliding window of `window + margin`.
///
/// Callers are served first come, first served. A waiting caller that is cancelled leaves the queue
/// at once. When the next start is held back only by time, one timer wakes the queue at the exact
/// instant the oldest start of the window expires, so no start is lost to polling.
public final class RateBudget: Sendable {
    /// Granted by `acquire()`; give it back with `release()` when the request is over.
    public struct Permit: Sendable {
        /// How long the caller waited for it.
        public let waited: Duration
        /// When the budget let the request start.
        public let startedAt: ContinuousClock.Instant
    }

    private typealias Waiter = CheckedContinuation<ContinuousClock.Instant, any Error>

    private struct State {
        var inFlight = 0
        /// The most recent starts, oldest first; never more than `rateLimit`.
        var recentStarts: [ContinuousClock.Instant] = []
        var recentStartsHead = 0
        var heldUntil: ContinuousClock.Instant?
        /// Waiter ids in arrival order; ids whose waiter was cancelled stay until they reach the head.
        var queue: [UInt64] = []
        var queueHead = 0
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiterID: UInt64 = 0
        var timerDeadline: ContinuousClock.Instant?
    }

    public let configuration: RateBudgetConfiguration
    private let state = Mutex(State())
    private let clock = ContinuousClock()
    private let waitTimer = Timer(label: "lead_relay_budget_wait_seconds")

    public init(configuration: RateBudgetConfiguration) {
        self.configuration = configuration
    }

    /// Waits for a start. Throws `CancellationError` when the calling task is cancelled first.
    public func acquire() async throws -> Permit {
        let arrival = clock.now
        let immediate = state.withLock { state -> ContinuousClock.Instant? in
            guard state.waiters.isEmpty, let earliest = earliestStart(state), earliest <= arrival else { return nil }
            recordStart(at: arrival, in: &state)
            return arrival
        }
        let startedAt: ContinuousClock.Instant
        if let immediate {
            startedAt = immediate
        } else {
            startedAt = try await enqueueAndWait()
        }
        let waited = startedAt - arrival
        waitTimer.recordNanoseconds(waited.nanosecondsValue)
        return Permit(waited: waited, startedAt: startedAt)
    }

    /// Ends a request started with `acquire()`.
    public func release() {
        let actions = state.withLock { state -> GrantActions in
            state.inFlight -= 1
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

    /// Runs `body` inside one permit.
    public func withPermit<Result: Sendable>(_ body: (Permit) async throws -> Result) async throws -> Result {
        let permit = try await acquire()
        defer { release() }
        return try await body(permit)
    }

    /// The number of requests currently holding a permit.
    public var inFlight: Int { state.withLock { $0.inFlight } }

    /// The number of callers waiting.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    // MARK: - Queue

    private func enqueueAndWait() async throws -> ContinuousClock.Instant {
        let waiterID = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Waiter) in
                let actions = state.withLock { state -> GrantActions? in
                    if Task.isCancelled { return nil }
                    state.waiters[waiterID] = continuation
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
            cancelled?.resume(throwing: CancellationError())
        }
    }

    private struct GrantActions {
        var granted: [(Waiter, ContinuousClock.Instant)] = []
        var armTimerAt: ContinuousClock.Instant?
    }

    /// Lets the queue's head start while the budget allows, then arms the timer when the head
    /// waits for time rather than for a release.
    private func grantWaiters(_ state: inout State) -> GrantActions {
        var actions = GrantActions()
        let now = clock.now
        while state.queueHead < state.queue.count {
            let waiterID = state.queue[state.queueHead]
            guard state.waiters[waiterID] != nil else {
                state.queueHead += 1
                continue
            }
            guard let earliest = earliestStart(state) else { break }
            guard earliest <= now else {
                if state.timerDeadline.map({ $0 > earliest }) ?? true {
                    state.timerDeadline = earliest
                    actions.armTimerAt = earliest
                }
                break
            }
            guard let waiter = state.waiters.removeValue(forKey: waiterID) else { break }
            state.queueHead += 1
            recordStart(at: now, in: &state)
            actions.granted.append((waiter, now))
        }
        if state.queueHead > 1024, state.queueHead * 2 > state.queue.count {
            state.queue.removeFirst(state.queueHead)
            state.queueHead = 0
        }
        return actions
    }

    private func perform(_ actions: GrantActions) {
        for (waiter, startedAt) in actions.granted {
            waiter.resume(returning: startedAt)
        }
        if let deadline = actions.armTimerAt {
            Task { [self] in
                try? await Task.sleep(until: deadline, tolerance: .zero, clock: clock)
                timerFired(deadline: deadline)
            }
        }
    }

    private func timerFired(deadline: ContinuousClock.Instant) {
        let actions = state.withLock { state -> GrantActions in
            if state.timerDeadline == deadline { state.timerDeadline = nil }
            return grantWaiters(&state)
        }
        perform(actions)
    }

    // MARK: - Budget arithmetic

    /// The earliest instant the next start is allowed by the window and any hold (possibly in the
    /// past), or nil when only a release can make room.
    private func earliestStart(_ state: State) -> ContinuousClock.Instant? {
        guard state.inFlight < configuration.maxInFlight else { return nil }
        var earliest = state.heldUntil
        if state.recentStarts.count - state.recentStartsHead >= configuration.rateLimit {
            let oldest = state.recentStarts[state.recentStartsHead]
            let windowEnd = oldest.advanced(by: configuration.window + configuration.margin)
            earliest = max(earliest ?? windowEnd, windowEnd)
        }
        return earliest ?? .zeroReference
    }

    private func recordStart(at instant: ContinuousClock.Instant, in state: inout State) {
        state.inFlight += 1
        state.recentStarts.append(instant)
        if state.recentStarts.count - state.recentStartsHead > configuration.rateLimit {
            state.recentStartsHead += 1
        }
        if state.recentStartsHead >= 64 {
            state.recentStarts.removeFirst(state.recentStartsHead)
            state.recentStartsHead = 0
        }
    }
}

extension ContinuousClock.Instant {
    /// An instant that every real instant is after: "no constraint".
    fileprivate static let zeroReference = ContinuousClock.now.advanced(by: .seconds(-1_000_000))
}

extension Duration {
    var nanosecondsValue: Int64 {
        let parts = components
        return parts.seconds &* 1_000_000_000 &+ parts.attoseconds / 1_000_000_000
    }
}
