import Foundation
import Kafka
import Testing

@testable import LeadRelay

@Suite struct OffsetTrackerTests {
    let p0 = TopicPartition(topic: "leads.submitted", partition: 0)
    let p1 = TopicPartition(topic: "leads.submitted", partition: 1)

    @Test func commitsUpToTheFirstUnfinishedRecord() {
        let tracker = OffsetTracker()
        for offset in Int64(10)..<15 { tracker.begin(p0, offset: offset) }
        #expect(tracker.committable().isEmpty)
        tracker.complete(p0, offset: 12)
        tracker.complete(p0, offset: 11)
        #expect(tracker.committable().isEmpty, "offset 10 is still in flight")
        tracker.complete(p0, offset: 10)
        #expect(tracker.committable() == [p0: 13])
        #expect(tracker.inFlightCount(p0) == 2)
        tracker.complete(p0, offset: 14)
        tracker.complete(p0, offset: 13)
        #expect(tracker.committable() == [p0: 15])
        #expect(tracker.inFlightCount(p0) == 0)
    }

    @Test func theOldestUnfinishedRecordIsTheCommitPointWithItsTimestamp() {
        let tracker = OffsetTracker()
        let written = Date(timeIntervalSince1970: 1_800_000_000)
        for offset in Int64(0)..<3 {
            tracker.begin(p0, offset: offset, timestamp: written.addingTimeInterval(Double(offset)))
        }
        tracker.complete(p0, offset: 1)
        #expect(tracker.unfinished()[p0] == UnfinishedRecords(inFlight: 2, oldestOffset: 0, oldestSince: written))
        tracker.complete(p0, offset: 0)
        #expect(
            tracker.unfinished()[p0]
                == UnfinishedRecords(inFlight: 1, oldestOffset: 2, oldestSince: written.addingTimeInterval(2)))
        tracker.complete(p0, offset: 2)
        #expect(tracker.unfinished()[p0] == UnfinishedRecords(inFlight: 0, oldestOffset: nil, oldestSince: nil))
    }

    @Test func abandoningTakesOnlyATailOfUnfinishedRecordsAndHoldsTheCommitBelowIt() {
        let tracker = OffsetTracker()
        for offset in Int64(0)..<8 { tracker.begin(p0, offset: offset) }
        tracker.begin(p1, offset: 0)
        tracker.complete(p0, offset: 0)
        tracker.complete(p0, offset: 3)
        var offered: [Int64] = []
        let abandoned = tracker.abandonTail(of: p0) { offset in
            offered.append(offset)
            return offset != 5
        }
        #expect(abandoned == 2)
        #expect(offered == [7, 6, 5], "offered newest first, and none after the first one kept")
        #expect(tracker.inFlightCount(p0) == 4, "1, 2, 4 and 5 still finish")
        #expect(tracker.inFlightCount(p1) == 1)
        for offset: Int64 in [1, 2, 4, 5] { tracker.complete(p0, offset: offset) }
        #expect(tracker.committable() == [p0: 6], "the abandoned 6 and 7 are delivered again")
        #expect(tracker.abandonTail(of: p0) { _ in true } == 0, "nothing unfinished is left above a finished record")
    }

    @Test func abandoningStopsAtAFinishedNewestRecord() {
        let tracker = OffsetTracker()
        for offset in Int64(0)..<3 { tracker.begin(p0, offset: offset) }
        tracker.complete(p0, offset: 2)
        #expect(tracker.abandonTail(of: p0) { _ in true } == 0, "abandoning 0 or 1 would publish 2 twice")
        #expect(tracker.inFlightCount(p0) == 2)
    }

    @Test func onlyPartitionsThatAdvancedSinceTheLastCommit() {
        let tracker = OffsetTracker()
        tracker.begin(p0, offset: 0)
        tracker.begin(p1, offset: 100)
        tracker.complete(p0, offset: 0)
        tracker.complete(p1, offset: 100)
        let first = tracker.committable()
        #expect(first == [p0: 1, p1: 101])
        #expect(tracker.committable() == first, "uncommitted offsets are offered again")
        tracker.markCommitted(first)
        #expect(tracker.committable().isEmpty)
        tracker.begin(p1, offset: 101)
        tracker.complete(p1, offset: 101)
        #expect(tracker.committable() == [p1: 102])
    }

    @Test func gapsInOffsetsDoNotHoldCommits() {
        let tracker = OffsetTracker()
        tracker.begin(p0, offset: 5)
        tracker.begin(p0, offset: 9)
        tracker.complete(p0, offset: 5)
        #expect(tracker.committable() == [p0: 9])
        tracker.complete(p0, offset: 9)
        #expect(tracker.committable() == [p0: 10])
    }

    @Test func removedPartitionsAreForgottenAndLateCompletionsIgnored() {
        let tracker = OffsetTracker()
        tracker.begin(p0, offset: 0)
        tracker.begin(p1, offset: 0)
        tracker.remove([p0])
        tracker.complete(p0, offset: 0)
        tracker.complete(p1, offset: 0)
        #expect(tracker.committable() == [p1: 1])
        #expect(tracker.inFlightCount(p0) == 0)
        #expect(tracker.totalInFlight == 0)
    }

    @Test func duplicateAndUnknownCompletionsAreHarmless() {
        let tracker = OffsetTracker()
        tracker.begin(p0, offset: 0)
        tracker.begin(p0, offset: 1)
        tracker.complete(p0, offset: 0)
        tracker.complete(p0, offset: 0)
        tracker.complete(p0, offset: 7)
        #expect(tracker.inFlightCount(p0) == 1)
        #expect(tracker.committable() == [p0: 1])
    }

    @Test func rewindStartsThePartitionOver() {
        let tracker = OffsetTracker()
        for offset in Int64(0)..<3 { tracker.begin(p0, offset: offset) }
        tracker.complete(p0, offset: 0)
        tracker.markCommitted(tracker.committable())
        tracker.begin(p0, offset: 1)
        tracker.complete(p0, offset: 1)
        #expect(tracker.committable() == [p0: 2])
    }

    @Test func manyRecordsOutOfOrderCompletion() {
        let tracker = OffsetTracker()
        let count: Int64 = 50_000
        for offset in 0..<count { tracker.begin(p0, offset: offset) }
        var order = Array(0..<count)
        var generator = SystemRandomNumberGenerator()
        order.shuffle(using: &generator)
        var highestContiguous: Int64 = 0
        var done = Set<Int64>()
        for (index, offset) in order.enumerated() {
            tracker.complete(p0, offset: offset)
            done.insert(offset)
            while done.contains(highestContiguous) { highestContiguous += 1 }
            if index % 997 == 0 {
                let expected: [TopicPartition: Int64] = highestContiguous == 0 ? [:] : [p0: highestContiguous]
                #expect(tracker.committable() == expected)
            }
        }
        #expect(tracker.committable() == [p0: count])
        #expect(tracker.inFlightCount(p0) == 0)
    }
}

