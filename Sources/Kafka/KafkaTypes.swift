import Foundation

/// One record header. A `nil` value is a null header value, distinct from an empty one.
public struct KafkaHeader: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

public struct TopicPartition: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }
}

public struct KafkaConsumerRecord: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// The record's timestamp as stored by the broker (creation or log-append time), when it has one.
    public var timestamp: Date?

    public init(
        topic: String,
        partition: Int32,
        offset: Int64,
        key: [UInt8]?,
        value: [UInt8]?,
        headers: [KafkaHeader] = [],
        timestamp: Date? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }

    public var topicPartition: TopicPartition { TopicPartition(topic: topic, partition: partition) }
}

/// Where a record sits in Kafka: its topic, partition and offset.
public struct KafkaRecordPosition: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

/// What the broker acknowledged for a produced record: where it stored it.
public typealias KafkaDeliveryReport = KafkaRecordPosition

/// Where a consumer stands in one partition, from what librdkafka has cached (no request).
public struct KafkaPartitionPosition: Sendable, Equatable {
    /// The next offset the consumer will fetch; nil before its first fetch.
    public var position: Int64?
    public var lowWatermark: Int64?
    public var highWatermark: Int64?

    public init(position: Int64?, lowWatermark: Int64?, highWatermark: Int64?) {
        self.position = position
        self.lowWatermark = lowWatermark
        self.highWatermark = highWatermark
    }

    /// High watermark minus the position; before the first fetch, minus `committed` (the group's commit, where the
    /// consumer will start) when given, else the low watermark. Nil while the high watermark is unknown.
    public func lag(committed: Int64? = nil) -> Int64? {
        guard let highWatermark else { return nil }
        return max(highWatermark - (position ?? committed ?? max(lowWatermark ?? 0, 0)), 0)
    }
}
