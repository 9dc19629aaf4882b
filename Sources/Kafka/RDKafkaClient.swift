import CRdKafka
import Dispatch
import Foundation
import Logging
import Synchronization

/// Receives group rebalances, on the thread that polls the consumer (inside its poll and close calls).
protocol RebalanceHandling: AnyObject {
    /// After librdkafka took the partitions over, before any of their records is polled.
    func assigned(_ partitions: [TopicPartition])
    /// Before librdkafka releases the partitions: librdkafka waits until this returns. `lost`: the group gave them
    /// to another member already (no commit of them can succeed).
    func revoking(_ partitions: [TopicPartition], lost: Bool)
    /// After librdkafka released the partitions.
    func revoked(_ partitions: [TopicPartition])
    /// The rebalance failed and the whole assignment was dropped.
    func rebalanceFailed(_ error: KafkaError)
}

/// State that librdkafka's C callbacks reach through the handle's opaque pointer.
final class ClientCallbackContext: @unchecked Sendable {
    let logger: Logger
    /// Set once by the poll thread before its first poll, read only by that thread afterwards.
    weak var rebalanceHandler: RebalanceHandling?
    let fatalError = Mutex<KafkaError?>(nil)
    /// Shared by the log and error callbacks, so that a condition repeating many times a second is logged once.
    let logLimiter = RepeatedLogLimiter()

    init(logger: Logger) {
        self.logger = logger
    }

    static func from(_ opaque: UnsafeMutableRawPointer?) -> ClientCallbackContext? {
        opaque.map { Unmanaged<ClientCallbackContext>.fromOpaque($0).takeUnretainedValue() }
    }
}

/// An `rd_kafka_t` handle: every librdkafka call of the consumer and producer goes through this type.
/// librdkafka handles are thread-safe, hence `@unchecked Sendable`.
final class RDKafkaClient: @unchecked Sendable {
    enum Kind {
        case consumer
        case producer

        var cType: rd_kafka_type_t { self == .consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER }
    }

    let handle: OpaquePointer
    let context: ClientCallbackContext
    let kind: Kind
    /// Runs the blocking calls (synchronous commit, seek, flush, metadata) away from Swift's cooperative pool.
    private let blockingQueue: DispatchQueue

    init(kind: Kind, properties: [String: String], secretProperties: Set<String> = [], logger: Logger) throws {
        let context = ClientCallbackContext(logger: logger)
        guard let configuration = rd_kafka_conf_new() else {
            throw KafkaError.state("rd_kafka_conf_new failed")
        }
        var errorText = [CChar](repeating: 0, count: 512)
        for (name, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(configuration, name, value, &errorText, errorText.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(configuration)
                // librdkafka's message may quote the value, so it is left out for secret properties.
                let isSecret = KafkaConfiguration.isSecret(name) || secretProperties.contains(name)
                let detail = isSecret ? "invalid value" : Self.string(errorText)
                throw KafkaError(
                    code: RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue,
                    message: "configuration property \(name): \(detail)"
                )
            }
        }
        rd_kafka_conf_set_opaque(configuration, Unmanaged.passUnretained(context).toOpaque())
        rd_kafka_conf_set_log_cb(configuration, rdKafkaLogCallback)
        rd_kafka_conf_set_error_cb(configuration, rdKafkaErrorCallback)
        switch kind {
        case .consumer:
            rd_kafka_conf_set_rebalance_cb(configuration, rdKafkaRebalanceCallback)
            rd_kafka_conf_set_offset_commit_cb(configuration, rdKafkaOffsetCommitCallback)
        case .producer:
            rd_kafka_conf_set_dr_msg_cb(configuration, rdKafkaDeliveryCallback)
        }
        // rd_kafka_new takes ownership of the configuration only on success.
        guard let handle = rd_kafka_new(kind.cType, configuration, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(configuration)
            throw KafkaError(code: RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue, message: Self.string(errorText))
        }
        self.handle = handle
        self.context = context
        self.kind = kind
        self.blockingQueue = DispatchQueue(
            label: "kafka.\(String(cString: rd_kafka_name(handle))).blocking",
            attributes: .concurrent
        )
        if kind == .consumer {
            // Rebalances, errors and logs then all arrive through consumer_poll on the poll thread.
            rd_kafka_poll_set_consumer(handle)
        }
    }

