import CRdKafka

/// An error from librdkafka (or from this wrapper's use of it), with librdkafka's raw `rd_kafka_resp_err_t` code.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    /// The raw `rd_kafka_resp_err_t` value: negative codes are librdkafka's own, positive ones the broker's.
    public var code: Int32
    public var message: String
    /// The client instance is unusable after a fatal error and must be recreated.
    public var isFatal: Bool

    public init(code: Int32, message: String, isFatal: Bool = false) {
        self.code = code
        self.message = message
        self.isFatal = isFatal
    }

    public var description: String {
        "KafkaError(\(code)\(isFatal ? ", fatal" : "")): \(message)"
    }
}

extension KafkaError {
    init(_ error: rd_kafka_resp_err_t, context: String? = nil) {
        let text = String(cString: rd_kafka_err2str(error))
        self.init(
            code: error.rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isFatal: error == RD_KAFKA_RESP_ERR__FATAL
        )
    }

    /// Converts and destroys an `rd_kafka_error_t`.
    init(consuming error: OpaquePointer, context: String? = nil) {
        let text = String(cString: rd_kafka_error_string(error))
        self.init(
            code: rd_kafka_error_code(error).rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isFatal: rd_kafka_error_is_fatal(error) != 0
        )
        rd_kafka_error_destroy(error)
    }

    static func state(_ message: String) -> KafkaError {
        KafkaError(code: RD_KAFKA_RESP_ERR__STATE.rawValue, message: message)
    }
}
