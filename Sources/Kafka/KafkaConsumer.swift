import Dispatch
import Foundation
import Logging
import NIOCore
import RelayPrimitives
import Synchronization

public enum KafkaConsumerEvent: Sendable {
    /// Records in poll order, as many as one poll found ready (at most the consumer's batch size): a reader
    /// that works per batch (one store lookup, one commit) pays its fixed costs once for all of them.
    case records([KafkaConsumerRecord])
    case partitionsAssigned([TopicPartition])
    /// Delivered before librdkafka releases the partitions: the poll thread waits until
    /// `revocation.acknowledge()` is called (or the consumer's revocation timeout passes), so the reader can
    /// finish in-flight work of these partitions and `commitAndWait` it first. Every record of these partitions
    /// that will ever reach this reader was delivered before this event. `lost` partitions were already given to
    /// another member (the session timed out): no commit of them can succeed.
    case partitionsRevoked([TopicPartition], PartitionRevocation, lost: Bool)
}

/// The reader's answer to a revocation; the partitions are released once it is acknowledged.
public final class PartitionRevocation: Sendable {
    private let acknowledged = Atomic<Bool>(false)
    private let signal = DispatchSemaphore(value: 0)

    init() {}

    public func acknowledge() {
        if !acknowledged.exchange(true, ordering: .acquiringAndReleasing) {
            signal.signal()
        }
    }

    var isAcknowledged: Bool { acknowledged.load(ordering: .acquiring) }

    /// Blocks the calling (poll) thread; true when acknowledged within `timeout`.
    func awaitAcknowledgement(timeout: Duration) -> Bool {
        signal.wait(timeout: .now() + timeout.timeInterval) == .success
    }
}

/// The consumer's events in poll order, for a single reader.
public struct KafkaConsumerEvents: AsyncSequence, Sendable {
    public typealias Element = KafkaConsumerEvent
    public typealias Failure = Never
    typealias Producer = NIOAsyncSequenceProducer<
        KafkaConsumerEvent, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, ConsumerEventsDelegate
    >

    let producer: Producer

    public struct AsyncIterator: AsyncIteratorProtocol {
        public typealias Failure = Never
        var wrapped: Producer.AsyncIterator

        public mutating func next() async -> KafkaConsumerEvent? {
            await wrapped.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(wrapped: producer.makeAsyncIterator())
    }
}

/// Where a consumer stands in its group, for operators (readiness).
public enum KafkaConsumerMembership: Sendable, Equatable {
    /// Subscribed and waiting for its first assignment.
    case joining
    /// Received an assignment (possibly empty) and in the group.
    case member
    /// The group took the assignment away without a handover (a lost revocation or a failed rebalance); the
    /// consumer rejoins.
    case assignmentLost
    /// Closing or closed.
    case left
}

/// A member of a consumer group. Records, assignments and revocations arrive through `events`; offsets are
/// stored nowhere implicitly: the caller commits what it finished.
///
/// A thread of its own polls librdkafka all the time, whatever the reader does: when the reader falls behind,
/// fetching is paused instead, so the consumer stays in its group (see `ConsumerStateMachine`).
public final class KafkaConsumer: Sendable {
    private let client: RDKafkaClient
    private let shared: ConsumerShared
    private let logger: Logger
    public let events: KafkaConsumerEvents
    /// Finished by the poll thread after librdkafka's close, or by `close(timeout:)` when that takes too long.
    private let eventsSource: KafkaConsumerEvents.Producer.Source

