import CRdKafka

extension RDKafkaClient {
    /// An `rd_kafka_mock_cluster_t`, owned by the client that started it.
    struct MockClusterHandle: @unchecked Sendable {
        let pointer: OpaquePointer

        var bootstrapServers: String { String(cString: rd_kafka_mock_cluster_bootstraps(pointer)) }

        func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32) throws {
            try RDKafkaClient.check(
                rd_kafka_mock_topic_create(pointer, name, partitions, replicationFactor), "create topic \(name)")
        }

        func setBroker(_ brokerID: Int32, up: Bool) throws {
            let error =
                up ? rd_kafka_mock_broker_set_up(pointer, brokerID) : rd_kafka_mock_broker_set_down(pointer, brokerID)
            try RDKafkaClient.check(error, "broker \(brokerID) \(up ? "up" : "down")")
        }

        func setRoundTripTime(_ brokerID: Int32, milliseconds: Int32) throws {
            try RDKafkaClient.check(
                rd_kafka_mock_broker_set_rtt(pointer, brokerID, milliseconds), "broker \(brokerID) round-trip time")
        }

        func pushRequestErrors(apiKey: Int16, errors: [Int32]) {
            let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
            codes.withUnsafeBufferPointer { buffer in
                rd_kafka_mock_push_request_errors_array(pointer, apiKey, buffer.count, buffer.baseAddress)
            }
        }

        func destroy() {
            rd_kafka_mock_cluster_destroy(pointer)
        }
    }

    func startMockCluster(brokers: Int32) throws -> MockClusterHandle {
        guard let cluster = rd_kafka_mock_cluster_new(handle, brokers) else {
            throw KafkaError.state("rd_kafka_mock_cluster_new failed for \(brokers) brokers")
        }
        return MockClusterHandle(pointer: cluster)
    }
}