    deinit {
        // rd_kafka_destroy joins librdkafka's threads, which can take a while: keep it off whatever thread
        // (possibly the cooperative pool) released the last reference. The context outlives the handle.
        let doomed = DoomedHandle(handle: handle, context: context)
        Thread.detachNewThread { doomed.destroy() }
    }

    var name: String { String(cString: rd_kafka_name(handle)) }

    /// The error that made this client unusable, if one happened.
    var fatalError: KafkaError? { context.fatalError.withLock { $0 } }

    func runBlocking<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            blockingQueue.async {
                continuation.resume(with: Swift.Result { try body() })
            }
        }
    }

    /// The text librdkafka wrote into a NUL-terminated error buffer.
    static func string(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The error behind an `RD_KAFKA_RESP_ERR__FATAL`.
    static func fatalError(of handle: OpaquePointer) -> KafkaError {
        var text = [CChar](repeating: 0, count: 512)
        let underlying = rd_kafka_fatal_error(handle, &text, text.count)
        return KafkaError(code: underlying.rawValue, message: string(text), isFatal: true)
    }

    static func check(_ error: rd_kafka_resp_err_t, _ context: String) throws {
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw RDKafkaClient.kafkaError(error, context: context)
        }
    }

    static func check(_ error: OpaquePointer?, _ context: String) throws {
        if let error {
            throw RDKafkaClient.kafkaError(consuming: error, context: context)
        }
    }
}

private struct DoomedHandle: @unchecked Sendable {
    let handle: OpaquePointer
    let context: ClientCallbackContext

    func destroy() {
        rd_kafka_destroy(handle)
        withExtendedLifetime(context) {}
    }
}

// MARK: - Topic partition lists

extension RDKafkaClient {
    /// Calls `body` with a freshly built list that is destroyed afterwards. An offset of `nil` leaves
    /// librdkafka's default (`RD_KAFKA_OFFSET_INVALID`).
    static func withPartitionList<Result>(
        _ entries: some Sequence<(TopicPartition, Int64?)>,
        _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws -> Result
    ) rethrows -> Result {
        let list = rd_kafka_topic_partition_list_new(0)!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (topicPartition, offset) in entries {
            let element = rd_kafka_topic_partition_list_add(list, topicPartition.topic, topicPartition.partition)!
            if let offset {
                element.pointee.offset = offset
            }
        }
        return try body(list)
    }

    static func elements(
        of list: UnsafePointer<rd_kafka_topic_partition_list_t>
    ) -> UnsafeBufferPointer<rd_kafka_topic_partition_t> {
        UnsafeBufferPointer(start: list.pointee.elems, count: Int(list.pointee.cnt))
    }

    static func partitions(of list: UnsafePointer<rd_kafka_topic_partition_list_t>) -> [TopicPartition] {
        elements(of: list).map { TopicPartition(topic: String(cString: $0.topic), partition: $0.partition) }
    }

    /// Throws the first per-partition error a commit, pause or seek left in the list.
    static func checkElements(of list: UnsafePointer<rd_kafka_topic_partition_list_t>, _ context: String) throws {
        for element in elements(of: list) where element.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw kafkaError(
                element.err,
                context: "\(context) \(String(cString: element.topic))[\(element.partition)]"
            )
        }
    }
}

// MARK: - C callbacks

private func rdKafkaLogCallback(
    _ handle: OpaquePointer?,
    _ level: Int32,
    _ facility: UnsafePointer<CChar>?,
    _ line: UnsafePointer<CChar>?
) {
    guard let handle, let context = ClientCallbackContext.from(rd_kafka_opaque(handle)) else { return }
    let logLevel: Logger.Level
    switch level {
    case ...2: logLevel = .critical
    case 3: logLevel = .error
    case 4: logLevel = .warning
    case 5: logLevel = .notice
    case 6: logLevel = .info
    default: logLevel = .debug
    }
    let text = line.map { String(cString: $0) } ?? ""
    let facilityText = facility.map { String(cString: $0) } ?? ""
    // Only warnings and errors repeat by the second (a broker refusing connections); debug output stays whole.
    var repeats = 0
    if level <= 4 {
        guard let admitted = context.logLimiter.admit(text, facility: facilityText) else { return }
        repeats = admitted
    }
    var metadata: Logger.Metadata = [
        "kafka.facility": "\(facilityText)",
        "kafka.client": "\(String(cString: rd_kafka_name(handle)))",
    ]
    if repeats > 0 { metadata["repeated"] = "\(repeats)" }
    context.logger.log(level: logLevel, "\(text)", metadata: metadata)
}

