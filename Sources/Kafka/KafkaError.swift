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
