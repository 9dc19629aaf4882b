import Crypto
import Logging
import PostgresNIO
import Synchronization

/// Wakes the tasks waiting in this process for a database notification on one channel: a claim ended, a budget
/// lease was released. Notifications carry `md5(subject)` (a payload is limited to 8000 bytes, a dedupe key is not).
///
/// A notification is only ever a hint to look again, never an answer: PostgreSQL drops notifications for a
/// channel while nobody listens (this process's listening connection lost and not yet re-established), so every
/// wait is also bounded by a time the waiter computes from what it knows. Whatever the database says, a waiter
/// wakes at the latest at that time; a notification only makes it sooner.
final class NotificationHub: Sendable {
    private struct Waiter {
        let tag: String
        let continuation: AsyncStream<Void>.Continuation
    }

    private struct State {
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        /// Waiters whose check said to wait, until their wait ends.
        var parked = 0
    }

    let channel: String
    private let state = Mutex(State())

    init(channel: String) {
        self.channel = channel
    }

    /// The payload the database sends for `subject`: `md5(subject)` in hex, as PostgreSQL's `md5(text)` computes it
    /// over the database's encoding (UTF-8).
    static func tag(for subject: String) -> String {
        Insecure.MD5.hash(data: Array(subject.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// Listens on the channel through one connection of the database's client until the task is cancelled,
    /// listening again `reconnectDelay` after the connection is lost. Every waiter is woken whenever listening
    /// (re)starts, since notifications sent meanwhile were lost.
    func listen(through database: SharedDatabase, reconnectDelay: Duration) async {
        while !Task.isCancelled {
            do {
                try await database.client.withConnection { connection in
                    try await connection.listen(on: channel) { notifications in
                        wakeAll()
                        for try await notification in notifications {
                            wake(tag: notification.payload)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                database.logger.debug(
                    "shared state: listening for notifications failed; listening again",
                    metadata: [
                        "channel": "\(channel)", "error": "\(SharedStateError(operation: "listen", cause: error))",
                    ])
            }
            try? await Task.sleep(for: reconnectDelay)
        }
    }

    /// Runs `check`, then waits for as long as it says, or until a notification for `subject` arrives, whichever is
    /// first; with no time from `check`, returns at once. The waiter is registered before `check` runs, so a
    /// notification sent while it runs (the moment its answer is out of date) ends the wait too.
    func wait(for subject: String, after check: () async throws -> Duration?) async throws {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.waiters[id] = Waiter(tag: Self.tag(for: subject), continuation: continuation)
            return id
        }
        defer { _ = state.withLock { $0.waiters.removeValue(forKey: id) } }
        guard let timeout = try await check() else { return }
        state.withLock { $0.parked += 1 }
        defer { state.withLock { $0.parked -= 1 } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in stream { return }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// The tasks waiting now, past their check.
    var parked: Int { state.withLock { $0.parked } }

    private func wake(tag: String) {
        let woken = state.withLock { state in state.waiters.values.filter { $0.tag == tag } }
        for waiter in woken { waiter.continuation.yield() }
    }

    private func wakeAll() {
        let woken = state.withLock { state in Array(state.waiters.values) }
        for waiter in woken { waiter.continuation.yield() }
    }
}
