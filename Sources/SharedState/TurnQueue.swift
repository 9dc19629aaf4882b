import Synchronization

/// Lets the tasks of this process through one at a time, first come first served; a task cancelled while it
/// waits leaves the queue at once with `CancellationError`.
///
/// The budget's acquirers queue here, so that only the first of them asks the database: waking every waiting
/// task of every relay at each release would make them all contend for the budget's lock to learn that one of
/// them may go.
final class TurnQueue: Sendable {
    private struct State {
        var busy = false
        var waiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        /// Waiters between taking their id and queueing their continuation.
        var arriving: Set<UInt64> = []
        /// Waiters cancelled before they were queued: their continuation is resumed as it arrives.
        var cancelledEarly: Set<UInt64> = []
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    func withTurn<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        try await enter()
        defer { leave() }
        return try await body()
    }

    private func enter() async throws {
        let id = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.arriving.insert(id)
            return id
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Decision { case enter, wait, cancel }
                let decision = state.withLock { state -> Decision in
                    state.arriving.remove(id)
                    if state.cancelledEarly.remove(id) != nil { return .cancel }
                    if !state.busy {
                        state.busy = true
                        return .enter
                    }
                    state.waiting.append((id, continuation))
                    return .wait
                }
                switch decision {
                case .enter: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                case .wait: break
                }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else {
                    // Not queued yet, or already let through (then the cancellation is the body's business).
                    if state.arriving.contains(id) { state.cancelledEarly.insert(id) }
                    return nil
                }
                return state.waiting.remove(at: index).continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    /// Hands the turn to the first waiter, or frees it.
    private func leave() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.waiting.isEmpty else {
                state.busy = false
                return nil
            }
            return state.waiting.removeFirst().continuation
        }
        next?.resume()
    }
}