@Suite struct LeadCommitmentTests {
    @Test func aCommittedLeadCannotBeAbandoned() {
        let commitment = LeadCommitment()
        #expect(commitment.commit())
        #expect(commitment.commit(), "committing twice (a retry) stays committed")
        #expect(!commitment.abandon())
    }

    @Test func anAbandonedLeadCannotBeCommitted() {
        let commitment = LeadCommitment()
        #expect(commitment.abandon())
        #expect(!commitment.abandon())
        #expect(!commitment.commit())
    }
}

/// What the relay waits for and remembers through the tracker: idle partitions, commits, finished records.
@Suite struct OffsetTrackerSignalTests {
    let p0 = TopicPartition(topic: "leads.submitted", partition: 0)
    let p1 = TopicPartition(topic: "leads.submitted", partition: 1)

    @Test func waitingForRevokedPartitionsEndsWithTheirLastCompletionNotWithOthers() async {
        let tracker = OffsetTracker()
        tracker.begin(p0, offset: 0)
        tracker.begin(p1, offset: 0)
        #expect(!(await tracker.waitUntilIdle([p0], deadline: .now)), "p0 still has a record in flight")
        async let idle = tracker.waitUntilIdle([p0], deadline: .now + .seconds(600))
        tracker.complete(p0, offset: 0)
        #expect(await idle)
        #expect(tracker.inFlightCount(p1) == 1)
    }

    @Test func aPartitionTakenAwayUncommittedAndGivenBackSkipsWhatWasFinishedHere() {
        let tracker = OffsetTracker()
        func record(_ offset: Int64) -> KafkaConsumerRecord {
            KafkaConsumerRecord(topic: p0.topic, partition: p0.partition, offset: offset, key: nil, value: nil)
        }
        #expect(tracker.finishedBeforeRevocation([record(0)]) == nil, "nothing remembered: no per-record work")
        for offset in Int64(0)..<4 { tracker.begin(p0, offset: offset) }
        for offset in Int64(0)..<3 { tracker.complete(p0, offset: offset) }
        #expect(tracker.remove([p0]) == 3, "three finished above the (absent) commit")
        #expect(
            tracker.finishedBeforeRevocation([record(1), record(2), record(3), record(1)]) == [
                true, true, false, false,
            ])
        #expect(tracker.finishedBeforeRevocation([record(0)]) == nil, "the first record past the point ends it")
    }

    /// The completion may come at any moment of the committer's going to sleep, also between its look at the
    /// offsets and its wait; each time it must be woken.
    @Test func noCompletionIsMissedByACommitterGoingToSleep() async {
        let tracker = OffsetTracker()
        for offset in Int64(0)..<300 {
            tracker.begin(p0, offset: offset)
            let woken = await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    await tracker.waitUntilCommittable()
                    return !Task.isCancelled
                }
                group.addTask {
                    tracker.complete(p0, offset: offset)
                    // Only bounds a failing test: a missed completion leaves the committer asleep.
                    try? await Task.sleep(for: .seconds(30))
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            #expect(woken, "offset \(offset)")
            guard woken else { return }
            tracker.markCommitted(tracker.committable())
        }
    }

    @Test func theCommitterIsWokenByACompletionThatMakesSomethingCommittable() async {
        let tracker = OffsetTracker()
        tracker.begin(p0, offset: 5)
        tracker.begin(p0, offset: 6)
        async let woken: Void = tracker.waitUntilCommittable()
        tracker.complete(p0, offset: 6)
        #expect(tracker.committable().isEmpty, "6 waits for 5")
        tracker.complete(p0, offset: 5)
        await woken
        #expect(tracker.committable() == [p0: 7])
    }
}
