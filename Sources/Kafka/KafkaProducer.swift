import Foundation
import Logging
import RelayPrimitives
import Synchronization

/// An idempotent producer (`enable.idempotence=true`, `acks=all`): each `send` returns once the broker
/// acknowledged the record (or failed for good).
public final class KafkaProducer: Sendable {
    private let client: RDKafkaClient
    private let logger: Logger
    private let enqueues = EnqueueGate()
    private let pollThread: ProducerPollThread

    public init(configuration: KafkaConfiguration, logger: Logger) throws {
        let properties = configuration.applied(over: [
            "enable.idempotence": "true",
            "acks": "all",
        ])
        let client = try RDKafkaClient(
            kind: .producer, properties: properties, secretProperties: configuration.secretProperties, logger: logger)
        self.client = client
        self.logger = logger
        self.pollThread = ProducerPollThread(client: client)
        logger.debug(
            "Kafka producer created",
            metadata: ["kafka.client": "\(client.name)", "kafka.configuration": "\(configuration.redactedDescription)"]
        )
    }

    deinit {
        pollThread.stop()
    }

    /// `partition` nil lets the partitioner choose (by key). A nil `key`/`value` is a null one, `[]` an empty one.
    public func send(
        topic: String,
        partition: Int32? = nil,
        key: [UInt8]?,
        value: [UInt8]?,
        headers: [KafkaHeader] = []
    ) async throws -> KafkaDeliveryReport {
        try await withCheckedThrowingContinuation { continuation in
            do {
                try enqueue(topic: topic, partition: partition, key: key, value: value, headers: headers) {
                    continuation.resume(with: $0)
                }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Enqueues without waiting: `onDelivery` gets the broker's answer, unless this throws (the local queue is
    /// full, the producer closed, the arguments are invalid). It runs on the producer's poll thread, where every
    /// other report waits for it, so it must be short and must not block.
    public func enqueue(
        topic: String,
        partition: Int32? = nil,
        key: [UInt8]?,
        value: [UInt8]?,
        headers: [KafkaHeader] = [],
        onDelivery: @escaping @Sendable (Result<KafkaDeliveryReport, KafkaError>) -> Void
    ) throws {
        guard enqueues.enter() else {
            throw KafkaError.state("producer is closed")
        }
        defer { enqueues.leave() }
        try client.produce(
            topic: topic,
            partition: partition,
            key: key,
            value: value,
            headers: headers,
            delivery: PendingDelivery(topic: topic, report: onDelivery)
        )
    }

    /// Whether `close` was called: every send fails from then on.
    public var isClosed: Bool { enqueues.isClosed }

    /// Waits until every enqueued record has its delivery report, on a thread outside the cooperative pool.
    public func flush(timeout: Duration) async throws {
        let client = self.client
        let milliseconds = Self.milliseconds(timeout)
        try await client.runBlocking { try client.flush(timeoutMilliseconds: milliseconds) }
    }

    /// Whether a broker answers a metadata request within `timeout`.
    public func isConnected(timeout: Duration) async -> Bool {
        let client = self.client
        let milliseconds = Self.milliseconds(timeout)
        return (try? await client.runBlocking { client.canReachBroker(timeoutMilliseconds: milliseconds) }) ?? false
    }

    /// Flushes for up to `flushTimeout`, fails what is still undelivered, then stops. Later sends throw.
    public func close(flushTimeout: Duration = .seconds(30)) async {
        guard await enqueues.close() else { return }
        let client = self.client
        let milliseconds = Self.milliseconds(flushTimeout)
        do {
            try await client.runBlocking { try client.flush(timeoutMilliseconds: milliseconds) }
        } catch {
            logger.warning(
                "Kafka producer closed with undelivered records",
                metadata: ["error": "\(error)", "undelivered": "\(client.outstandingMessages)"]
            )
        }
        await pollThread.stopAndWait()
    }

    static func milliseconds(_ duration: Duration) -> Int32 {
        Int32(clamping: Int64(duration.timeInterval * 1000))
    }
}

/// Lets enqueues in while the producer is open, and lets `close` wait for those under way, so that every record
/// handed to librdkafka before the close is flushed with the rest.
final class EnqueueGate: Sendable {
    private struct State {
        var isClosed = false
        var inProgress = 0
        var closeWaiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    var isClosed: Bool { state.withLock { $0.isClosed } }

    /// False once closed: the enqueue must not happen.
    func enter() -> Bool {
        state.withLock { state in
            guard !state.isClosed else { return false }
            state.inProgress += 1
            return true
        }
    }

    func leave() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.inProgress -= 1
            guard state.inProgress == 0 else { return nil }
            defer { state.closeWaiter = nil }
            return state.closeWaiter
        }
        waiter?.resume()
    }

    /// Closes the gate and returns once no enqueue is under way; false when it was closed already.
    func close() async -> Bool {
        let (firstClose, busy) = state.withLock { state -> (Bool, Bool) in
            defer { state.isClosed = true }
            return (!state.isClosed, state.inProgress > 0)
        }
        guard firstClose else { return false }
        guard busy else { return true }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiting = state.withLock { state -> Bool in
                guard state.inProgress > 0 else { return false }
                state.closeWaiter = continuation
                return true
            }
            if !waiting { continuation.resume() }
        }
        return true
    }
}

/// Serves the producer's delivery reports on a thread of its own. On stop it fails what is left, so no
/// `send` waits forever.
final class ProducerPollThread: Sendable {
    private let stopRequested = Atomic<Bool>(false)
    private let finished = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(client: RDKafkaClient) {
        let thread = Thread { [self] in
            while !stopRequested.load(ordering: .acquiring) {
                client.poll(timeoutMilliseconds: 100)
            }
            client.purgeUndelivered()
            // Only serves the purged records' reports: bounded, because a shutdown waits for it.
            try? client.flush(timeoutMilliseconds: 500)
            let waiters = finished.withLock { state in
                state.done = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters {
                waiter.resume()
            }
        }
        thread.name = "kafka-producer-\(client.name)"
        thread.start()
    }

    func stop() {
        stopRequested.store(true, ordering: .releasing)
    }

    func stopAndWait() async {
        await withCheckedContinuation { continuation in
            let done = finished.withLock { state in
                if !state.done { state.waiters.append(continuation) }
                return state.done
            }
            if done { continuation.resume() }
            stop()
        }
    }
}