private func rdKafkaErrorCallback(
    _ handle: OpaquePointer?,
    _ code: Int32,
    _ reason: UnsafePointer<CChar>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let handle, let context = ClientCallbackContext.from(opaque) else { return }
    let reasonText = reason.map { String(cString: $0) } ?? ""
    let error = rd_kafka_resp_err_t(rawValue: code)
    if error == RD_KAFKA_RESP_ERR__FATAL {
        let fatal = RDKafkaClient.fatalError(of: handle)
        context.fatalError.withLock { $0 = $0 ?? fatal }
        context.logger.error("Kafka client failed fatally", metadata: ["error": "\(fatal)"])
    } else if ![RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__RESOLVE]
        .contains(error)
    {
        // Transient errors: librdkafka retries by itself. Those above it has logged already through the log
        // callback, so they are not logged a second time.
        guard let repeats = context.logLimiter.admit(reasonText, facility: "error \(code)") else { return }
        var metadata: Logger.Metadata = ["error": "\(RDKafkaClient.kafkaError(error, context: reasonText))"]
        if repeats > 0 { metadata["repeated"] = "\(repeats)" }
        context.logger.warning("Kafka client error", metadata: metadata)
    }
}

private func rdKafkaRebalanceCallback(
    _ handle: OpaquePointer?,
    _ error: rd_kafka_resp_err_t,
    _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let handle, let partitions else { return }
    RDKafkaClient.serveRebalance(
        handle: handle, error: error, list: partitions,
        handler: ClientCallbackContext.from(opaque)?.rebalanceHandler)
}

private func rdKafkaOffsetCommitCallback(
    _ handle: OpaquePointer?,
    _ error: rd_kafka_resp_err_t,
    _ offsets: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let context = ClientCallbackContext.from(opaque) else { return }
    // NO_OFFSET only means there was nothing new to commit.
    if error != RD_KAFKA_RESP_ERR_NO_ERROR && error != RD_KAFKA_RESP_ERR__NO_OFFSET {
        context.logger.warning("Kafka offset commit failed", metadata: ["error": "\(RDKafkaClient.kafkaError(error))"])
    } else if let offsets {
        for element in RDKafkaClient.elements(of: offsets) where element.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            context.logger.warning(
                "Kafka offset commit failed for a partition",
                metadata: [
                    "topic": "\(String(cString: element.topic))", "partition": "\(element.partition)",
                    "error": "\(RDKafkaClient.kafkaError(element.err))",
                ]
            )
        }
    }
}

private func rdKafkaDeliveryCallback(
    _ handle: OpaquePointer?,
    _ message: UnsafePointer<rd_kafka_message_t>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let message, let messageOpaque = message.pointee._private else { return }
    let delivery = Unmanaged<PendingDelivery>.fromOpaque(messageOpaque).takeRetainedValue()
    let error = message.pointee.err
    if error == RD_KAFKA_RESP_ERR_NO_ERROR {
        delivery.report(
            .success(
                KafkaDeliveryReport(
                    topic: delivery.topic,
                    partition: message.pointee.partition,
                    offset: message.pointee.offset
                )))
    } else if error == RD_KAFKA_RESP_ERR__FATAL, let handle {
        delivery.report(.failure(RDKafkaClient.fatalError(of: handle)))
    } else {
        delivery.report(.failure(RDKafkaClient.kafkaError(error, context: "delivery to \(delivery.topic)")))
    }
}

/// One produced message waiting for its delivery report; passed to librdkafka as the message opaque.
final class PendingDelivery {
    let topic: String
    /// Runs once, on the thread serving the producer's poll.
    let report: @Sendable (Result<KafkaDeliveryReport, KafkaError>) -> Void

    init(topic: String, report: @escaping @Sendable (Result<KafkaDeliveryReport, KafkaError>) -> Void) {
        self.topic = topic
        self.report = report
    }
}