    /// Group consumer with `partition.assignment.strategy=cooperative-sticky`, `enable.auto.commit=false`,
    /// `enable.auto.offset.store=false` and `auto.offset.reset=earliest`; `configuration.properties` are applied on
    /// top. Cooperative, because an eager revocation happens while the group is rebalancing, when a commit is refused
    /// (librdkafka's mock cluster refuses every commit then): the work of revoked partitions could not be handed over.
    /// About twice `bufferCapacity` records are buffered ahead of the reader before fetching pauses, in batches of up to
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
        let maxBatch = max(1, min(bufferCapacity / 2, 500))
        // The sequence counts events, and each event holds up to `maxBatch` records. Fetching pauses at the high
        // watermark and resumes at the low one: far enough apart that a reader keeping up rarely causes a pause,
        // because librdkafka discards and fetches again what it had prefetched on each one.
        let highWatermark = max(2 * bufferCapacity / maxBatch, 4)
        let cooperative = properties["partition.assignment.strategy"]?.contains("cooperative") ?? false
        let shared = ConsumerShared(rebalancesEagerly: !cooperative)
        let sequence = KafkaConsumerEvents.Producer.makeSequence(
            backPressureStrategy: .init(lowWatermark: highWatermark / 2, highWatermark: highWatermark),
            finishOnDeinit: false,
            delegate: ConsumerEventsDelegate(shared: shared)
        )
        let client = try RDKafkaClient(
            kind: .consumer, properties: properties, secretProperties: configuration.secretProperties, logger: logger)
        shared.client.withLock { $0 = client }
        // librdkafka 2.0.2 can hang for ever in consumer_close when a cooperative assignment arrives during the
        // close (librdkafka issue 4527, fixed in 2.4.0); leaving the subscription first avoids that.
        ConsumerPollLoop.start(
            client: client, shared: shared, source: sequence.source, maxBatch: maxBatch,
            revocationTimeout: revocationTimeout, leavesSubscriptionBeforeClose: cooperative, logger: logger)
        self.client = client
        self.shared = shared
        self.logger = logger
        self.events = KafkaConsumerEvents(producer: sequence.sequence)
        self.eventsSource = sequence.source
        logger.debug(
            "Kafka consumer created",
            metadata: ["kafka.client": "\(client.name)", "kafka.configuration": "\(configuration.redactedDescription)"]
        )
    }

    deinit {
        shared.requestClose()
    }

    public func subscribe(topics: [String]) throws {
        try client.subscribe(topics: topics)
    }

    /// Commits `offsets` (the next offsets to read) and waits at most `timeout` for the coordinator's answer (with
    /// no coordinator reachable a commit can wait far longer), on a thread outside Swift's cooperative pool. Returns
    /// whether the commit was acknowledged in time; false at once, with nothing sent, while the consumer rejoins
    /// its group after an eager revocation (see `ConsumerStateMachine.isRejoining`): the commit then succeeds once
    /// the next assignment has come, whichever partitions it holds.
    public func commitAndWait(_ offsets: [TopicPartition: Int64], timeout: Duration) async throws -> Bool {
        guard !isRejoining else { return false }
        let client = self.client
        return try await withTimeout(timeout) { try await client.runBlocking { try client.commit(offsets) } } != nil
    }

    /// Whether the consumer is rejoining its group after an eager revocation: no commit is sent meanwhile.
    public var isRejoining: Bool {
        shared.state.withLock { $0.isRejoining }
    }

    /// Stops fetching these partitions (also after they are revoked and assigned again, until `resume`). Events
    /// already buffered for the reader are still delivered.
    public func pause(_ partitions: [TopicPartition]) {
        shared.update { $0.pause(partitions) }
    }

    public func resume(_ partitions: [TopicPartition]) {
        shared.update { $0.resume(partitions) }
    }

    /// While held, no partition is fetched, whatever is assigned meanwhile; polling goes on.
    public func holdFetching(_ hold: Bool) {
        if shared.state.withLock({ $0.holdFetching(hold) }) { shared.wakePollThread() }
    }

    /// Moves the fetch position of an assigned partition. Events already buffered for the reader are still
    /// delivered.
    public func seek(_ partition: TopicPartition, to offset: Int64) async throws {
        let client = self.client
        shared.update { $0.rewind(partition) }
        try await client.runBlocking { try client.seek(partition, to: offset, timeoutMilliseconds: 10_000) }
    }

    public func assignment() -> Set<TopicPartition> {
        shared.state.withLock { $0.assignment }
    }

