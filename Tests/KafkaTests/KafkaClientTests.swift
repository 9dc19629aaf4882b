import Foundation
import Kafka
import Synchronization
import TestSupport
import Testing

@Suite struct KafkaClientTests {
    @Test func produceThenConsumeKeepsKeyValueAndHeadersByteForByte() async throws {
        let cluster = try MockCluster(brokers: 3, logger: testLogger)
        let topic = uniqueName("bytes")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        let allBytes = (0...255).map { UInt8($0) }
        let sent: [(key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader])] = [
            (
                allBytes, allBytes.reversed(),
                [
                    KafkaHeader(key: "binary", value: [0, 255, 0, 10, 13]),
                    KafkaHeader(key: "null", value: nil),
                    KafkaHeader(key: "empty", value: []),
                ]
            ),
            ([], [], []),
            (nil, nil, [KafkaHeader(key: "twice", value: [1]), KafkaHeader(key: "twice", value: [2])]),
            (Array("key".utf8), [0], []),
        ]
        for (index, message) in sent.enumerated() {
            let report = try await producer.send(
                topic: topic, partition: 0, key: message.key, value: message.value, headers: message.headers)
            #expect(report.topic == topic)
            #expect(report.partition == 0)
            #expect(report.offset == Int64(index))
        }
        await producer.close()

