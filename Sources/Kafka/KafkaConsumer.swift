import CRdKafka
import Foundation
import Logging
import NIOCore
import Synchronization

public enum KafkaConsumerEvent: Sendable {
    /// Records in poll order, as many as one poll found ready (at most the consumer's batch size): a reader
    /// that works per batch (one store lookup, one commit) pays its fixed costs once for all of them.
    case records([KafkaConsumerRecord])
    case partitionsAssigned([TopicPartition])
    /// Delivered before librdkafka releases the partitions: the poll thread waits until
    /// `revocation.acknowledge()` is called (or the consumer's revocation timeout passes), so the reader can
    /// finish in-flight work of these partitions and `commitAndWait` it first. Every record of these partitions
    /// that will ever reach this reader was delivered before this event.
    case partitionsRevoked([TopicPartition], PartitionRevocation)
}

/// The reader's answer to a revocation; the partitions are released once it is acknowledged.
public final class PartitionRevocation: Sendable {
    private let acknowledged = Atomic<Bool>(false)
    private let flow: ConsumerFlowControl

    init(flow: ConsumerFlowControl, acknowledged: Bool = false) {
        self.flow = flow
        self.acknowledged.store(acknowledged, ordering: .releasing)
    }

    public func acknowledge() {
        acknowledged.store(true, ordering: .releasing)
        flow.wakeUp()
    }

    public var isAcknowledged: Bool { acknowledged.load(ordering: .acquiring) }
}

/// The consumer's events in poll order, for a single reader.
public struct KafkaConsumerEvents: AsyncSequence, Sendable {
    public typealias Element = KafkaConsumerEvent
    typealias Producer = NIOAsyncSequenceProducer<
        KafkaConsumerEvent, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, ConsumerEventsDelegate
    >

    let producer: Producer

    public struct AsyncIterator: AsyncIteratorProtocol {
        var wrapped: Producer.AsyncIterator

        public mutating func next() async -> KafkaConsumerEvent? {
            await wrapped.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(wrapped: producer.makeAsyncIterator())
    }
}

/// A member of a consumer group. Records, assignments and revocations arrive through `events`; offsets are
/// stored nowhere implicitly: the caller commits what it finished.
public final class KafkaConsumer: Sendable {
    private let client: RDKafkaClient
    private let pollLoop: ConsumerPollLoop
    private let logger: Logger
    public let events: KafkaConsumerEvents

    /// Group consumer with `partition.assignment.strategy=cooperative-sticky`, `enable.auto.commit=false`,
    /// `enable.auto.offset.store=false` and `auto.offset.reset=earliest`; `configuration.properties` are
    /// applied on top. `bufferCapacity` bounds the records buffered ahead of the reader, in batches of up to
    /// half of it (at most 500); `revocationTimeout` bounds how long a revocation waits for its acknowledgement.
    public init(
        configuration: KafkaConfiguration,
        groupID: String,
        logger: Logger,
        bufferCapacity: Int = 1000,
        revocationTimeout: Duration = .seconds(30)
    ) throws {
        let properties = configuration.applied(over: [
            "group.id": groupID,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "auto.offset.reset": "earliest",
        ])
        let flow = ConsumerFlowControl()
        let maxBatch = max(1, min(bufferCapacity / 2, 500))
        // The sequence counts events, and each event holds up to `maxBatch` records.
        let highWatermark = max(bufferCapacity / maxBatch, 2)
        let sequence = KafkaConsumerEvents.Producer.makeSequence(
            backPressureStrategy: .init(lowWatermark: highWatermark / 2, highWatermark: highWatermark),
            finishOnDeinit: false,
            delegate: ConsumerEventsDelegate(flow: flow)
        )
        let pollLoop = ConsumerPollLoop(
            flow: flow,
            source: sequence.source,
            revocationTimeout: revocationTimeout,
            maxBatch: maxBatch,
            logger: logger
        )
        let client = try RDKafkaClient(
            kind: .consumer,
            properties: properties,
            logger: logger,
            rebalanceHandler: pollLoop
        )
        pollLoop.start(client: client)
        self.client = client
        self.pollLoop = pollLoop
        self.logger = logger
        self.events = KafkaConsumerEvents(producer: sequence.sequence)
        logger.debug(
            "Kafka consumer created",
            metadata: ["kafka.client": "\(client.name)", "kafka.configuration": "\(configuration.redactedDescription)"]
        )
    }

