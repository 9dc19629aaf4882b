import Kafka
import Synchronization
import Testing

@testable import LeadRelay

/// Admission of consumed records: bounded, in order, never blocking, and holding fetching while records wait.
@Suite struct RecordAdmissionTests {
    let p0 = TopicPartition(topic: "leads.submitted", partition: 0)
    let p1 = TopicPartition(topic: "leads.submitted", partition: 1)

    func entries(_ partition: TopicPartition, _ offsets: Range<Int64>) -> [RecordAdmission<Int64>.Entry] {
        offsets.map { offset in
            .init(
                record: KafkaConsumerRecord(
                    topic: partition.topic, partition: partition.partition, offset: offset, key: nil, value: nil),
                work: offset)
        }
    }

    @Test func admitsUpToTheCapacityInOrderAndTheRestAsOthersFinish() {
        let offsets = OffsetTracker()
        let holds = Mutex<[Bool]>([])
        let admission = RecordAdmission<Int64>(capacity: 2, offsets: offsets) { hold in
            holds.withLock { $0.append(hold) }
        }
        #expect(admission.enqueue(entries(p0, 0..<3)).map(\.work) == [0, 1])
        #expect(holds.withLock { $0 }.isEmpty, "one record waiting does not hold fetching")
        let admitted = admission.enqueue(entries(p0, 3..<5))
        #expect(admitted.isEmpty)
        #expect(admission.heldCount == 2)
        #expect(admission.queuedCount == 3)
        #expect(holds.withLock { $0 } == [true], "a capacity of records waiting holds fetching")
        #expect(offsets.inFlightCount(p0) == 2, "admitted records are begun")

        #expect(admission.release().map(\.work) == [2])
        #expect(holds.withLock { $0 } == [true], "held until no record waits")
        #expect(admission.release().map(\.work) == [3])
        #expect(admission.release().map(\.work) == [4])
        #expect(holds.withLock { $0 } == [true, false], "the queue emptied: fetching resumes")
        #expect(admission.release().isEmpty)
        #expect(admission.release().isEmpty)
        #expect(admission.heldCount == 0)
    }

    @Test func discardingARevokedPartitionsWaitingRecordsKeepsTheOthersInOrder() {
        let admission = RecordAdmission<Int64>(capacity: 1, offsets: OffsetTracker()) { _ in }
        _ = admission.enqueue(entries(p0, 0..<3) + entries(p1, 10..<12) + entries(p0, 3..<4))
        #expect(admission.discardQueued(of: [p0]) == 3)
        #expect(admission.release().map(\.record.offset) == [10])
        #expect(admission.release().map(\.record.offset) == [11])
        #expect(admission.discardQueued(of: nil) == 0)
    }

    @Test func aCallersHoldAndTheQueuesHoldCombine() {
        let holds = Mutex<[Bool]>([])
        let admission = RecordAdmission<Int64>(capacity: 1, offsets: OffsetTracker()) { hold in
            holds.withLock { $0.append(hold) }
        }
        admission.holdFetching(true)
        _ = admission.enqueue(entries(p0, 0..<2))
        _ = admission.release()
        #expect(holds.withLock { $0 } == [true], "the gates still hold fetching after the queue emptied")
        admission.holdFetching(false)
        #expect(holds.withLock { $0 } == [true, false])
    }

    @Test func waitingForNoneHeldReturnsWhenTheLastIsReleasedAndFalseAtTheDeadline() async {
        let admission = RecordAdmission<Int64>(capacity: 4, offsets: OffsetTracker()) { _ in }
        _ = admission.enqueue(entries(p0, 0..<2))
        #expect(!(await admission.waitUntilNoneHeld(deadline: .now)), "two still held")
        async let drained = admission.waitUntilNoneHeld(deadline: .now + .seconds(600))
        _ = admission.release()
        _ = admission.release()
        #expect(await drained)
    }
}
