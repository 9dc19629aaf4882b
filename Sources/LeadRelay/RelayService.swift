import Foundation
import Kafka
import LeadEvents
import Logging
import RelayPrimitives
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
        /// The shortest time between two commits while records flow.
        public var commitInterval: Duration = .milliseconds(50)
        /// How often consumer lag is published as a metric.
        public var lagInterval: Duration = .seconds(5)

        public init(inputTopic: String, shutdownTimeout: Duration, maxPendingRecords: Int) {
            self.inputTopic = inputTopic
            self.shutdownTimeout = shutdownTimeout
            self.maxPendingRecords = maxPendingRecords
        }
    }

    private let settings: Settings
    private let consumer: any RelayConsumer
    private let producer: any OutcomeProducer
    private let processor: RecordProcessor
    private let gates: SubmissionGates
    private let readiness: Readiness
    private let metrics: RelayMetrics
    private let offsets = OffsetTracker()
    /// The group's committed offsets, as the coordinator last answered (`refreshGroupCommitted`).
    private let groupCommitted = Mutex<[TopicPartition: Int64]>([:])
    private let admission: RecordAdmission<RecordProcessor.Route>
    /// The records on the submission path, while their task runs: what a shutdown or revocation may abandon.
    private let submissions = Mutex<[TopicPartition: [Int64: Submission]]>([:])

    private struct Submission: Sendable {
        var commitment: LeadCommitment
        var task: Task<Void, Never>
    }
    private let logger: Logger

    init(
        settings: Settings, consumer: any RelayConsumer, producer: any OutcomeProducer, processor: RecordProcessor,
        gates: SubmissionGates, readiness: Readiness, metrics: RelayMetrics, logger: Logger
    ) {
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.processor = processor
        self.gates = gates
        self.readiness = readiness
        self.metrics = metrics
        self.admission = RecordAdmission(capacity: settings.maxPendingRecords, offsets: offsets) { hold in
            consumer.holdFetching(hold)
        }
        self.logger = logger
    }

    public func run() async throws {
        try consumer.subscribe(topics: [settings.inputTopic])
        logger.info("relay started", metadata: ["topic": "\(settings.inputTopic)"])
        await withDiscardingTaskGroup { housekeeping in
            housekeeping.addTask { await self.commitPromptly() }
            housekeeping.addTask { await self.publishLagPeriodically() }
            housekeeping.addTask { await self.followGates() }
            housekeeping.addTask { await self.confirmCredentials() }
            housekeeping.addTask { await self.purgeExpiredSubmissionsPeriodically() }
            await cancelWhenGracefulShutdown { await self.consume() }
            housekeeping.cancelAll()
        }
        await stop()
    }

    /// Never waits for the relay's capacity (records beyond it queue in `admission`), so a revocation or a shutdown
    /// is answered at once however many records are held.
    private func consume() async {
        for await event in consumer.events {
            switch event {
            case .records(let records):
                start(admission.enqueue(zip(records, await routes(of: records)).map { .init(record: $0, work: $1) }))
            case .partitionsAssigned(let partitions):
                logger.info("partitions assigned", metadata: ["partitions": "\(partitions)"])
                metrics.partitionsAssigned(partitions)
            case .partitionsRevoked(let partitions, let revocation, let lost):
                await finishRevoked(Set(partitions), lost: lost)
                revocation.acknowledge()
            }
        }
    }

    /// The route of each record, in order: records whose outcome this relay published before their partition came
    /// back need none.
    private func routes(of records: [KafkaConsumerRecord]) async -> [RecordProcessor.Route] {
        guard let finishedEarlier = offsets.finishedBeforeRevocation(records), finishedEarlier.contains(true) else {
            return await processor.route(records)
        }
        var fresh = await processor.route(zip(records, finishedEarlier).filter { !$0.1 }.map(\.0)).makeIterator()
        return finishedEarlier.map { $0 ? .finishedBeforeRevocation : fresh.next()! }
    }

    /// Starts admitted records on their route. A record that needs the API gets a task of its own; the others
    /// complete in the producer's delivery report.
    private func start(_ admitted: [RecordAdmission<RecordProcessor.Route>.Entry]) {
        for entry in admitted {
            switch entry.work {
            case .known(let outcome):
                processor.publish(outcome, of: entry.record) { self.finish(entry.record) }
            case .submission(let event):
                startSubmission(event, of: entry.record)
            case .finishedBeforeRevocation:
                finish(entry.record)
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
                    start(admission.release())
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
    private func abandonUnsentTail(of partitions: some Sequence<TopicPartition>) {
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

    /// Cancels the submissions of `partitions` (all when nil) still running: leads already sent whose answer did not
    /// come in time. Their records stay uncommitted; they are counted and logged (one line), since the next owner
    /// may post them again.
    private func abandonInFlight(of partitions: Set<TopicPartition>?) {
        let stranded = submissions.withLock { entries -> [(TopicPartition, Int64, Submission)] in
            entries.flatMap { partition, byOffset in
                partitions.map { $0.contains(partition) } ?? true
                    ? byOffset.map { (partition, $0.key, $0.value) } : []
            }
        }
        guard !stranded.isEmpty else { return }
        for (_, _, submission) in stranded { submission.task.cancel() }
        logger.warning(
            "leads already sent had no final answer in time; their records will be delivered again",
            metadata: [
                "count": "\(stranded.count)",
                "records": "\(stranded.prefix(20).map { "\($0.0)@\($0.1)" }.joined(separator: ","))",
            ])
        metrics.recordAbandonedInFlight(count: stranded.count)
    }

    private func finish(_ record: KafkaConsumerRecord) {
        offsets.complete(record.topicPartition, offset: record.offset)
        start(admission.release())
    }

    /// Drops the revoked partitions' waiting records, gives their held records up to the shutdown timeout to
    /// finish (woken by their completion), commits what is done unless the partitions were lost, and forgets them;
    /// what did not finish is delivered again to the next owner.
    private func finishRevoked(_ partitions: Set<TopicPartition>, lost: Bool) async {
        logger.info(
            "partitions revoked; finishing their records",
            metadata: ["partitions": "\(partitions.sorted { $0.description < $1.description })", "lost": "\(lost)"])
        admission.discardQueued(of: partitions)
        abandonUnsentTail(of: partitions)
        let idle = await offsets.waitUntilIdle(partitions, deadline: .now + settings.shutdownTimeout)
        if !idle { abandonInFlight(of: partitions) }
        if !lost { await commitCompleted(of: partitions) }
        let repeated = offsets.remove(partitions)
        if repeated > 0 {
            metrics.recordRepeatedOutcomes(count: Int(repeated))
            logger.warning(
                "outcomes published but not committed before the partitions were taken; their next owner repeats them",
                metadata: ["count": "\(repeated)"])
        }
    }

    /// Ends within the shutdown timeout plus a little over a second, whatever the relay holds and whether or not a
    /// broker answers: each step past the drain gets what is left of a fixed allowance.
    private func stop() async {
        let drainDeadline = ContinuousClock.now + settings.shutdownTimeout
        logger.info(
            "relay stopping; finishing records in flight",
            metadata: ["held": "\(admission.heldCount)", "queued": "\(admission.queuedCount)"])
        admission.discardQueued(of: nil)
        abandonUnsentTail(of: offsets.partitionsWithRecords)
        // What is done is committed before the drain too: another relay leaving the group meanwhile would make the
        // group refuse commits until its rebalance is over.
        await commitCompleted(timeout: min(.seconds(1), settings.shutdownTimeout))
        if !(await admission.waitUntilNoneHeld(deadline: drainDeadline)) {
            logger.warning(
                "shutdown timeout reached; unfinished records will be delivered again",
                metadata: ["held": "\(admission.heldCount)"])
            abandonInFlight(of: nil)
        }
        // The steps after the drain get 1.5 s together, or what is left of the shutdown timeout if that is more:
        // the final commit may go on retrying through a rebalance, but leaves the closes their 0.9 s, since a relay
        // that does not leave the group holds its partitions until its session times out.
        let end = max(drainDeadline, ContinuousClock.now + .milliseconds(1500))
        func remaining(atMost cap: Duration, reserving reserve: Duration = .zero) -> Duration {
            max(.zero, min(cap, end - reserve - .now))
        }
        do {
            try await producer.flush(timeout: remaining(atMost: .milliseconds(300), reserving: .milliseconds(1200)))
        } catch {
            logger.warning("producer flush failed", metadata: ["error": "\(error)"])
        }
        await commitBeforeLeaving(until: end - .milliseconds(900))
        do {
            try await consumer.close(timeout: remaining(atMost: .milliseconds(700), reserving: .milliseconds(200)))
        } catch {
            logger.warning("consumer close failed", metadata: ["error": "\(error)"])
        }
        await producer.close(flushTimeout: remaining(atMost: .milliseconds(200)))
        logger.info("relay stopped")
    }

    /// Commits soon after records finish (at most every `commitInterval`), and not at all while nothing finishes: the
    /// less that is uncommitted when the group takes a partition away, the less its next owner repeats.
    private func commitPromptly() async {
        while !Task.isCancelled {
            await offsets.waitUntilCommittable()
            await commitCompleted()
            try? await Task.sleep(for: settings.commitInterval)
        }
    }

    /// The last commit: while the group rebalances (another relay leaving at the same time) it is refused, and
    /// while this relay rejoins it is not sent, so it is retried until the rebalance is over or `deadline` passes.
    /// Once rejoined, the relay commits what it finished whether or not the group gave the partitions back.
    private func commitBeforeLeaving(until deadline: ContinuousClock.Instant) async {
        let backoff = Backoff(base: .milliseconds(100), max: .seconds(1))
        var refusals = 0
        while deadline > .now {
            if await commitCompleted(timeout: deadline - .now) { return }
            // A refused commit is retried once the group had time to finish its rebalance.
            refusals += 1
            try? await Task.sleep(for: min(backoff.delay(afterAttempt: refusals), max(.zero, deadline - .now)))
        }
        let uncommitted = offsets.remove(offsets.committable().keys)
        guard uncommitted > 0 else { return }
        metrics.recordRepeatedOutcomes(count: Int(uncommitted))
        logger.warning(
            "final commit did not succeed in time; their next owner repeats these outcomes",
            metadata: ["count": "\(uncommitted)"])
    }

    /// Commits what is done and waits for the answer: only an acknowledged commit is marked as committed, so a commit
    /// the group refused (while it rebalances) is made again, at the latest when the partition is revoked.
    /// `partitions` nil commits every partition. Returns whether nothing was left to commit.
    @discardableResult
    private func commitCompleted(of partitions: Set<TopicPartition>? = nil, timeout: Duration = .seconds(5)) async
        -> Bool
    {
        let done = offsets.committable().filter { partitions?.contains($0.key) ?? true }
        guard !done.isEmpty else { return true }
        do {
            if try await consumer.commitAndWait(done, timeout: timeout) {
                offsets.markCommitted(done)
                return true
            }
        } catch {
            logger.warning("offset commit failed; retrying on the next round", metadata: ["error": "\(error)"])
        }
        return false
    }

    /// Readiness needs working credentials before the first lead needs them: fetch a token now,
    /// with back-off while the token endpoint fails.
    private func confirmCredentials() async {
        let backoff = Backoff(base: .milliseconds(200), max: .seconds(30))
        var failedAttempts = 0
        while !Task.isCancelled {
            if await processor.submitter.checkCredentials() {
                readiness.set(Readiness.credentials, passing: true)
                return
            }
            readiness.set(Readiness.credentials, passing: false, reason: "no access token could be obtained")
            failedAttempts += 1
            try? await Task.sleep(for: backoff.delay(afterAttempt: failedAttempts))
        }
    }

    /// Keeps the dedupe store at the size of one TTL of submissions.
    private func purgeExpiredSubmissionsPeriodically() async {
        while !Task.isCancelled {
            do {
                let purged = try await processor.dedupeStore.purgeExpired(now: Date())
                if purged > 0 { logger.info("expired dedupe keys purged", metadata: ["count": "\(purged)"]) }
            } catch {
                logger.warning("purging expired dedupe keys failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(600))
        }
    }

    private func publishLagPeriodically() async {
        while !Task.isCancelled {
            await refreshGroupCommitted()
            refreshPartitionGauges()
            try? await Task.sleep(for: settings.lagInterval)
        }
    }

    /// Asks the coordinator where the group stands in the assigned partitions this relay has not read from yet: their
    /// lag counts from there, not from the partition's first record.
    private func refreshGroupCommitted() async {
        let positions = consumer.positions()
        guard positions.values.contains(where: { $0.position == nil }),
            let committed = try? await consumer.committedOffsets(timeout: .seconds(2))
        else { return }
        groupCommitted.withLock { $0 = committed }
    }

    /// Per assigned partition whose end is known: records from where the relay reads next (its position, else the
    /// group's commit) to the end.
    private func lag(_ positions: [TopicPartition: KafkaPartitionPosition], committed: [TopicPartition: Int64])
        -> [TopicPartition: Int64]
    {
        var lag: [TopicPartition: Int64] = [:]
        for (partition, position) in positions {
            lag[partition] = position.lag(committed: committed[partition])
        }
        return lag
    }

    /// Lag in records and in time, and the records held: also at each scrape, so that an age is current.
    public func refreshPartitionGauges() {
        let assignment = consumer.assignment()
        metrics.recordLag(
            lag(consumer.positions(), committed: groupCommitted.withLock { $0 }), assignment: assignment)
        let now = Date()
        var ages: [TopicPartition: Double] = [:]
        for (partition, oldest) in oldestUnfinished() {
            ages[partition] = max(0, now.timeIntervalSince(oldest.since))
        }
        metrics.recordOldestUnfinishedAge(ages, assignment: assignment)
        metrics.setInProcessRecords(admission.heldCount)
    }

    /// Per partition, the first record received and not finished: begun, else still queued for admission.
    private func oldestUnfinished() -> [TopicPartition: (offset: Int64, since: Date, held: Int)] {
        let unfinished = offsets.unfinished()
        let queued = admission.queuedByPartition()
        var oldest: [TopicPartition: (offset: Int64, since: Date, held: Int)] = [:]
        for partition in Set(unfinished.keys).union(queued.keys) {
            let begun = unfinished[partition]
            let waiting = queued[partition]
            let held = (begun?.inFlight ?? 0) + (waiting?.count ?? 0)
            if let offset = begun?.oldestOffset, let since = begun?.oldestSince {
                oldest[partition] = (offset, since, held)
            } else if let first = waiting?.first {
                oldest[partition] = (first.offset, first.timestamp ?? Date(), held)
            }
        }
        return oldest
    }

    /// Per assigned partition, where the relay stands: for `GET /status`. The committed offsets are asked of the
    /// group's coordinator (at most 2 s; nil each when it does not answer).
    public func partitionStatus() async -> [PartitionStatus] {
        let positions = consumer.positions()
        let committed = try? await consumer.committedOffsets(timeout: .seconds(2))
        let lags = lag(positions, committed: committed ?? groupCommitted.withLock { $0 })
        let oldest = oldestUnfinished()
        let now = Date()
        return consumer.assignment().sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }.map { partition in
            let position = positions[partition]
            let first = oldest[partition]
            return PartitionStatus(
                topic: partition.topic, partition: partition.partition, committedOffset: committed?[partition],
                position: position?.position, highWatermark: position?.highWatermark, lag: lags[partition],
                recordsHeld: first?.held ?? 0, oldestUnfinishedOffset: first?.offset,
                oldestUnfinishedAgeSeconds: first.map { max(0, now.timeIntervalSince($0.since)) })
        }
    }

    /// Holds fetching while the gates hold submissions (circuit open or credentials failing), so that an outage
    /// fills neither memory nor the dead-letter topic.
    private func followGates() async {
        await gates.followChanges { holding in
            if holding {
                self.logger.warning("submissions held; fetching paused")
            } else {
                self.logger.info("submissions flowing again; fetching resumed")
            }
            self.admission.holdFetching(holding)
        }
    }
}
