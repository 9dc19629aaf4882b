import Foundation
import Kafka
import Logging
import Synchronization
import TestSupport
import Testing

let testLogger: Logger = {
    var logger = Logger(label: "kafka-tests")
    logger.logLevel = .error
    return logger
}()

/// A commit that fails the test when the group does not answer in time, or refuses it while rejoining.
func boundedCommit(_ consumer: KafkaConsumer, _ offsets: [TopicPartition: Int64]) async throws {
    guard try await consumer.commitAndWait(offsets, timeout: .seconds(30)) else {
        throw TimedOut(what: "a commit")
    }
}

/// Settings that make group changes quick on the mock cluster.
func consumerConfiguration(_ cluster: MockCluster) -> KafkaConfiguration {
    KafkaConfiguration(properties: [
        "bootstrap.servers": cluster.bootstrapServers,
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "500",
        "fetch.wait.max.ms": "50",
    ])
}

func producerConfiguration(_ cluster: MockCluster) -> KafkaConfiguration {
    KafkaConfiguration(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "1"])
}

/// For each partition, the offset after the highest one among `records`.
func nextOffsets(of records: [KafkaConsumerRecord], in partitions: Set<TopicPartition>) -> [TopicPartition: Int64] {
    var offsets: [TopicPartition: Int64] = [:]
    for record in records where partitions.contains(record.topicPartition) {
        offsets[record.topicPartition] = max(offsets[record.topicPartition] ?? 0, record.offset + 1)
    }
    return offsets
}

/// Reads a consumer's events on a task of its own and records them. On a revocation it runs `onRevoke`
/// (with every record received so far) before acknowledging.
final class EventCollector: Sendable {
    struct Observed {
        var records: [KafkaConsumerRecord] = []
        var assigned: [[TopicPartition]] = []
        var revoked: [[TopicPartition]] = []
    }

    private let observed = Mutex(Observed())
    private let eventsEnded = Mutex(false)

    init(
        _ consumer: KafkaConsumer,
        onRevoke: @escaping @Sendable (Set<TopicPartition>, [KafkaConsumerRecord]) async -> Void = { _, _ in }
    ) {
        Task { [observed = self] in
            defer { observed.eventsEnded.withLock { $0 = true } }
            for await event in consumer.events {
                switch event {
                case .records(let records):
                    observed.update { $0.records.append(contentsOf: records) }
                case .partitionsAssigned(let partitions):
                    observed.update { $0.assigned.append(partitions) }
                case .partitionsRevoked(let partitions, let revocation, _):
                    let received = observed.snapshot.records
                    await onRevoke(Set(partitions), received)
                    observed.update { $0.revoked.append(partitions) }
                    revocation.acknowledge()
                }
            }
        }
    }

    private func update(_ change: (inout Observed) -> Void) {
        observed.withLock { change(&$0) }
    }

    var snapshot: Observed { observed.withLock { $0 } }
    var records: [KafkaConsumerRecord] { snapshot.records }

    /// Waits until the consumer's events end (after close), failing the test if they do not.
    func finished() async throws {
        try await waitUntil("the consumer's events to end") { eventsEnded.withLock { $0 } }
    }
}
