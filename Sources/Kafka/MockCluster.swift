import CRdKafka
import Logging
import Synchronization

/// librdkafka's in-process mock Kafka cluster, listening on loopback: for tests and `lead-relay kafka-dev`.
/// It lives as long as this object (and its process).
public final class MockCluster: Sendable {
    private let client: RDKafkaClient
    /// The `rd_kafka_mock_cluster_t`, nil once shut down.
    private let cluster: Mutex<MockClusterPointer?>
    public let bootstrapServers: String

    /// Starts `brokers` brokers, numbered 1...brokers.
    public init(brokers: Int = 3, logger: Logger) throws {
        // The cluster needs an rd_kafka_t to own it; a producer without brokers is the lightest one. Its
        // notice that no bootstrap servers are configured is expected, hence warnings and up only.
        let client = try RDKafkaClient(kind: .producer, properties: ["log_level": "4"], logger: logger)
        guard let cluster = client.startMockCluster(brokers: Int32(brokers)) else {
            throw KafkaError.state("rd_kafka_mock_cluster_new failed for \(brokers) brokers")
        }
        self.client = client
        self.cluster = Mutex(MockClusterPointer(pointer: cluster))
        self.bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
    }

    deinit {
        shutdown()
    }

    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws {
        try withCluster("create topic \(name)") { rd_kafka_mock_topic_create($0, name, partitions, replicationFactor) }
    }

    public func setBrokerDown(_ brokerID: Int32) throws {
        try withCluster("broker \(brokerID) down") { rd_kafka_mock_broker_set_down($0, brokerID) }
    }

    public func setBrokerUp(_ brokerID: Int32) throws {
        try withCluster("broker \(brokerID) up") { rd_kafka_mock_broker_set_up($0, brokerID) }
    }

    public func setRoundTripTime(broker brokerID: Int32, milliseconds: Int) throws {
        try withCluster("broker \(brokerID) round-trip time") {
            rd_kafka_mock_broker_set_rtt($0, brokerID, Int32(clamping: milliseconds))
        }
    }

    /// The next `errors.count` requests with this API key (e.g. 0 Produce, 1 Fetch, 8 OffsetCommit) fail with
    /// these `rd_kafka_resp_err_t` codes, in order.
    public func pushRequestErrors(apiKey: Int16, errors: [Int32]) throws {
        let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
        try withCluster("push request errors") { cluster in
            codes.withUnsafeBufferPointer { buffer in
                rd_kafka_mock_push_request_errors_array(cluster, apiKey, buffer.count, buffer.baseAddress)
            }
            return RD_KAFKA_RESP_ERR_NO_ERROR
        }
    }

    /// Stops the brokers. Idempotent; also done on deinit.
    public func shutdown() {
        if let cluster = cluster.withLock({ state in
            defer { state = nil }; return state
        }) {
            rd_kafka_mock_cluster_destroy(cluster.pointer)
        }
    }

    private func withCluster(_ action: String, _ body: (OpaquePointer) -> rd_kafka_resp_err_t) throws {
        try cluster.withLock { state in
            guard let cluster = state else { throw KafkaError.state("\(action): mock cluster is shut down") }
            try RDKafkaClient.check(body(cluster.pointer), action)
        }
    }
}

private struct MockClusterPointer: @unchecked Sendable {
    let pointer: OpaquePointer
}

extension RDKafkaClient {
    func startMockCluster(brokers: Int32) -> OpaquePointer? {
        rd_kafka_mock_cluster_new(handle, brokers)
    }
}
