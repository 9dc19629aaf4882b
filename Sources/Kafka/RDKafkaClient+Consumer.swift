import CRdKafka
import Foundation

extension RDKafkaClient {
    func subscribe(topics: [String]) throws {
        let list = rd_kafka_topic_partition_list_new(Int32(topics.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for topic in topics {
            rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA)
        }
        try Self.check(rd_kafka_subscribe(handle, list), "subscribe")
    }

    /// The poll thread's handler of rebalances; set before its first poll.
    func setRebalanceHandler(_ handler: RebalanceHandling) {
        context.rebalanceHandler = handler
    }

    /// The next record, or nil when none arrived within the timeout (or the poll was woken). Consumer errors are
    /// logged and end the wait like a timeout. Serves rebalance, error, log and commit callbacks on the calling
    /// thread.
    func pollRecord(timeoutMilliseconds: Int32) -> KafkaConsumerRecord? {
        guard let message = rd_kafka_consumer_poll(handle, timeoutMilliseconds) else { return nil }
        defer { rd_kafka_message_destroy(message) }
        let error = message.pointee.err
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            if error != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                context.logger.warning(
                    "Kafka consumer error", metadata: ["error": "\(RDKafkaClient.kafkaError(error))"])
            }
            return nil
        }
        return record(from: message)
    }

    /// Makes a `pollRecord` blocked on another thread return at once.
    func wakeConsumerPoll() {
        guard let queue = rd_kafka_queue_get_consumer(handle) else { return }
        rd_kafka_queue_yield(queue)
        rd_kafka_queue_destroy(queue)
    }

    func record(from message: UnsafeMutablePointer<rd_kafka_message_t>) -> KafkaConsumerRecord {
        let fields = message.pointee
        var headers: [KafkaHeader] = []
        var headerList: OpaquePointer?
        if rd_kafka_message_headers(message, &headerList) == RD_KAFKA_RESP_ERR_NO_ERROR, let headerList {
            var index = 0
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(headerList, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                headers.append(
                    KafkaHeader(key: name.map { String(cString: $0) } ?? "", value: Self.bytes(value, size))
                )
                index += 1
            }
        }
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let milliseconds = rd_kafka_message_timestamp(message, &timestampType)
        return KafkaConsumerRecord(
            topic: String(cString: rd_kafka_topic_name(fields.rkt)),
            partition: fields.partition,
            offset: fields.offset,
            key: Self.bytes(fields.key, fields.key_len),
            value: Self.bytes(fields.payload, fields.len),
            headers: headers,
            timestamp: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
                ? nil : Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        )
    }

    /// A null pointer is a null key/value; a non-null pointer with length 0 an empty one.
    private static func bytes(_ pointer: UnsafeRawPointer?, _ count: Int) -> [UInt8]? {
        guard let pointer else { return nil }
        return [UInt8](UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Translates one rebalance callback for `handler` and applies it: assignments before the handler hears of
    /// them, releases after. Without a handler (the consumer is going away) it only applies it.
    static func serveRebalance(
        handle: OpaquePointer,
        error: rd_kafka_resp_err_t,
        list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>,
        handler: RebalanceHandling?
    ) {
        let partitions = Self.partitions(of: list)
        let cooperative = String(cString: rd_kafka_rebalance_protocol(handle)) == "COOPERATIVE"
        let logger = ClientCallbackContext.from(rd_kafka_opaque(handle))?.logger
        switch error {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            do {
                if cooperative {
                    try check(rd_kafka_incremental_assign(handle, list), "incremental assign")
                } else {
                    try check(rd_kafka_assign(handle, list), "assign")
                }
            } catch {
                logger?.error("Kafka partition assignment failed", metadata: ["error": "\(error)"])
            }
            handler?.assigned(partitions)
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            handler?.revoking(partitions, lost: rd_kafka_assignment_lost(handle) != 0)
            do {
                if cooperative {
                    try check(rd_kafka_incremental_unassign(handle, list), "incremental unassign")
                } else {
                    try check(rd_kafka_assign(handle, nil), "unassign")
                }
            } catch {
                logger?.error("Kafka partition release failed", metadata: ["error": "\(error)"])
            }
            handler?.revoked(partitions)
        default:
            _ = rd_kafka_assign(handle, nil)
            handler?.rebalanceFailed(RDKafkaClient.kafkaError(error, context: "rebalance"))
        }
    }

    /// Commits `offsets` (the next offsets to read) and blocks until the coordinator answered.
    func commit(_ offsets: [TopicPartition: Int64]) throws {
        guard !offsets.isEmpty else { return }
        try Self.withPartitionList(offsets.lazy.map { ($0.key, $0.value) }) { list in
            try Self.check(rd_kafka_commit(handle, list, 0), "commit")
            try Self.checkElements(of: list, "commit")
        }
    }

    func pause(_ partitions: [TopicPartition]) throws {
        try Self.withPartitionList(partitions.lazy.map { ($0, nil) }) { list in
            try Self.check(rd_kafka_pause_partitions(handle, list), "pause")
            try Self.checkElements(of: list, "pause")
        }
    }

    func resume(_ partitions: [TopicPartition]) throws {
        try Self.withPartitionList(partitions.lazy.map { ($0, nil) }) { list in
            try Self.check(rd_kafka_resume_partitions(handle, list), "resume")
            try Self.checkElements(of: list, "resume")
        }
    }

    /// Blocks until the seek is done or `timeoutMilliseconds` passed.
    func seek(_ partition: TopicPartition, to offset: Int64, timeoutMilliseconds: Int32) throws {
        try Self.withPartitionList(CollectionOfOne((partition, offset))) { list in
            try Self.check(rd_kafka_seek_partitions(handle, list, timeoutMilliseconds), "seek")
            try Self.checkElements(of: list, "seek")
        }
    }

    /// High watermark minus the consumer's position, from librdkafka's cached watermarks (no request).
    /// Before the first fetched record the low watermark stands in for the position.
    func lag(of partitions: Set<TopicPartition>) -> [TopicPartition: Int64] {
        positions(of: partitions).compactMapValues { $0.lag() }
    }

    /// Each partition's fetch position and cached watermarks (no request).
    func positions(of partitions: Set<TopicPartition>) -> [TopicPartition: KafkaPartitionPosition] {
        guard !partitions.isEmpty else { return [:] }
        return Self.withPartitionList(partitions.lazy.map { ($0, nil) }) { list in
            _ = rd_kafka_position(handle, list)
            var positions: [TopicPartition: KafkaPartitionPosition] = [:]
            for element in Self.elements(of: list) {
                var low = Int64(RD_KAFKA_OFFSET_INVALID)
                var high = Int64(RD_KAFKA_OFFSET_INVALID)
                let known =
                    rd_kafka_get_watermark_offsets(handle, element.topic, element.partition, &low, &high)
                    == RD_KAFKA_RESP_ERR_NO_ERROR
                positions[TopicPartition(topic: String(cString: element.topic), partition: element.partition)] =
                    KafkaPartitionPosition(
                        position: element.offset >= 0 ? element.offset : nil,
                        lowWatermark: known && low >= 0 ? low : nil, highWatermark: known && high >= 0 ? high : nil)
            }
            return positions
        }
    }

    /// Drops the subscription: the revocation it causes is served through the rebalance callback by the polls
    /// that follow, and the group is left once the partitions are released.
    func unsubscribe() throws {
        try Self.check(rd_kafka_unsubscribe(handle), "unsubscribe")
    }

    /// Whether librdkafka still holds an assignment (partitions not yet released by a revocation).
    var hasAssignment: Bool {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        guard rd_kafka_assignment(handle, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return false }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        return list.pointee.cnt > 0
    }

    /// Leaves the group; serves the final revocation through the rebalance callback on this thread.
    func closeConsumer() throws {
        try Self.check(rd_kafka_consumer_close(handle), "consumer close")
    }
}
