import Foundation
import Kafka
import LeadEvents
import Logging
import SeekerLeads
import ServiceLifecycle
import Synchronization

/// The relay as a service: consumes the input topic, takes every record to its outcome
/// concurrently, and commits each partition up to the first record whose outcome is not yet
/// acknowledged. On graceful shutdown it stops consuming, lets the records it holds finish within
/// the shutdown timeout, commits, and leaves the group.
public final class RelayService: Service, Sendable {
    public struct Settings: Sendable {
        public var inputTopic: String
        public var shutdownTimeout: Duration
        public var maxPendingRecords: Int
        /// How often completed offsets are committed while records flow.
        public var commitInterval: Duration = .milliseconds(200)
        /// How often consumer lag is published as a metric.
        public var lagInterval: Duration = .seconds(5)

        public init(inputTopic: String, shutdownTimeout: Duration, maxPendingRecords: Int) {
            self.inputTopic = inputTopic
            self.shutdownTimeout = shutdownTimeout
            self.maxPendingRecords = maxPendingRecords
        }
    }

    private let settings: Settings
    private let consumer: KafkaConsumer
    private let producer: KafkaProducer
    private let processor: RecordProcessor
    private let gates: SubmissionGates
    private let readiness: Readiness
    private let client: SeekerLeadsClient
    private let metrics: RelayMetrics
    private let offsets = OffsetTracker()
    private let pending: AsyncSlots
    /// The records on the submission path, while their task runs: what a shutdown or revocation may abandon.
    private let submissions = Mutex<[TopicPartition: [Int64: Submission]]>([:])

    private struct Submission: Sendable {
        var commitment: LeadCommitment
        var task: Task<Void, Never>
    }
    private let logger: Logger

    init(
        settings: Settings, consumer: KafkaConsumer, producer: KafkaProducer, processor: RecordProcessor,
        gates: SubmissionGates, readiness: Readiness, client: SeekerLeadsClient, metrics: RelayMetrics,
        logger: Logger
    ) {
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.processor = processor
        self.gates = gates
        self.readiness = readiness
        self.client = client
        self.metrics = metrics
        self.pending = AsyncSlots(capacity: settings.maxPendingRecords)
        self.logger = logger
    }

    public func run() async throws {
        try consumer.subscribe(topics: [settings.inputTopic])
        logger.info("relay started", metadata: ["topic": "\(settings.inputTopic)"])
        await withDiscardingTaskGroup { housekeeping in
            housekeeping.addTask { await self.commitPeriodically() }
            housekeeping.addTask { await self.publishLagPeriodically() }
            housekeeping.addTask { await self.followGates() }
            housekeeping.addTask { await self.confirmCredentials() }
            housekeeping.addTask { await self.purgeExpiredSubmissionsPeriodically() }
            await cancelWhenGracefulShutdown { await self.consume() }
            housekeeping.cancelAll()
        }
        await stop()
    }

    private func consume() async {
        for await event in consumer.events {
            switch event {
            case .records(let records):
                await take(records)
            case .partitionsAssigned(let partitions):
                logger.info("partitions assigned", metadata: ["partitions": "\(partitions)"])
                if gates.isHoldingSubmissions { pause(partitions) }
            case .partitionsRevoked(let partitions, let revocation):
                await finishRevoked(partitions)
                revocation.acknowledge()
            }
        }
    }

    /// Holds each record (waiting while `maxPendingRecords` are held) and starts it on its route. A record
    /// that needs the API gets a task of its own; the others complete in the producer's delivery report.
    private func take(_ records: [KafkaConsumerRecord]) async {
        for (record, route) in zip(records, processor.route(records)) {
            // Cancelled (shutting down): the records not begun stay uncommitted and are delivered again.
            guard !Task.isCancelled else { return }
            await pending.acquire()
            offsets.begin(record.topicPartition, offset: record.offset)
            switch route {
            case .known(let outcome):
                processor.publish(outcome, of: record) { self.finish(record) }
            case .submission(let event):
                startSubmission(event, of: record)
            }
        }
    }

    private func startSubmission(_ event: LeadEvent, of record: KafkaConsumerRecord) {
        let commitment = LeadCommitment()
        let partition = record.topicPartition
        // Holding the lock while the task starts keeps its removal below (which needs the lock) after its entry.
        submissions.withLock { entries in
            let task = Task {
                if await processor.submitAndPublish(event, of: record, commitment: commitment) {
                    finish(record)
                } else {
                    pending.release()
                }
                submissions.withLock { entries in
                    // A re-delivered record (the partition came back) may have taken this offset's entry meanwhile.
                    if entries[partition]?[record.offset]?.commitment === commitment {
                        entries[partition]?[record.offset] = nil
                    }
                }
            }
            entries[partition, default: [:]][record.offset] = Submission(commitment: commitment, task: task)
        }
    }