        let consumer = try KafkaConsumer(
            configuration: consumerConfiguration(cluster), groupID: uniqueName("group"), logger: testLogger)
        let collector = EventCollector(consumer)
        try consumer.subscribe(topics: [topic])
        try await waitUntil("all records") { collector.records.count >= sent.count }
        let received = collector.records
        #expect(received.count == sent.count)
        for (record, message) in zip(received, sent) {
            #expect(record.topic == topic)
            #expect(record.key == message.key)
            #expect(record.value == message.value)
            #expect(record.headers == message.headers)
            #expect(record.timestamp != nil)
        }
        #expect(received.map(\.offset) == [0, 1, 2, 3])
        try await consumer.close()
    }

    @Test func twoConsumersShareSixPartitionsAndTheSurvivorTakesAllWithoutLoss() async throws {
        let cluster = try MockCluster(brokers: 3, logger: testLogger)
        let topic = uniqueName("shared")
        try cluster.createTopic(topic, partitions: 6)
        let group = uniqueName("group")
        let allPartitions = Set((0..<6).map { TopicPartition(topic: topic, partition: $0) })

        func startConsumer() throws -> (KafkaConsumer, EventCollector) {
            let consumer = try KafkaConsumer(
                configuration: consumerConfiguration(cluster), groupID: group, logger: testLogger)
            let collector = EventCollector(consumer) { revoked, received in
                try? await boundedCommit(consumer, nextOffsets(of: received, in: revoked))
            }
            try consumer.subscribe(topics: [topic])
            return (consumer, collector)
        }
        let (first, firstCollector) = try startConsumer()
        try await waitUntil("first consumer owns six partitions") { first.assignment() == allPartitions }
        let (second, secondCollector) = try startConsumer()
        try await waitUntil("six partitions split between both") {
            let (a, b) = (first.assignment(), second.assignment())
            return !a.isEmpty && !b.isEmpty && a.isDisjoint(with: b) && a.union(b) == allPartitions
        }

        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        try await produce(to: topic, partitions: 6, perPartition: 50, tag: "before", with: producer)
        func consumedKeys() -> Set<String> {
            Set((firstCollector.records + secondCollector.records).map { "\($0.partition)/\($0.offset)" })
        }
        try await waitUntil("both consumers read the first 300") { consumedKeys().count == 300 }
        try await boundedCommit(first, nextOffsets(of: firstCollector.records, in: first.assignment()))
        try await first.close()
        try await waitUntil("the survivor owns all six") { second.assignment() == allPartitions }

        try await produce(to: topic, partitions: 6, perPartition: 50, tag: "after", with: producer)
        try await waitUntil("the survivor read the second 300") {
            secondCollector.records.filter {
                $0.value.map { String(decoding: $0, as: UTF8.self) }?.hasPrefix("after") == true
            }.count
                >= 300
        }
        await producer.close()
        let everything = firstCollector.records + secondCollector.records
        let expectedKeys = Set((0..<6).flatMap { partition in (0..<100).map { "\(partition)/\($0)" } })
        #expect(consumedKeys() == expectedKeys)
        #expect(everything.count == 600)
        #expect(Set(secondCollector.records.map(\.partition)) == Set(0..<6))
        try await second.close()
    }

    @Test func aRestartedConsumerResumesRightAfterItsLastCommit() async throws {
        let cluster = try MockCluster(brokers: 3, logger: testLogger)
        let topic = uniqueName("resume")
        try cluster.createTopic(topic, partitions: 1)
        let group = uniqueName("group")
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        try await produce(to: topic, partitions: 1, perPartition: 10, tag: "r", with: producer)
        await producer.close()
        let partition = TopicPartition(topic: topic, partition: 0)

        let first = try KafkaConsumer(configuration: consumerConfiguration(cluster), groupID: group, logger: testLogger)
        let firstCollector = EventCollector(first)
        try first.subscribe(topics: [topic])
        try await waitUntil("ten records") { firstCollector.records.count >= 10 }
        try await boundedCommit(first, [partition: 6])
        try await first.close()
        try await firstCollector.finished()

        let second = try KafkaConsumer(
            configuration: consumerConfiguration(cluster), groupID: group, logger: testLogger)
        let secondCollector = EventCollector(second)
        try second.subscribe(topics: [topic])
        try await waitUntil("the records after the commit") { secondCollector.records.count >= 4 }
        #expect(secondCollector.records.map(\.offset) == [6, 7, 8, 9])
        #expect(second.isInGroup)
        try await second.close()
        #expect(!second.isInGroup)
    }

    @Test func pauseStopsOnePartitionWhileOthersFlowAndResumeRestartsIt() async throws {
        let cluster = try MockCluster(brokers: 3, logger: testLogger)
        let topic = uniqueName("pause")
        try cluster.createTopic(topic, partitions: 3)
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        let consumer = try KafkaConsumer(
            configuration: consumerConfiguration(cluster), groupID: uniqueName("group"), logger: testLogger)
        let collector = EventCollector(consumer)
        try consumer.subscribe(topics: [topic])
        try await produce(to: topic, partitions: 3, perPartition: 1, tag: "warm-up", with: producer)
        try await waitUntil("one record per partition") { collector.records.count >= 3 }

        let paused = TopicPartition(topic: topic, partition: 0)
        consumer.pause([paused])
        func offsets(of partition: Int32) -> [Int64] {
            collector.records.filter { $0.partition == partition }.map(\.offset)
        }
        try await produce(to: topic, partitions: 3, perPartition: 5, tag: "paused", with: producer)
        try await waitUntil("the other partitions flow") { offsets(of: 1).count >= 6 && offsets(of: 2).count >= 6 }
        // A second round on the flowing partitions gives the paused one time to (wrongly) deliver too.
        try await produce(to: topic, partitions: 3, perPartition: 5, tag: "paused-again", with: producer)
        try await waitUntil("the other partitions flow again") {
            offsets(of: 1).count >= 11 && offsets(of: 2).count >= 11
        }
        #expect(offsets(of: 0) == [0])

        consumer.resume([paused])
        try await waitUntil("the paused partition resumes") { offsets(of: 0).count >= 11 }
        #expect(offsets(of: 0) == Array(0...10))
        #expect(offsets(of: 1) == Array(0...10))
        try await waitUntil("lag known for all partitions") { consumer.lag().count == 3 }
        #expect(
            consumer.lag() == [paused: 0, .init(topic: topic, partition: 1): 0, .init(topic: topic, partition: 2): 0])
        await producer.close()
        try await consumer.close()
    }

    @Test func everyAcknowledgedRecordIsConsumedExactlyOnceAcrossABrokerOutage() async throws {
        let cluster = try MockCluster(brokers: 3, logger: testLogger)
        let topic = uniqueName("outage")
        try cluster.createTopic(topic, partitions: 3)
        let consumer = try KafkaConsumer(
            configuration: consumerConfiguration(cluster), groupID: uniqueName("group"), logger: testLogger)
        let collector = EventCollector(consumer) { revoked, received in
            try? await boundedCommit(consumer, nextOffsets(of: received, in: revoked))
        }
        try consumer.subscribe(topics: [topic])
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        var acknowledged = try await produce(to: topic, partitions: 3, perPartition: 30, tag: "up", with: producer)

        try cluster.setBrokerDown(1)
        let reports = Reports()
        let sends = Task {
            try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<150 {
                    group.addTask {
                        let value = "down-\(index)"
                        _ = try await producer.send(
                            topic: topic, partition: Int32(index % 3), key: nil, value: Array(value.utf8))
                        reports.add()
                        return value
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
        }
        // The outage is a test input: it lasts until a third of the sends are acknowledged by the live brokers, or
        // 5 s when librdkafka holds them back; what is checked below is what was acknowledged, however much.
        let outageEnd = ContinuousClock.now + .seconds(5)
        while reports.count < 50, ContinuousClock.now < outageEnd {
            try await Task.sleep(for: .milliseconds(20))
        }
        try cluster.setBrokerUp(1)
        acknowledged += try await sends.value
        #expect(acknowledged.count == 240)

        try await waitUntil("every acknowledged record consumed") { collector.records.count >= acknowledged.count }
        let consumed = collector.records.map { String(decoding: $0.value ?? [], as: UTF8.self) }
        #expect(consumed.count == acknowledged.count)
        #expect(consumed.sorted() == acknowledged.sorted())
        await producer.close()
        try await consumer.close()
    }

    @Test func aRevokedPartitionsWorkIsCommittedInsideTheRebalanceSoTheNextOwnerStartsAfterIt() async throws {
        let cluster = try MockCluster(brokers: 3, logger: testLogger)
        let topic = uniqueName("handover")
        try cluster.createTopic(topic, partitions: 4)
        let group = uniqueName("group")
        let allPartitions = Set((0..<4).map { TopicPartition(topic: topic, partition: $0) })
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        let commitFailures = Reports()

        let first = try KafkaConsumer(configuration: consumerConfiguration(cluster), groupID: group, logger: testLogger)
        // No commits while processing: the only commit is the hand-over inside the revocation.
        let firstCollector = EventCollector(first) { revoked, received in
            do {
                try await boundedCommit(first, nextOffsets(of: received, in: revoked))
            } catch {
                commitFailures.add()
            }
        }
        try first.subscribe(topics: [topic])
        try await waitUntil("first consumer owns four partitions") { first.assignment() == allPartitions }
        try await produce(to: topic, partitions: 4, perPartition: 10, tag: "first", with: producer)
        try await waitUntil("first consumer read 40") { firstCollector.records.count >= 40 }

        let second = try KafkaConsumer(
            configuration: consumerConfiguration(cluster), groupID: group, logger: testLogger)
        let secondCollector = EventCollector(second)
        try second.subscribe(topics: [topic])
        try await waitUntil("partitions split") {
            let (a, b) = (first.assignment(), second.assignment())
            return !a.isEmpty && !b.isEmpty && a.isDisjoint(with: b) && a.union(b) == allPartitions
        }
        let moved = second.assignment()
        let history =
            "first: \(firstCollector.snapshot.assigned) -\(firstCollector.snapshot.revoked); "
            + "second: \(secondCollector.snapshot.assigned) -\(secondCollector.snapshot.revoked)"
        #expect(Set(firstCollector.snapshot.revoked.flatMap { $0 }) == moved, "\(history)")
        #expect(commitFailures.count == 0)

        try await produce(to: topic, partitions: 4, perPartition: 5, tag: "second", with: producer)
        try await waitUntil("the new owner read the new records") { secondCollector.records.count >= 5 * moved.count }
        for partition in moved {
            let offsets = secondCollector.records.filter { $0.topicPartition == partition }.map(\.offset)
            #expect(offsets == Array(10..<15), "\(partition) \(history)")
        }
        #expect(secondCollector.records.count == 5 * moved.count)
        await producer.close()
        try await second.close()
        try await first.close()
    }

    @Test func aCloseThatOutlastsItsTimeoutStillEndsTheEvents() async throws {
        let cluster = try MockCluster(brokers: 1, logger: testLogger)
        let topic = uniqueName("gone")
        try cluster.createTopic(topic, partitions: 1)
        var configuration = consumerConfiguration(cluster)
        configuration.properties["session.timeout.ms"] = "60000"
        let consumer = try KafkaConsumer(configuration: configuration, groupID: uniqueName("group"), logger: testLogger)
        let collector = EventCollector(consumer)
        try consumer.subscribe(topics: [topic])
        try await waitUntil("the consumer joined") { consumer.isInGroup }
        // librdkafka's close then waits for the coordinator's answer to leaving the group, up to the session timeout.
        try cluster.setRoundTripTime(1, .seconds(120))
        #expect(try await consumer.close(timeout: .milliseconds(500)) == false)
        try await collector.finished()
        // The events ended when the close gave up waiting, not when librdkafka's close finished.
        #expect(try await consumer.close(timeout: .milliseconds(1)) == false)
    }

    @Test func seekRereadsFromTheGivenOffset() async throws {
        let cluster = try MockCluster(brokers: 1, logger: testLogger)
        let topic = uniqueName("seek")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        try await produce(to: topic, partitions: 1, perPartition: 5, tag: "s", with: producer)
        await producer.close()
        let consumer = try KafkaConsumer(
            configuration: consumerConfiguration(cluster), groupID: uniqueName("group"), logger: testLogger)
        let collector = EventCollector(consumer)
        try consumer.subscribe(topics: [topic])
        try await waitUntil("five records") { collector.records.count >= 5 }
        try await consumer.seek(TopicPartition(topic: topic, partition: 0), to: 2)
        try await waitUntil("the re-read records") { collector.records.count >= 8 }
        #expect(collector.records.map(\.offset) == [0, 1, 2, 3, 4, 2, 3, 4])
        try await consumer.close()
    }

    @Test func producerRetriesPushedErrorsAndReportsConnectivity() async throws {
        let cluster = try MockCluster(brokers: 1, logger: testLogger)
        let topic = uniqueName("errors")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: producerConfiguration(cluster), logger: testLogger)
        #expect(await producer.isConnected(timeout: .seconds(10)))
        let notEnoughReplicas: Int32 = 19
        try cluster.pushRequestErrors(apiKey: 0, errors: [notEnoughReplicas, notEnoughReplicas])
        let report = try await producer.send(topic: topic, partition: 0, key: nil, value: [1])
        #expect(report.offset == 0)
        let next = try await producer.send(topic: topic, partition: 0, key: nil, value: [2])
        #expect(next.offset == 1)
        await producer.close()
        await #expect(throws: KafkaError.self) {
            _ = try await producer.send(topic: topic, key: nil, value: [3])
        }
        cluster.shutdown()
        cluster.shutdown()
        #expect(throws: KafkaError.self) { try cluster.createTopic(uniqueName("late"), partitions: 1) }
    }
}

/// Produces `perPartition` records to each partition, in order; returns their values.
@discardableResult
func produce(
    to topic: String,
    partitions: Int32,
    perPartition: Int,
    tag: String,
    with producer: KafkaProducer
) async throws -> [String] {
    var values: [String] = []
    for index in 0..<perPartition {
        for partition in 0..<partitions {
            let value = "\(tag)-\(partition)-\(index)"
            _ = try await producer.send(topic: topic, partition: partition, key: nil, value: Array(value.utf8))
            values.append(value)
        }
    }
    return values
}

final class Reports: Sendable {
    private let counter = Mutex(0)
    func add() { counter.withLock { $0 += 1 } }
    var count: Int { counter.withLock { $0 } }
}
