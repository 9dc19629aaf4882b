import Foundation
import Kafka
import Synchronization

/// Which offsets may be committed: per partition, up to the first record whose outcome is not yet acknowledged.
///
/// Records of one partition begin in offset order (gaps allowed: compaction and transaction markers leave them),
/// and complete in any order. Each call is O(1) amortised, except `complete` which is O(log n) in the records of
/// its partition still in flight.
public final class OffsetTracker: Sendable {
    private struct PartitionState {
        /// Offsets begun and not yet passed by the committable point, ascending; `done` marks the completed ones.
        var offsets: [Int64] = []
        var done: [Bool] = []
        /// Per entry of `offsets`, the record's timestamp (else when it was begun), in seconds since 1970.
        var since: [Double] = []
        /// Index of the first live entry in `offsets`/`done`; the prefix before it is dead and reclaimed lazily.
        var head = 0
        var inFlight = 0
        /// The offset after the last completed record of the committable prefix, once one exists.
        var committable: Int64?
        var committed: Int64?
        /// Records from this offset on were abandoned (shutdown or revocation): they never complete.
        var abandonedFrom: Int64?
        /// The first offset begun, the commit point until a commit happened.
        var firstBegun: Int64?

        mutating func begin(_ offset: Int64, since timestamp: Double) {
            if let last = offsets.last, head < offsets.count, offset <= last {
                // The consumer was rewound (a seek, or the partition came back): start over from here.
                self = PartitionState(committed: committed)
            } else if let committable, head == offsets.count, offset < committable {
                self = PartitionState(committed: committed)
            }
            offsets.append(offset)
            done.append(false)
            since.append(timestamp)
            inFlight += 1
            if firstBegun == nil { firstBegun = offset }
        }

        /// Records completed above the last commit (as offsets: gaps count too).
        var completedUncommitted: Int64 {
            guard let committable, let base = committed ?? firstBegun else { return 0 }
            return max(0, committable - base)
        }

        mutating func complete(_ offset: Int64) {
            if let abandonedFrom, offset >= abandonedFrom { return }
            guard let index = index(of: offset), !done[index] else { return }
            done[index] = true
            inFlight -= 1
            while head < offsets.count, done[head] {
                committable = offsets[head] + 1
                head += 1
            }
            if head < offsets.count {
                // The first pending record bounds the commit, also when offsets were skipped before it.
                if let current = committable, offsets[head] > current { committable = offsets[head] }
            }
            if head > 1024, head * 2 > offsets.count {
                offsets.removeFirst(head)
                done.removeFirst(head)
                since.removeFirst(head)
                head = 0
            }
        }

        /// See `OffsetTracker.abandonTail`.
        mutating func abandonTail(_ abandon: (Int64) -> Bool) -> Int {
            var abandoned = 0
            var index = offsets.count - 1
            if let abandonedFrom {
                while index >= head, offsets[index] >= abandonedFrom { index -= 1 }
            }
            while index >= head, !done[index], abandon(offsets[index]) {
                abandonedFrom = offsets[index]
                inFlight -= 1
                abandoned += 1
                index -= 1
            }
            return abandoned
        }

        /// The first record not finished yet, unless it was abandoned.
        var oldestUnfinished: (offset: Int64, since: Double)? {
            guard head < offsets.count, abandonedFrom.map({ offsets[head] < $0 }) ?? true else { return nil }
            return (offsets[head], since[head])
        }

        private func index(of offset: Int64) -> Int? {
            var low = head
            var high = offsets.count
            while low < high {
                let middle = (low + high) / 2
                if offsets[middle] < offset { low = middle + 1 } else { high = middle }
            }
            return low < offsets.count && offsets[low] == offset ? low : nil
        }
    }

    private struct State {
        var partitions: [TopicPartition: PartitionState] = [:]
        /// Per partition taken away with finished records above its last commit: the offset below which every record
        /// had its outcome published here.
        var finishedUncommitted: [TopicPartition: Int64] = [:]
        var idleWaiters: [Int: IdleWaiter] = [:]
        var nextWaiterID = 0
        /// The committer, waiting for a completion.
        var completionWaiter: CheckedContinuation<Void, Never>?