    /// Abandons, per partition, the tail of records whose leads have not been sent: the API's budget would
    /// otherwise keep a shutdown or a revocation waiting for leads it has not started. Records below the tail, and
    /// leads already sent, still finish.
    private func abandonUnsentTail(of partitions: [TopicPartition]) {
        var abandoned = 0
        for partition in partitions {
            abandoned += offsets.abandonTail(of: partition) { offset in
                submissions.withLock { entries in
                    guard let submission = entries[partition]?[offset], submission.commitment.abandon() else {
                        return false
                    }
                    submission.task.cancel()
                    return true
                }
            }
        }
        if abandoned > 0 {
            logger.info("leads not yet sent are left for the next run", metadata: ["count": "\(abandoned)"])
        }
    }

    private func finish(_ record: KafkaConsumerRecord) {
        offsets.complete(record.topicPartition, offset: record.offset)
        pending.release()
    }

    /// Gives the revoked partitions' records up to the shutdown timeout to finish, commits what is
    /// done, and forgets them; what did not finish is delivered again to the next owner.
    private func finishRevoked(_ partitions: [TopicPartition]) async {
        logger.info("partitions revoked; finishing their records", metadata: ["partitions": "\(partitions)"])
        abandonUnsentTail(of: partitions)
        let deadline = ContinuousClock.now + settings.shutdownTimeout
        while partitions.contains(where: { offsets.inFlightCount($0) > 0 }), ContinuousClock.now < deadline,
            !Task.isCancelled
        {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let done = offsets.committable().filter { partitions.contains($0.key) }
        do {
            if !done.isEmpty { try await consumer.commitAndWait(done) }
        } catch {
            logger.warning("commit of revoked partitions failed", metadata: ["error": "\(error)"])
        }
        offsets.remove(partitions)
    }

    private func stop() async {
        logger.info("relay stopping; finishing records in flight", metadata: ["pending": "\(pending.count)"])
        abandonUnsentTail(of: offsets.partitionsWithRecords)
        let drained = await pending.waitUntilEmpty(timeout: settings.shutdownTimeout)
        if !drained {
            logger.warning(
                "shutdown timeout reached; unfinished records will be delivered again",
                metadata: ["pending": "\(pending.count)"])
        }
        do {
            try await producer.flush(timeout: .seconds(5))
        } catch {
            logger.warning("producer flush failed", metadata: ["error": "\(error)"])
        }
        await commitCompleted(wait: true)
        do {
            try await consumer.close()
        } catch {
            logger.warning("consumer close failed", metadata: ["error": "\(error)"])
        }
        await producer.close()
        logger.info("relay stopped")
    }

    private func commitPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: settings.commitInterval)
            await commitCompleted(wait: false)
        }
    }

    private func commitCompleted(wait: Bool) async {
        let done = offsets.committable()
        guard !done.isEmpty else { return }
        do {
            if wait {
                try await consumer.commitAndWait(done)
            } else {
                try consumer.commit(done)
            }
            offsets.markCommitted(done)
        } catch {
            logger.warning("offset commit failed; retrying on the next round", metadata: ["error": "\(error)"])
        }
    }

    /// Readiness needs working credentials before the first lead needs them: fetch a token now,
    /// with back-off while the token endpoint fails.
    private func confirmCredentials() async {
        var delay: Duration = .milliseconds(200)
        while !Task.isCancelled {
            if await client.checkCredentials() {
                readiness.set(Readiness.credentials, passing: true)
                return
            }
            readiness.set(Readiness.credentials, passing: false, reason: "no access token could be obtained")
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(30))
        }
    }

    /// Keeps the dedupe store at the size of one TTL of submissions.
    private func purgeExpiredSubmissionsPeriodically() async {
        while !Task.isCancelled {
            do {
                let purged = try processor.dedupeStore.purgeExpired()
                if purged > 0 { logger.info("expired dedupe keys purged", metadata: ["count": "\(purged)"]) }
            } catch {
                logger.warning("purging expired dedupe keys failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(600))
        }
    }

    private func publishLagPeriodically() async {
        while !Task.isCancelled {
            metrics.recordLag(consumer.lag())
            metrics.setInProcessRecords(pending.count)
            try? await Task.sleep(for: settings.lagInterval)
        }
    }

    /// Pauses every assigned partition while the gates hold submissions (circuit open or
    /// credentials failing), so that an outage fills neither memory nor the dead-letter topic.
    private func followGates() async {
        await gates.followChanges { holding in
            let assigned = Array(self.consumer.assignment())
            if holding {
                self.logger.warning(
                    "submissions held; pausing partitions", metadata: ["partitions": "\(assigned.count)"])
                self.pause(assigned)
            } else {
                self.logger.info("submissions flowing again; resuming partitions")
                do { try self.consumer.resume(assigned) } catch {
                    self.logger.error("resume failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    private func pause(_ partitions: [TopicPartition]) {
        do { try consumer.pause(partitions) } catch {
            logger.error("pause failed", metadata: ["error": "\(error)"])
        }
    }
}
