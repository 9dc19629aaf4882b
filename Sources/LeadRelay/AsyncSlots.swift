import Synchronization

/// A fixed number of slots taken and given back first come, first served, and a wait for all of them
/// to be free. The relay bounds with it the records it holds (so a backlog of any size costs a fixed
/// amount of memory, and shutdown can wait for them) and the attempts past its gates.
final class AsyncSlots: Sendable {
    private struct State {
        var count = 0
        var slotWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        precondition(capacity > 0, "capacity must be positive")
        self.capacity = capacity
    }

    var count: Int { state.withLock { $0.count } }

    /// Takes a slot, waiting while all are taken.
    func acquire() async {
        let acquired = state.withLock { state -> Bool in
            guard state.count < capacity else { return false }
            state.count += 1
            return true
        }
        if acquired { return }
        await withCheckedContinuation { continuation in
            let acquiredNow = state.withLock { state -> Bool in
                if state.count < capacity {
                    state.count += 1
                    return true
                }
                state.slotWaiters.append(continuation)
                return false
            }
            if acquiredNow { continuation.resume() }
        }
    }

    /// Gives a slot back: to the longest waiter if there is one, which then owns it.
    func release() {
        let (slotWaiter, drainWaiters) = state.withLock {
            state -> (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) in
            if !state.slotWaiters.isEmpty {
                return (state.slotWaiters.removeFirst(), [])
            }
            state.count -= 1
            guard state.count == 0 else { return (nil, []) }
            defer { state.drainWaiters.removeAll() }
            return (nil, state.drainWaiters)
        }
        slotWaiter?.resume()
        drainWaiters.forEach { $0.resume() }
    }

    /// Returns when no slot is taken, or after `timeout`; true when every record was released.
    func waitUntilEmpty(timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let emptyNow = self.state.withLock { state -> Bool in
                        if state.count == 0 { return true }
                        state.drainWaiters.append(continuation)
                        return false
                    }
                    if emptyNow { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            if !first { self.resumeDrainWaiters() }
            group.cancelAll()
            await group.waitForAll()
            return first
        }
    }

    private func resumeDrainWaiters() {
        let waiters = state.withLock { state in
            defer { state.drainWaiters.removeAll() }
            return state.drainWaiters
        }
        waiters.forEach { $0.resume() }
    }
}