    /// Per assigned partition: high watermark minus the fetch position, from cached watermarks (non-blocking).
    public func lag() -> [TopicPartition: Int64] {
        client.lag(of: assignment())
    }

    /// The offsets the group committed for the assigned partitions, as the coordinator answers (on a thread outside
    /// Swift's cooperative pool); a partition never committed is absent. Returns nil when no answer came within
    /// `timeout` or the task was cancelled first: the request is then left to finish on its own.
    public func committedOffsets(timeout: Duration) async throws -> [TopicPartition: Int64]? {
        let (client, partitions) = (self.client, Array(assignment()))
        guard !partitions.isEmpty else { return [:] }
        let milliseconds = Int32(clamping: timeout.nanosecondsValue / 1_000_000)
        return try await withTimeout(timeout) {
            try await client.runBlocking {
                try client.committedOffsets(of: partitions, timeoutMilliseconds: milliseconds)
            }
        }
    }

    /// Per assigned partition: the fetch position and the cached watermarks (non-blocking).
    public func positions() -> [TopicPartition: KafkaPartitionPosition] {
        client.positions(of: assignment())
    }

    /// Whether the consumer has joined its group (received an assignment, possibly empty) and not left it.
    public var isInGroup: Bool {
        shared.state.withLock { $0.isInGroup }
    }

    public var membership: KafkaConsumerMembership {
        shared.state.withLock { $0.membership }
    }

    /// Leaves the group and ends `events`, waiting at most `timeout`: with no broker reachable librdkafka may take
    /// far longer to give up, and the group is then left to the session timeout. Revocations during close are
    /// acknowledged automatically, so commit finished work before closing. Returns whether the close finished;
    /// `events` ends either way, so that no reader waits on a consumer that is going away.
    @discardableResult
    public func close(timeout: Duration = .seconds(30)) async throws -> Bool {
        let finished = try await withTimeout(timeout) { try await self.shared.close() } != nil
        if !finished {
            logger.warning("Kafka consumer close did not finish in time", metadata: ["timeout": "\(timeout)"])
            eventsSource.finish()
        }
        return finished
    }
}

/// What the consumer, its reader and its poll thread share: the state machine behind one lock.
final class ConsumerShared: Sendable {
    let state: Mutex<ConsumerStateMachine>

    init(rebalancesEagerly: Bool) {
        state = Mutex(ConsumerStateMachine(rebalancesEagerly: rebalancesEagerly))
    }
    /// Set once at start, for waking the poll thread out of a blocking poll.
    let client = Mutex<RDKafkaClient?>(nil)

    func update(_ change: (inout ConsumerStateMachine) -> Void) {
        state.withLock { change(&$0) }
        wakePollThread()
    }

    /// Signalled with every wake-up, for a poll thread that waits without polling.
    private let wakeUp = DispatchSemaphore(value: 0)

    func wakePollThread() {
        client.withLock { $0 }?.wakeConsumerPoll()
        wakeUp.signal()
    }

    /// Blocks the poll thread until woken or until `deadline`. A wake-up signalled earlier ends it at once: the
    /// caller looks at the state again either way.
    func waitForWakeUp(until deadline: ContinuousClock.Instant) {
        let remaining = max(.zero, deadline - .now)
        _ = wakeUp.wait(timeout: .now() + remaining.timeInterval)
    }

    func requestClose() {
        Task { [self] in try? await close() }
    }

    func close() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let (action, revocation) = state.withLock { $0.close(continuation) }
            revocation?.acknowledge()
            switch action {
            case .alreadyClosed(let result):
                continuation.resume(with: result.mapError { $0 as any Error })
            case .wakePollThread:
                wakePollThread()
            case .waitForPollThread:
                break
            }
        }
    }
}

struct ConsumerEventsDelegate: NIOAsyncSequenceProducerDelegate {
    let shared: ConsumerShared

    func produceMore() {
        if shared.state.withLock({ $0.readerWantsMore() }) { shared.wakePollThread() }
    }