    deinit {
        pollLoop.flow.requestClose()
    }

    public func subscribe(topics: [String]) throws {
        try client.subscribe(topics: topics)
    }

    /// Commits without waiting; a failure is logged. `offsets` are the next offsets to read.
    public func commit(_ offsets: [TopicPartition: Int64]) throws {
        try client.commit(offsets, wait: false)
    }

    /// Commits and waits for the coordinator's answer, on a thread outside Swift's cooperative pool.
    public func commitAndWait(_ offsets: [TopicPartition: Int64]) async throws {
        let client = self.client
        try await client.runBlocking { try client.commit(offsets, wait: true) }
    }

    /// Stops fetching these partitions. Events already buffered for the reader are still delivered.
    public func pause(_ partitions: [TopicPartition]) throws {
        try client.pause(partitions)
    }

    public func resume(_ partitions: [TopicPartition]) throws {
        try client.resume(partitions)
    }

    /// Moves the fetch position of an assigned partition. Events already buffered for the reader are still
    /// delivered.
    public func seek(_ partition: TopicPartition, to offset: Int64) async throws {
        let client = self.client
        try await client.runBlocking { try client.seek(partition, to: offset, timeoutMilliseconds: 10_000) }
    }

    public func assignment() -> Set<TopicPartition> {
        pollLoop.membership.withLock { $0.assignment }
    }

    /// Per assigned partition: high watermark minus the fetch position, from cached watermarks (non-blocking).
    public func lag() -> [TopicPartition: Int64] {
        client.lag(of: assignment())
    }

    /// Whether the consumer has joined its group (received an assignment, possibly empty) and not left it.
    public var isInGroup: Bool {
        pollLoop.membership.withLock { $0.hasJoined }
    }

    /// The fatal error that stopped this consumer, if one did; `events` then ends.
    public var terminalError: KafkaError? {
        client.fatalError
    }

    /// Leaves the group and ends `events`. Revocations during close are acknowledged automatically, so commit
    /// finished work before closing.
    public func close() async throws {
        try await pollLoop.close()
    }
}

struct ConsumerEventsDelegate: NIOAsyncSequenceProducerDelegate {
    let flow: ConsumerFlowControl

    func produceMore() {
        flow.readerWantsMore()
    }

    func didTerminate() {
        flow.readerTerminated()
    }
}

/// What the poll thread waits on: the reader's demand, revocation acknowledgements and close requests.
final class ConsumerFlowControl: @unchecked Sendable {
    private let condition = NSCondition()
    private var demand = true
    /// Counts `produceMore` calls so a `stopProducing` answer can tell whether demand returned meanwhile.
    private var produceMoreCount = 0
    private var closeRequested = false
    private var readerGone = false

    enum Turn {
        case poll
        case close
    }

    func readerWantsMore() {
        condition.lock()
        demand = true
        produceMoreCount += 1
        condition.broadcast()
        condition.unlock()
    }

    func readerTerminated() {
        condition.lock()
        readerGone = true
        condition.broadcast()
        condition.unlock()
    }

    func requestClose() {
        condition.lock()
        closeRequested = true
        condition.broadcast()
        condition.unlock()
    }

    func wakeUp() {
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }

    var produceMoreGeneration: Int {
        condition.lock()
        defer { condition.unlock() }
        return produceMoreCount
    }

    /// The reader's buffer is full, unless it asked for more since `generation` was read.
    func stopProducing(since generation: Int) {
        condition.lock()
        if produceMoreCount == generation {
            demand = false
        }
        condition.unlock()
    }