        func committable() -> [TopicPartition: Int64] {
            var result: [TopicPartition: Int64] = [:]
            for (partition, partitionState) in partitions {
                guard let next = partitionState.committable else { continue }
                if let committed = partitionState.committed, committed >= next { continue }
                result[partition] = next
            }
            return result
        }

        /// The waiters whose partitions have no record in flight any more, removed.
        mutating func takeSatisfiedWaiters() -> [CheckedContinuation<Bool, Never>] {
            guard !idleWaiters.isEmpty else { return [] }
            var satisfied: [CheckedContinuation<Bool, Never>] = []
            for (id, waiter) in idleWaiters where waiter.partitions.allSatisfy({ (partitions[$0]?.inFlight ?? 0) == 0 })
            {
                satisfied.append(waiter.continuation)
                idleWaiters[id] = nil
            }
            return satisfied
        }
    }

    private struct IdleWaiter {
        var partitions: Set<TopicPartition>
        var continuation: CheckedContinuation<Bool, Never>
    }

    private let state = Mutex(State())

    public init() {}

    /// Runs `change` under the lock, then wakes the idle waiters it satisfied.
    private func update<Result>(_ change: (inout State) -> Result) -> Result {
        let (result, satisfied) = state.withLock { state in
            let result = change(&state)
            return (result, state.takeSatisfiedWaiters())
        }
        for waiter in satisfied { waiter.resume(returning: true) }
        return result
    }

    /// The record at `offset` was taken for processing; `timestamp` (the record's, else now) dates it for
    /// `unfinished()`.
    public func begin(_ partition: TopicPartition, offset: Int64, timestamp: Date? = nil) {
        let since = (timestamp ?? Date()).timeIntervalSince1970
        state.withLock { $0.partitions[partition, default: PartitionState()].begin(offset, since: since) }
    }

    /// Per partition with records begun: how many are in flight, and the oldest not finished.
    public func unfinished() -> [TopicPartition: UnfinishedRecords] {
        state.withLock { state in
            state.partitions.mapValues { partition in
                let oldest = partition.oldestUnfinished
                return UnfinishedRecords(
                    inFlight: partition.inFlight, oldestOffset: oldest?.offset,
                    oldestSince: oldest.map { Date(timeIntervalSince1970: $0.since) })
            }
        }
    }

    /// The record's outcome was acknowledged by the broker. Unknown offsets (of a removed partition) are ignored.
    public func complete(_ partition: TopicPartition, offset: Int64) {
        let waiter = update { state -> CheckedContinuation<Void, Never>? in
            state.partitions[partition]?.complete(offset)
            defer { state.completionWaiter = nil }
            return state.completionWaiter
        }
        waiter?.resume()
    }

    /// Returns once something is committable, or when the task is cancelled. For one caller at a time (the
    /// committer): it is woken by the completions themselves. Whether to wait is decided under the same lock as
    /// the waiter is stored, so a completion between a look and the wait cannot go unnoticed.
    public func waitUntilCommittable() async {
        await withTaskCancellationHandler {
            while !Task.isCancelled, committable().isEmpty {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { state -> Bool in
                        if Task.isCancelled || !state.committable().isEmpty { return true }
                        state.completionWaiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.completionWaiter = nil }
                return state.completionWaiter
            }?.resume()
        }
    }

    /// Per partition, the next offset to commit (every record below it is done), for the partitions where it
    /// moved past the last committed one.
    public func committable() -> [TopicPartition: Int64] {
        state.withLock { $0.committable() }
    }

    /// The offsets were committed: `committable()` leaves these partitions out until they move further.
    public func markCommitted(_ offsets: [TopicPartition: Int64]) {
        state.withLock { state in
            for (partition, offset) in offsets {
                guard var partitionState = state.partitions[partition] else { continue }
                partitionState.committed = max(partitionState.committed ?? offset, offset)
                state.partitions[partition] = partitionState
            }
        }
    }

