import Kafka
import Synchronization

/// Admits consumed records to processing in consumption order, at most `capacity` held at once; the rest wait in a
/// queue. Taking records never blocks, so the consumer's reader is always free for a revocation or a shutdown
/// however far behind the relay is; while a capacity's worth of records waits, fetching is held
/// (`onFetchHoldChange`), which bounds the queue to that plus what the consumer had buffered.
///
/// A record is begun in the offset tracker when it is admitted, under this type's lock: records of one partition
/// begin in offset order whichever thread admits them.
final class RecordAdmission<Work: Sendable>: Sendable {
    struct Entry: Sendable {
        var record: KafkaConsumerRecord
        var work: Work
    }

    private struct State {
        var held = 0
        var queue: [Entry] = []
        var queueHead = 0
        var externalHold = false
        var fetchHeld = false
        var drainWaiters: [CheckedContinuation<Void, Never>] = []

        var queued: Int { queue.count - queueHead }

        mutating func admit(capacity: Int, offsets: OffsetTracker) -> [Entry] {
            var admitted: [Entry] = []
            while held < capacity, queueHead < queue.count {
                let entry = queue[queueHead]
                queueHead += 1
                held += 1
                offsets.begin(
                    entry.record.topicPartition, offset: entry.record.offset, timestamp: entry.record.timestamp)
                admitted.append(entry)
            }
            if queueHead == queue.count {
                queue.removeAll(keepingCapacity: true)
                queueHead = 0
            } else if queueHead > 1024, queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            return admitted
        }

        /// The hold to apply, when it changed. Fetching stops once a whole capacity of records waits, and resumes only
        /// when none does: a hold at the first waiting record would pause and resume fetching many times a second on
        /// a fast path, and librdkafka discards and fetches again what it had prefetched each time.
        mutating func fetchHoldChange(capacity: Int) -> Bool? {
            let hold = externalHold || queued >= capacity || (fetchHeld && queued > 0)
            guard hold != fetchHeld else { return nil }
            fetchHeld = hold
            return hold
        }
    }

    private let capacity: Int
    private let offsets: OffsetTracker
    private let onFetchHoldChange: @Sendable (Bool) -> Void
    private let state = Mutex(State())

    init(capacity: Int, offsets: OffsetTracker, onFetchHoldChange: @escaping @Sendable (Bool) -> Void) {
        precondition(capacity > 0, "capacity must be positive")
        self.capacity = capacity
        self.offsets = offsets
        self.onFetchHoldChange = onFetchHoldChange
    }

    var heldCount: Int { state.withLock { $0.held } }

    /// Per partition, the records received and not yet admitted, and the first of them.
    func queuedByPartition() -> [TopicPartition: (count: Int, first: KafkaConsumerRecord)] {
        state.withLock { state in
            var queued: [TopicPartition: (count: Int, first: KafkaConsumerRecord)] = [:]
            for entry in state.queue[state.queueHead...] {
                let record = entry.record
                queued[record.topicPartition, default: (0, record)].count += 1
            }
            return queued
        }
    }
    var queuedCount: Int { state.withLock { $0.queued } }

    /// Queues `entries` behind those waiting; returns the ones admitted now, for the caller to start.
    func enqueue(_ entries: [Entry]) -> [Entry] {
        withState { state in
            state.queue.append(contentsOf: entries)
            return state.admit(capacity: capacity, offsets: offsets)
        }
    }

    /// One admitted record reached its end (outcome acknowledged, or abandoned); returns the records admitted in its
    /// place, for the caller to start.
    func release() -> [Entry] {
        let (admitted, drained) = withState { state -> ([Entry], [CheckedContinuation<Void, Never>]) in
            state.held -= 1
            let admitted = state.admit(capacity: capacity, offsets: offsets)
            guard state.held == 0 else { return (admitted, []) }
            defer { state.drainWaiters.removeAll() }
            return (admitted, state.drainWaiters)
        }
        for waiter in drained { waiter.resume() }
        return admitted
    }

    /// Drops the waiting records of `partitions` (all when nil): they were never begun, so they stay uncommitted
    /// and are delivered again. Returns how many were dropped.
    @discardableResult
    func discardQueued(of partitions: Set<TopicPartition>?) -> Int {
        withState { state in
            let before = state.queued
            let kept = state.queue[state.queueHead...].filter { entry in
                partitions.map { !$0.contains(entry.record.topicPartition) } ?? false
            }
            state.queue = Array(kept)
            state.queueHead = 0
            return before - state.queued
        }
    }

    /// Holds fetching for a reason of the caller's (the gates), on top of the queue's own.
    func holdFetching(_ hold: Bool) {
        withState { $0.externalHold = hold }
    }

    /// Returns when no record is held, or false when `deadline` passes or the task is cancelled first.
    func waitUntilNoneHeld(deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let drainedNow = self.state.withLock { state -> Bool in
                        if state.held == 0 { return true }
                        state.drainWaiters.append(continuation)
                        return false
                    }
                    if drainedNow { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let drained = await group.next() ?? false
            if !drained {
                let waiters = state.withLock { state in
                    defer { state.drainWaiters.removeAll() }
                    return state.drainWaiters
                }
                waiters.forEach { $0.resume() }
            }
            group.cancelAll()
            await group.waitForAll()
            return drained
        }
    }

    /// Applies the fetch hold under the lock, so that concurrent changes reach the consumer in order.
    private func withState<Result>(_ change: (inout State) -> Result) -> Result {
        state.withLock { state in
            let result = change(&state)
            if let hold = state.fetchHoldChange(capacity: capacity) { onFetchHoldChange(hold) }
            return result
        }
    }
}