    var isReaderGone: Bool {
        condition.lock()
        defer { condition.unlock() }
        return readerGone
    }

    var isCloseRequested: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closeRequested
    }

    /// Blocks until the reader wants events (or is gone, so events are discarded) or close is requested.
    func awaitTurn() -> Turn {
        condition.lock()
        defer { condition.unlock() }
        while !demand && !readerGone && !closeRequested {
            condition.wait()
        }
        return closeRequested ? .close : .poll
    }

    /// Blocks until the revocation is acknowledged, the reader is gone, close is requested or `deadline` passed.
    /// Returns whether it was acknowledged (or needs no acknowledgement any more).
    func awaitAcknowledgement(of revocation: PartitionRevocation, deadline: Date) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !revocation.isAcknowledged && !readerGone && !closeRequested {
            if !condition.wait(until: deadline) {
                return revocation.isAcknowledged
            }
        }
        return true
    }
}

/// Runs on the consumer's own thread: polls librdkafka, batches records into the events sequence and answers
/// rebalances. `pending` and `pendingRecords` are touched only by that thread (rebalance callbacks run inside
/// its poll calls).
final class ConsumerPollLoop: RebalanceHandling, @unchecked Sendable {
    struct Membership {
        var assignment: Set<TopicPartition> = []
        var hasJoined = false
    }

    private enum CloseState {
        case running(waiters: [CheckedContinuation<Void, any Error>])
        case closed(Result<Void, KafkaError>)
    }

    let flow: ConsumerFlowControl
    let membership = Mutex(Membership())
    private let closeState = Mutex(CloseState.running(waiters: []))
    private let source: KafkaConsumerEvents.Producer.Source
    private let revocationTimeout: Duration
    private let maxBatch: Int
    private let logger: Logger
    private var pending: [KafkaConsumerEvent] = []
    /// Records of the poll in progress, not yet wrapped into an event.
    private var pendingRecords: [KafkaConsumerRecord] = []
    private var isClosing = false
    /// Set while the poll thread runs; rebalance callbacks happen only inside its poll and close calls.
    private var client: RDKafkaClient?

    init(
        flow: ConsumerFlowControl,
        source: KafkaConsumerEvents.Producer.Source,
        revocationTimeout: Duration,
        maxBatch: Int,
        logger: Logger
    ) {
        self.flow = flow
        self.source = source
        self.revocationTimeout = revocationTimeout
        self.maxBatch = maxBatch
        self.logger = logger
        pendingRecords.reserveCapacity(maxBatch)
    }

    /// The thread keeps the client alive until the consumer has left its group.
    func start(client: RDKafkaClient) {
        let thread = Thread { [self] in
            run(client: client)
        }
        thread.name = "kafka-consumer-\(client.name)"
        thread.start()
    }