    func didTerminate() {
        shared.state.withLock { $0.readerTerminated() }?.acknowledge()
    }
}

/// Runs on the consumer's own thread: polls librdkafka, batches records into the events sequence, applies the
/// state machine's pauses and answers rebalances. Created on that thread and never leaves it; rebalance callbacks
/// reach it only inside its own poll and close calls.
final class ConsumerPollLoop: RebalanceHandling {
    private let client: RDKafkaClient
    private let shared: ConsumerShared
    private let source: KafkaConsumerEvents.Producer.Source
    private let maxBatch: Int
    private let revocationTimeout: Duration
    private let leavesSubscriptionBeforeClose: Bool
    private let logger: Logger
    /// Events of the turn in progress, not yet yielded to the reader.
    private var pending: [KafkaConsumerEvent] = []
    private var batch: [KafkaConsumerRecord] = []
    /// Per assigned partition, the offset after the last record delivered. librdkafka 2.0.2 can fetch records a
    /// second time after a pause and resume (seen under load: most of a backlog delivered twice); within one
    /// assignment a record below this offset is such a repeat, and is dropped.
    private var nextOffsets: [TopicPartition: Int64] = [:]
    private var repeatsDropped = 0

    private init(
        client: RDKafkaClient, shared: ConsumerShared, source: KafkaConsumerEvents.Producer.Source, maxBatch: Int,
        revocationTimeout: Duration, leavesSubscriptionBeforeClose: Bool, logger: Logger
    ) {
        self.client = client
        self.shared = shared
        self.source = source
        self.maxBatch = maxBatch
        self.revocationTimeout = revocationTimeout
        self.leavesSubscriptionBeforeClose = leavesSubscriptionBeforeClose
        self.logger = logger
        batch.reserveCapacity(maxBatch)
    }

    /// The thread keeps the client alive until the consumer has left its group.
    static func start(
        client: RDKafkaClient, shared: ConsumerShared, source: KafkaConsumerEvents.Producer.Source, maxBatch: Int,
        revocationTimeout: Duration, leavesSubscriptionBeforeClose: Bool, logger: Logger
    ) {
        let name = "kafka-consumer-\(client.name)"
        let thread = Thread {
            let loop = ConsumerPollLoop(
                client: client, shared: shared, source: source, maxBatch: maxBatch,
                revocationTimeout: revocationTimeout, leavesSubscriptionBeforeClose: leavesSubscriptionBeforeClose,
                logger: logger)
            client.setRebalanceHandler(loop)
            loop.run()
        }
        thread.name = name
        thread.start()
    }

    private func run() {
        turns: while true {
            switch shared.state.withLock({ $0.nextPollStep() }) {
            case .close:
                break turns
            case .wait(let deadline):
                shared.waitForWakeUp(until: deadline)
            case .poll(let pause, let resume, let rewound):
                if let fatal = client.fatalError {
                    logger.error("Kafka consumer stops after a fatal error", metadata: ["error": "\(fatal)"])
                    break turns
                }
                for partition in rewound { nextOffsets[partition] = nil }
                apply(pause: pause, resume: resume)
                pollBatch()
            }
        }
        if leavesSubscriptionBeforeClose { leaveSubscription() }
        let result: Result<Void, KafkaError> = Result { try client.closeConsumer() }.mapError { error in
            error as? KafkaError ?? KafkaError.state("\(error)")
        }
        flushPending()
        source.finish()
        let waiters = shared.state.withLock { $0.closed(result) }
        for waiter in waiters {
            waiter.resume(with: result.mapError { $0 as any Error })
        }
    }

    /// Unsubscribes and polls until the revocation this causes has released every partition (at most
    /// `revocationTimeout`), so that the close that follows has no assignment to handle. Records polled meanwhile
    /// are dropped, as a close drops them: they were not committed, so the partitions' next owner reads them.
    private func leaveSubscription() {
        do {
            try client.unsubscribe()
        } catch {
            logger.warning("Kafka unsubscribe before close failed", metadata: ["error": "\(error)"])
            return
        }
        let deadline = ContinuousClock.now + revocationTimeout
        while client.hasAssignment, ContinuousClock.now < deadline {
            _ = client.pollRecord(timeoutMilliseconds: 100)
        }
    }

