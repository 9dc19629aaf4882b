import Synchronization

/// Runs at most one body per key at a time; later callers with the same key wait their turn, first come first
/// served. Two records with one dedupe key in flight at once are thus never posted twice: the second waits for the
/// first, then finds its submission in the dedupe store.
///
/// Waiting is not interrupted by cancellation (the body sees it, through `Task.isCancelled`, once it runs): a
/// waiter that left early could not know whether the first record was posted. A key's entry lives only while a
/// body runs or waits for it.
public final class KeyedExclusivity: Sendable {
    private struct KeyState {
        /// Callers waiting for the key, in arrival order. The key is held while its state exists.
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let keys = Mutex<[String: KeyState]>([:])

    public init() {}

    public func withExclusiveAccess<T>(to key: String, _ body: () async throws -> T) async rethrows -> T {
        await acquire(key)
        defer { release(key) }
        return try await body()
    }

    /// The number of keys held or waited for; zero when idle.
    public var activeKeyCount: Int { keys.withLock { $0.count } }

    /// How many callers wait for `key` (not counting the holder).
    public func waitingCount(for key: String) -> Int { keys.withLock { $0[key]?.waiters.count ?? 0 } }

    private func acquire(_ key: String) async {
        let acquired = keys.withLock { states in
            guard states[key] == nil else { return false }
            states[key] = KeyState()
            return true
        }
        guard !acquired else { return }
        await withCheckedContinuation { continuation in
            let handedOver = keys.withLock { states in
                // The holder may have released the key between the two locks.
                guard states[key] != nil else {
                    states[key] = KeyState()
                    return true
                }
                states[key]?.waiters.append(continuation)
                return false
            }
            if handedOver { continuation.resume() }
        }
    }

    /// Hands the key straight to the first waiter, so that no newcomer can overtake it.
    private func release(_ key: String) {
        let next = keys.withLock { states -> CheckedContinuation<Void, Never>? in
            guard var state = states[key], !state.waiters.isEmpty else {
                states[key] = nil
                return nil
            }
            let first = state.waiters.removeFirst()
            states[key] = state
            return first
        }
        next?.resume()
    }
}
