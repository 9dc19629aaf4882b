import CRdKafka
import Foundation

/// The calls of a consumer that reads assigned partitions outside any group membership (`KafkaTopicReader`).
extension RDKafkaClient {
    /// The partition ids of `topic`, from a metadata request; empty when the cluster does not know the topic. Blocks.
    func partitionIDs(of topic: String, timeoutMilliseconds: Int32) throws -> [Int32] {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        // All topics: naming one would need a topic handle, and would create the topic where auto-creation is on.
        try Self.check(rd_kafka_metadata(handle, 1, nil, &metadata, timeoutMilliseconds), "metadata")
        guard let metadata else { return [] }
        defer { rd_kafka_metadata_destroy(metadata) }
        let topics = UnsafeBufferPointer(start: metadata.pointee.topics, count: Int(metadata.pointee.topic_cnt))
        guard let entry = topics.first(where: { String(cString: $0.topic) == topic }),
            entry.err == RD_KAFKA_RESP_ERR_NO_ERROR
        else { return [] }
        return UnsafeBufferPointer(start: entry.partitions, count: Int(entry.partition_cnt)).map(\.id).sorted()
    }

    /// The partition's first and next offsets as its leader answers now (not the cached ones). Blocks.
    func queryWatermarks(of partition: TopicPartition, timeoutMilliseconds: Int32) throws -> (
        low: Int64, high: Int64
    ) {
        var low: Int64 = 0
        var high: Int64 = 0
        try Self.check(
            rd_kafka_query_watermark_offsets(
                handle, partition.topic, partition.partition, &low, &high, timeoutMilliseconds),
            "watermarks of \(partition)")
        return (low, high)
    }

    /// The offsets the consumer's group committed for these partitions; a partition without one is absent. Blocks.
    func committedOffsets(of partitions: [TopicPartition], timeoutMilliseconds: Int32) throws -> [TopicPartition:
        Int64]
    {
        try Self.withPartitionList(partitions.lazy.map { ($0, nil) }) { list in
            try Self.check(rd_kafka_committed(handle, list, timeoutMilliseconds), "committed offsets")
            try Self.checkElements(of: list, "committed offset")
            var offsets: [TopicPartition: Int64] = [:]
            for element in Self.elements(of: list) where element.offset >= 0 {
                offsets[TopicPartition(topic: String(cString: element.topic), partition: element.partition)] =
                    element.offset
            }
            return offsets
        }
    }

    /// Replaces the assignment: each partition is read from its offset.
    func assign(_ offsets: [TopicPartition: Int64]) throws {
        try Self.withPartitionList(offsets.lazy.map { ($0.key, $0.value) }) { list in
            try Self.check(rd_kafka_assign(handle, list), "assign")
        }
    }

    /// What one poll of a reader found.
    enum ReaderPoll {
        case record(KafkaConsumerRecord)
        /// The partition has nothing at or after `offset` yet (needs `enable.partition.eof`).
        case endOfPartition(TopicPartition, offset: Int64)
        case nothing
    }

    /// As `pollRecord`, telling the end of a partition apart from a timeout.
    func pollForReader(timeoutMilliseconds: Int32) -> ReaderPoll {
        guard let message = rd_kafka_consumer_poll(handle, timeoutMilliseconds) else { return .nothing }
        let fields = message.pointee
        switch fields.err {
        case RD_KAFKA_RESP_ERR_NO_ERROR:
            let record = record(from: message)
            rd_kafka_message_destroy(message)
            return .record(record)
        case RD_KAFKA_RESP_ERR__PARTITION_EOF:
            let partition = TopicPartition(
                topic: String(cString: rd_kafka_topic_name(fields.rkt)), partition: fields.partition)
            rd_kafka_message_destroy(message)
            return .endOfPartition(partition, offset: fields.offset)
        default:
            context.logger.warning(
                "Kafka consumer error", metadata: ["error": "\(RDKafkaClient.kafkaError(fields.err))"])
            rd_kafka_message_destroy(message)
            return .nothing
        }
    }
}
