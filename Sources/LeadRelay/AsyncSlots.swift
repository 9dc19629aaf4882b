import Synchronization

/// A fixed number of slots taken and given back first come, first served. The relay bounds with it the attempts
/// past its gates.
final class AsyncSlots: Sendable {
    private struct State {
        var count = 0
        var nextWaiterID = 0
        var waiters: [(id: Int, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        precondition(capacity > 0, "capacity must be positive")
        self.capacity = capacity
    }

    var count: Int { state.withLock { $0.count } }

    /// Takes a slot, waiting while all are taken; throws `CancellationError` when the task is cancelled first.
    func acquire() async throws {
        let acquired = state.withLock { state -> Bool in
            guard state.count < capacity else { return false }
            state.count += 1
            return true
        }
        if acquired { return }
        let id = state.withLock { state in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if state.count < capacity {
                        state.count += 1
                        return .success(())
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    /// Gives a slot back: to the longest waiter if there is one, which then owns it.
    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if !state.waiters.isEmpty { return state.waiters.removeFirst().continuation }
            state.count -= 1
            return nil
        }
        waiter?.resume()
    }
}
