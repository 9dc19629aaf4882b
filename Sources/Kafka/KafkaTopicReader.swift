import Foundation
import Logging
import RelayPrimitives
import Synchronization

/// Reads partitions of a topic as they stand, outside any group membership: for tools that inspect or re-drive a
/// topic (the dead-letter topic) rather than consume it. Given a group id it also reads and commits that group's
/// offsets, as a record of its progress, without joining the group, so there is no rebalance to wait for. Two
/// readers committing for one group id at once would each overwrite the other's progress: give each its own.
public final class KafkaTopicReader: Sendable {
    private let client: RDKafkaClient
    private let requestTimeoutMilliseconds: Int32

    /// `groupID` nil reads for no group: librdkafka needs a group id to assign partitions, so it gets one nobody
    /// else has, which is never committed for and so never exists at the broker.
    public init(
        configuration: KafkaConfiguration, groupID: String?, logger: Logger, requestTimeout: Duration = .seconds(10)
    ) throws {
        var defaults = [
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true",
        ]
        defaults["group.id"] = groupID ?? "kafka-topic-reader-\(UUID().uuidString.lowercased())"
        client = try RDKafkaClient(
            kind: .consumer, properties: configuration.applied(over: defaults),
            secretProperties: configuration.secretProperties, logger: logger)
        requestTimeoutMilliseconds = Int32(clamping: requestTimeout.nanosecondsValue / 1_000_000)
    }

    /// The partitions of `topic`, sorted; empty when the cluster does not know the topic.
    public func partitions(of topic: String) async throws -> [TopicPartition] {
        let (client, timeout) = (self.client, requestTimeoutMilliseconds)
        return try await client.runBlocking {
            try client.partitionIDs(of: topic, timeoutMilliseconds: timeout).map {
                TopicPartition(topic: topic, partition: $0)
            }
        }
    }

    /// Each partition's first offset still held and the offset its next record will get, as the leaders answer now.
    public func watermarks(of partitions: [TopicPartition]) async throws -> [TopicPartition: ClosedRange<Int64>] {
        let (client, timeout) = (self.client, requestTimeoutMilliseconds)
        return try await client.runBlocking {
            var result: [TopicPartition: ClosedRange<Int64>] = [:]
            for partition in partitions {
                let (low, high) = try client.queryWatermarks(of: partition, timeoutMilliseconds: timeout)
                result[partition] = low...max(low, high)
            }
            return result
        }
    }

    /// The next offsets to read that the group committed; a partition it never committed is absent.
    public func committedOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        let (client, timeout) = (self.client, requestTimeoutMilliseconds)
        return try await client.runBlocking {
            try client.committedOffsets(of: partitions, timeoutMilliseconds: timeout)
        }
    }

    /// Commits `offsets` (the next offsets to read) for the group and waits for the coordinator's answer.
    public func commit(_ offsets: [TopicPartition: Int64]) async throws {
        let client = self.client
        try await client.runBlocking { try client.commit(offsets) }
    }

    /// Every record of each partition from its `start` offset up to, not including, its `end` offset, in batches of
    /// at most `batchSize`; the sequence ends once every partition reached its end. Records produced after `end`
    /// are never read, so a topic that grows while it is read still ends. One sequence at a time per reader: each
    /// replaces the reader's assignment.
    public func records(
        from start: [TopicPartition: Int64], upTo end: [TopicPartition: Int64], batchSize: Int = 500
    ) async throws -> AsyncThrowingStream<[KafkaConsumerRecord], any Error> {
        let read = BoundedRead(start: start, end: end)
        let client = self.client
        try await client.runBlocking { try client.assign(read.assignment) }
        return AsyncThrowingStream {
            while !read.isFinished {
                try Task.checkCancellation()
                let batch = try await client.runBlocking { read.pollBatch(client, batchSize: batchSize) }
                if !batch.isEmpty { return batch }
            }
            return nil
        }
    }

    /// Leaves nothing behind: the reader never joined a group, so there is nothing to hand over.
    public func close() async {
        let client = self.client
        _ = try? await client.runBlocking { try client.closeConsumer() }
    }
}

/// The partitions one `records(from:upTo:)` still reads, and how far.
private final class BoundedRead: Sendable {
    private let remaining: Mutex<[TopicPartition: ClosedRange<Int64>]>
    let assignment: [TopicPartition: Int64]

    init(start: [TopicPartition: Int64], end: [TopicPartition: Int64]) {
        var remaining: [TopicPartition: ClosedRange<Int64>] = [:]
        for (partition, first) in start {
            guard let last = end[partition].map({ $0 - 1 }), last >= first else { continue }
            remaining[partition] = first...last
        }
        self.remaining = Mutex(remaining)
        assignment = remaining.mapValues(\.lowerBound)
    }

    var isFinished: Bool { remaining.withLock { $0.isEmpty } }

    /// Polls (blocking, on the caller's thread) until a batch is full, every partition is done, or a poll waited
    /// 100 ms for nothing; keeps only records within their partition's range.
    func pollBatch(_ client: RDKafkaClient, batchSize: Int) -> [KafkaConsumerRecord] {
        var batch: [KafkaConsumerRecord] = []
        while batch.count < batchSize, !isFinished {
            switch client.pollForReader(timeoutMilliseconds: batch.isEmpty ? 100 : 0) {
            case .record(let record):
                let keep = remaining.withLock { remaining -> Bool in
                    guard let range = remaining[record.topicPartition], record.offset >= range.lowerBound else {
                        return false
                    }
                    if record.offset >= range.upperBound { remaining[record.topicPartition] = nil }
                    return record.offset <= range.upperBound
                }
                if keep { batch.append(record) }
            case .endOfPartition(let partition, let offset):
                remaining.withLock { remaining in
                    if let range = remaining[partition], offset > range.upperBound { remaining[partition] = nil }
                }
            case .nothing:
                return batch
            }
        }
        return batch
    }
}
