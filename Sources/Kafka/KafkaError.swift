import CRdKafka

/// An error from librdkafka (or from this wrapper's use of it), with librdkafka's raw `rd_kafka_resp_err_t` code.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    /// The raw `rd_kafka_resp_err_t` value: negative codes are librdkafka's own, positive ones the broker's.
    public var code: Int32
    public var message: String
    /// The client instance is unusable after a fatal error and must be recreated.
    public var isFatal: Bool
    /// Retrying the same operation may succeed.
    public var isRetriable: Bool

    public init(code: Int32, message: String, isFatal: Bool = false, isRetriable: Bool = false) {
        self.code = code
        self.message = message
        self.isFatal = isFatal
        self.isRetriable = isRetriable
    }

    public var description: String {
        var flags = ""
        if isFatal { flags += ", fatal" }
        if isRetriable { flags += ", retriable" }
        return "KafkaError(\(code)\(flags)): \(message)"
    }
}

extension KafkaError {
    init(_ error: rd_kafka_resp_err_t, context: String? = nil) {
        let text = String(cString: rd_kafka_err2str(error))
        self.init(
            code: error.rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isFatal: error == RD_KAFKA_RESP_ERR__FATAL,
            isRetriable: Self.retriableCodes.contains(error.rawValue)
        )
    }

    /// Converts and destroys an `rd_kafka_error_t`.
    init(consuming error: OpaquePointer, context: String? = nil) {
        let text = String(cString: rd_kafka_error_string(error))
        self.init(
            code: rd_kafka_error_code(error).rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isFatal: rd_kafka_error_is_fatal(error) != 0,
            isRetriable: rd_kafka_error_is_retriable(error) != 0
        )
        rd_kafka_error_destroy(error)
    }

    static func state(_ message: String) -> KafkaError {
        KafkaError(code: RD_KAFKA_RESP_ERR__STATE.rawValue, message: message)
    }

    /// librdkafka flags retriability only on `rd_kafka_error_t`; bare response codes need this list
    /// of the transient ones (broker moves, timeouts, full queues, rebalances).
    private static let retriableCodes: Set<Int32> = Set(
        [
            RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
            RD_KAFKA_RESP_ERR__QUEUE_FULL, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__WAIT_COORD,
            RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE, RD_KAFKA_RESP_ERR__RETRY, RD_KAFKA_RESP_ERR__IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR,
            RD_KAFKA_RESP_ERR_FETCH_SESSION_ID_NOT_FOUND, RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_PREFERRED_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_UNSTABLE_OFFSET_COMMIT,
            RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED,
        ].map(\.rawValue)
    )
}
