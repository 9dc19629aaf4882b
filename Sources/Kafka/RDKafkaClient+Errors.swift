import CRdKafka

// librdkafka's error codes and error objects as `KafkaError`s: the error mapping, beside the other librdkafka calls.
extension RDKafkaClient {
    static func kafkaError(_ error: rd_kafka_resp_err_t, context: String? = nil) -> KafkaError {
        let text = String(cString: rd_kafka_err2str(error))
        return KafkaError(
            code: error.rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isFatal: error == RD_KAFKA_RESP_ERR__FATAL
        )
    }

    /// Converts and destroys an `rd_kafka_error_t`.
    static func kafkaError(consuming error: OpaquePointer, context: String? = nil) -> KafkaError {
        defer { rd_kafka_error_destroy(error) }
        let text = String(cString: rd_kafka_error_string(error))
        return KafkaError(
            code: rd_kafka_error_code(error).rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isFatal: rd_kafka_error_is_fatal(error) != 0
        )
    }
}

extension KafkaError {
    /// This wrapper's own refusal of a call in the client's current state.
    static func state(_ message: String) -> KafkaError {
        KafkaError(code: RD_KAFKA_RESP_ERR__STATE.rawValue, message: message)
    }
}
