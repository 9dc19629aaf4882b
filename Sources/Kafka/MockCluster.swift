import Logging
import Synchronization

/// librdkafka's in-process mock Kafka cluster, listening on loopback: for tests and `lead-relay kafka-dev`.
/// It lives as long as this object (and its process).
public final class MockCluster: Sendable {
    private let client: RDKafkaClient
    /// Nil once shut down.
    private let cluster: Mutex<RDKafkaClient.MockClusterHandle?>
    public let bootstrapServers: String

    /// Starts `brokers` brokers, numbered 1...brokers.
    public init(brokers: Int = 3, logger: Logger) throws {
        // The cluster needs an rd_kafka_t to own it; a producer without brokers is the lightest one. Its
        // notice that no bootstrap servers are configured is expected, hence warnings and up only.
        let client = try RDKafkaClient(kind: .producer, properties: ["log_level": "4"], logger: logger)
        let cluster = try client.startMockCluster(brokers: Int32(brokers))
        self.client = client
        self.cluster = Mutex(cluster)
        self.bootstrapServers = cluster.bootstrapServers
    }

    deinit {
        shutdown()
    }

    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws {
        try withCluster("create topic \(name)") {
            try $0.createTopic(name, partitions: partitions, replicationFactor: replicationFactor)
        }
    }

    public func setBrokerDown(_ brokerID: Int32) throws {
        try withCluster("broker \(brokerID) down") { try $0.setBroker(brokerID, up: false) }
    }

    public func setBrokerUp(_ brokerID: Int32) throws {
        try withCluster("broker \(brokerID) up") { try $0.setBroker(brokerID, up: true) }
    }

    /// Delays every response of this broker by `delay`, as a slow or distant broker would.
    public func setRoundTripTime(_ brokerID: Int32, _ delay: Duration) throws {
        try withCluster("broker \(brokerID) round-trip time") {
            try $0.setRoundTripTime(brokerID, milliseconds: Int32(delay / .milliseconds(1)))
        }
    }

    /// The next `errors.count` requests with this API key (e.g. 0 Produce, 1 Fetch, 8 OffsetCommit) fail with
    /// these `rd_kafka_resp_err_t` codes, in order.
    public func pushRequestErrors(apiKey: Int16, errors: [Int32]) throws {
        try withCluster("push request errors") { $0.pushRequestErrors(apiKey: apiKey, errors: errors) }
    }

    /// Stops the brokers. Idempotent; also done on deinit.
    public func shutdown() {
        cluster.withLock { state in
            defer { state = nil }
            return state
        }?.destroy()
    }

    private func withCluster(_ action: String, _ body: (RDKafkaClient.MockClusterHandle) throws -> Void) throws {
        try cluster.withLock { state in
            guard let cluster = state else { throw KafkaError.state("\(action): mock cluster is shut down") }
            try body(cluster)
        }
    }
}
