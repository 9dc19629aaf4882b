import Foundation
import Kafka
import LeadRelayDemo
import Logging

/// Producing backlogs and reading topics with the project's Kafka module.
struct KafkaTools {
    let bootstrapServers: String
    let logger: Logger

    /// Produces `count` unique valid leads of `namespace`, of each shape in turn, to `topic`.
    func produceUniqueLeads(_ count: Int, to topic: String, namespace: String, partitions: Int32) async throws {
        progress("producing \(count) unique valid leads to \(topic)")
        try await produce(
            (0..<count).map {
                SampleLeads.valid(index: $0, shape: SampleLeads.Shape.allCases[$0 % 3], namespace: namespace)
            }, to: topic, partitions: partitions)
    }

    /// Produces `records` to explicit partitions, round robin, so every partition holds the same share.
    func produce(_ records: [SampleLeads.Record], to topic: String, partitions: Int32) async throws {
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(properties: ["bootstrap.servers": bootstrapServers, "linger.ms": "20"]),
            logger: logger)
        let window = 20_000
        var start = 0
        while start < records.count {
            let slice = records[start..<min(start + window, records.count)]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, record) in zip(slice.indices, slice) {
                    group.addTask {
                        _ = try await producer.send(
                            topic: topic, partition: Int32(index % Int(partitions)), key: record.key,
                            value: record.value, headers: record.headers)
                    }
                }
                try await group.waitForAll()
            }
            start += window
        }
        await producer.close()
    }

    /// A plain group consumer that only reads and counts: the whole topic from the start, until `expected`
    /// records arrived or none came for `idleTimeout`. Its rate is taken from the first record to the last.
    /// `groupID` nil reads with a new group from the start; an existing group reads from its committed offsets.
    func consumeAll(
        topic: String, expected: Int, groupID: String? = nil, idleTimeout: Duration = .seconds(10)
    ) async throws -> PlainConsume {
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(properties: [
                "bootstrap.servers": bootstrapServers, "session.timeout.ms": "6000",
            ]),
            groupID: groupID ?? "bench-plain-\(UUID().uuidString)", logger: logger)
        try consumer.subscribe(topics: [topic])
        let progress = Shared(PlainConsume())
        let subscribedAt = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await event in consumer.events {
                    guard case .records(let records) = event else { continue }
                    let done = progress.withLock { state in
                        let now = ContinuousClock.now
                        if state.count == 0 {
                            state.firstAt = now
                            state.firstBatchCount = records.count
                        }
                        state.lastAt = now
                        state.count += records.count
                        return state.count >= expected
                    }
                    if done { return }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    let idleSince = progress.withLock { $0.lastAt } ?? subscribedAt
                    if ContinuousClock.now - idleSince > idleTimeout { return }
                }
            }
            await group.next()
            group.cancelAll()
        }
        try await consumer.close()
        return progress.withLock { $0 }
    }
}

struct PlainConsume: Sendable {
    var count = 0
    /// The records that arrived together with the first: they start the clock, so they are not in the rate.
    var firstBatchCount = 0
    var firstAt: ContinuousClock.Instant?
    var lastAt: ContinuousClock.Instant?

    var recordsPerSecond: Double {
        guard let firstAt, let lastAt, lastAt > firstAt else { return 0 }
        return Double(count - firstBatchCount) / (lastAt - firstAt).seconds
    }
}