    func close() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let alreadyClosed: Result<Void, KafkaError>? = closeState.withLock { state in
                switch state {
                case .running(var waiters):
                    waiters.append(continuation)
                    state = .running(waiters: waiters)
                    return nil
                case .closed(let result):
                    return result
                }
            }
            if let alreadyClosed {
                continuation.resume(with: alreadyClosed)
            } else {
                flow.requestClose()
            }
        }
    }

    private func run(client: RDKafkaClient) {
        self.client = client
        defer { self.client = nil }
        while flow.awaitTurn() == .poll {
            if let fatal = client.fatalError {
                logger.error("Kafka consumer stops after a fatal error", metadata: ["error": "\(fatal)"])
                break
            }
            pollBatch(client: client)
        }
        isClosing = true
        let result: Result<Void, KafkaError>
        do {
            try client.closeConsumer()
            result = .success(())
        } catch let error as KafkaError {
            result = .failure(error)
        } catch {
            result = .failure(KafkaError.state("\(error)"))
        }
        flushPending()
        source.finish()
        membership.withLock { $0 = Membership() }
        let waiters = closeState.withLock { state -> [CheckedContinuation<Void, any Error>] in
            guard case .running(let waiters) = state else { return [] }
            state = .closed(result)
            return waiters
        }
        for waiter in waiters {
            waiter.resume(with: result.mapError { $0 as any Error })
        }
    }

    /// One wakeup: waits briefly for a first message, then takes what is already queued, up to `maxBatch`.
    private func pollBatch(client: RDKafkaClient) {
        var timeout: Int32 = 100
        while pendingRecords.count < maxBatch, let message = client.consumerPoll(timeoutMilliseconds: timeout) {
            timeout = 0
            take(message, client: client)
        }
        flushPending()
    }

    private func take(_ message: UnsafeMutablePointer<rd_kafka_message_t>, client: RDKafkaClient) {
        defer { client.destroy(message) }
        let error = message.pointee.err
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            if error != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                logger.warning("Kafka consumer error", metadata: ["error": "\(KafkaError(error))"])
            }
            return
        }
        pendingRecords.append(client.record(from: message))
    }

    /// Queues an event behind the records taken so far, so the reader sees everything in poll order.
    private func enqueue(_ event: KafkaConsumerEvent) {
        closeRecordBatch()
        pending.append(event)
    }

    private func closeRecordBatch() {
        guard !pendingRecords.isEmpty else { return }
        pending.append(.records(pendingRecords))
        pendingRecords = []
        pendingRecords.reserveCapacity(maxBatch)
    }

    private func flushPending() {
        closeRecordBatch()
        guard !pending.isEmpty else { return }
        defer { pending.removeAll(keepingCapacity: true) }
        if flow.isReaderGone { return }
        let generation = flow.produceMoreGeneration
        switch source.yield(contentsOf: pending) {
        case .produceMore:
            break
        case .stopProducing:
            flow.stopProducing(since: generation)
        case .dropped:
            flow.readerTerminated()
        }
    }

    func rebalance(_ error: rd_kafka_resp_err_t, partitions list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>)
    {
        guard let client else { return }
        let partitions = RDKafkaClient.partitions(of: list)
        let cooperative = client.isCooperativeRebalance
        switch error {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            do {
                try client.applyRebalance(list, assign: true, cooperative: cooperative)
            } catch {
                logger.error("Kafka partition assignment failed", metadata: ["error": "\(error)"])
            }
            membership.withLock {
                $0.assignment.formUnion(partitions)
                $0.hasJoined = true
            }
            logger.info("Kafka partitions assigned", metadata: ["partitions": "\(partitions)"])
            if !partitions.isEmpty {
                enqueue(.partitionsAssigned(partitions))
            }
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            logger.info(
                "Kafka partitions revoked",
                metadata: ["partitions": "\(partitions)", "lost": "\(client.isAssignmentLost)"]
            )
            if !partitions.isEmpty {
                handOver(partitions)
            }
            do {
                try client.applyRebalance(list, assign: false, cooperative: cooperative)
            } catch {
                logger.error("Kafka partition release failed", metadata: ["error": "\(error)"])
            }
            membership.withLock { $0.assignment.subtract(partitions) }
        default:
            logger.error("Kafka rebalance failed", metadata: ["error": "\(KafkaError(error))"])
            client.unassignAll()
            membership.withLock { $0.assignment.removeAll() }
        }
    }

    /// Delivers the records still pending, then the revocation, and waits for the reader's acknowledgement.
    private func handOver(_ partitions: [TopicPartition]) {
        let acknowledgedUpFront = isClosing || flow.isReaderGone
        let revocation = PartitionRevocation(flow: flow, acknowledged: acknowledgedUpFront)
        enqueue(.partitionsRevoked(partitions, revocation))
        flushPending()
        guard !acknowledgedUpFront else { return }
        let deadline = Date(timeIntervalSinceNow: revocationTimeout.timeInterval)
        if !flow.awaitAcknowledgement(of: revocation, deadline: deadline) {
            logger.warning(
                "Kafka revocation not acknowledged in time; releasing the partitions",
                metadata: ["partitions": "\(partitions)", "timeout": "\(revocationTimeout)"]
            )
        }
    }
}

extension Duration {
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