    private func apply(pause: [TopicPartition], resume: [TopicPartition]) {
        do {
            if !pause.isEmpty { try client.pause(pause) }
            if !resume.isEmpty { try client.resume(resume) }
        } catch {
            logger.error("Kafka pause or resume failed", metadata: ["error": "\(error)"])
        }
    }

    /// One turn: waits briefly for a first record, then takes what is already queued, up to `maxBatch`.
    private func pollBatch() {
        var timeout: Int32 = 100
        while batch.count < maxBatch, let record = client.pollRecord(timeoutMilliseconds: timeout) {
            timeout = 0
            let partition = record.topicPartition
            if let next = nextOffsets[partition], record.offset < next {
                repeatsDropped += 1
                continue
            }
            nextOffsets[partition] = record.offset + 1
            batch.append(record)
        }
        if repeatsDropped > 0 {
            logger.warning("Kafka records fetched again were dropped", metadata: ["count": "\(repeatsDropped)"])
            repeatsDropped = 0
        }
        flushPending()
    }

    /// Queues an event behind the records taken so far, so the reader sees everything in poll order.
    private func enqueue(_ event: KafkaConsumerEvent) {
        closeBatch()
        pending.append(event)
    }

    private func closeBatch() {
        guard !batch.isEmpty else { return }
        pending.append(.records(batch))
        batch = []
        batch.reserveCapacity(maxBatch)
    }

    private func flushPending() {
        closeBatch()
        guard !pending.isEmpty else { return }
        defer { pending.removeAll(keepingCapacity: true) }
        let (readerGone, generation) = shared.state.withLock { ($0.isReaderGone, $0.currentDemandGeneration) }
        if readerGone { return }
        switch source.yield(contentsOf: pending) {
        case .produceMore:
            break
        case .stopProducing:
            shared.state.withLock { $0.readerBufferFull(since: generation) }
        case .dropped:
            _ = shared.state.withLock { $0.readerTerminated() }
        }
    }

    func assigned(_ partitions: [TopicPartition]) {
        let pause = shared.state.withLock { $0.assigned(partitions) }
        apply(pause: pause, resume: [])
        logger.info("Kafka partitions assigned", metadata: ["partitions": "\(partitions)"])
        if !partitions.isEmpty {
            enqueue(.partitionsAssigned(partitions))
        }
    }

    /// Delivers the records still pending, then the revocation, and waits for the reader's acknowledgement.
    func revoking(_ partitions: [TopicPartition], lost: Bool) {
        logger.info("Kafka partitions revoked", metadata: ["partitions": "\(partitions)", "lost": "\(lost)"])
        if lost { shared.state.withLock { $0.assignmentLost() } }
        guard !partitions.isEmpty else { return }
        let revocation = PartitionRevocation()
        let (resume, awaitAcknowledgement) = shared.state.withLock {
            $0.revoking(partitions, revocation: revocation)
        }
        apply(pause: [], resume: resume)
        enqueue(.partitionsRevoked(partitions, revocation, lost: lost))
        flushPending()
        if awaitAcknowledgement, !revocation.awaitAcknowledgement(timeout: revocationTimeout) {
            logger.warning(
                "Kafka revocation not acknowledged in time; releasing the partitions",
                metadata: ["partitions": "\(partitions)", "timeout": "\(revocationTimeout)"]
            )
        }
    }

    func revoked(_ partitions: [TopicPartition]) {
        for partition in partitions { nextOffsets[partition] = nil }
        shared.state.withLock { $0.revoked(partitions) }
    }

    func rebalanceFailed(_ error: KafkaError) {
        logger.error("Kafka rebalance failed", metadata: ["error": "\(error)"])
        nextOffsets.removeAll()
        shared.state.withLock { $0.assignmentDropped() }
    }
}