    /// Forgets revoked partitions; their records' later completions are ignored. Returns how many completed
    /// records were above the last commit: their outcomes will be published again by the partitions' next owner,
    /// unless that is this relay (see `finishedBeforeRevocation`).
    @discardableResult
    public func remove(_ revoked: some Sequence<TopicPartition>) -> Int64 {
        update { state in
            var uncommitted: Int64 = 0
            for partition in revoked {
                if let partitionState = state.partitions[partition], partitionState.completedUncommitted > 0,
                    let point = partitionState.committable
                {
                    uncommitted += partitionState.completedUncommitted
                    state.finishedUncommitted[partition] = point
                }
                state.partitions[partition] = nil
            }
            return uncommitted
        }
    }

    /// Per record, whether its outcome was published here before its partition was taken away without the commit
    /// (the group refused it while rebalancing) and the partition came back: it needs no second outcome, only
    /// completing. nil when no record can be (the common case, answered without a lock per record). The first record
    /// past that point ends the memory of it.
    public func finishedBeforeRevocation(_ records: [KafkaConsumerRecord]) -> [Bool]? {
        state.withLock { state in
            guard !state.finishedUncommitted.isEmpty else { return nil }
            return records.map { record in
                guard let point = state.finishedUncommitted[record.topicPartition] else { return false }
                if record.offset < point { return true }
                state.finishedUncommitted[record.topicPartition] = nil
                return false
            }
        }
    }

    /// Offers the partition's unfinished records to `abandon`, newest first, and stops at the first that is done or
    /// that `abandon` keeps (returns false for). The abandoned records no longer count as in flight, and the
    /// commit point stays below them, so they are delivered again. Abandoning only a tail leaves no finished record
    /// above an abandoned one, so the next run publishes no outcome twice. Returns how many were abandoned.
    @discardableResult
    public func abandonTail(of partition: TopicPartition, _ abandon: (Int64) -> Bool) -> Int {
        update { $0.partitions[partition]?.abandonTail(abandon) ?? 0 }
    }

    /// The partitions with records begun and not yet passed by the commit point.
    public var partitionsWithRecords: [TopicPartition] {
        state.withLock { state in
            state.partitions.filter { $0.value.head < $0.value.offsets.count }.map(\.key)
        }
    }

    public func inFlightCount(_ partition: TopicPartition) -> Int {
        state.withLock { $0.partitions[partition]?.inFlight ?? 0 }
    }

    public var totalInFlight: Int {
        state.withLock { $0.partitions.values.reduce(0) { $0 + $1.inFlight } }
    }

    /// Returns true once no record of `partitions` is in flight (completed or abandoned), false when `deadline`
    /// passes or the task is cancelled first. Woken by the completions themselves, not by polling.
    public func waitUntilIdle(_ partitions: Set<TopicPartition>, deadline: ContinuousClock.Instant) async -> Bool {
        let id = state.withLock { state in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                        let immediate = self.state.withLock { state -> Bool? in
                            if Task.isCancelled { return false }
                            if partitions.allSatisfy({ (state.partitions[$0]?.inFlight ?? 0) == 0 }) { return true }
                            state.idleWaiters[id] = IdleWaiter(partitions: partitions, continuation: continuation)
                            return nil
                        }
                        if let immediate { continuation.resume(returning: immediate) }
                    }
                } onCancel: {
                    self.state.withLock { $0.idleWaiters.removeValue(forKey: id) }?.continuation.resume(
                        returning: false)
                }
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let idle = await group.next() ?? false
            group.cancelAll()
            return idle
        }
    }
}

/// `OffsetTracker.unfinished()`, for one partition.
public struct UnfinishedRecords: Sendable, Equatable {
    public var inFlight: Int
    /// The first record without an acknowledged outcome: the commit point.
    public var oldestOffset: Int64?
    /// Its timestamp (else when it was begun).
    public var oldestSince: Date?
}
