import Crypto
import Foundation
import Kafka

/// What `lead-relay dlq replay` was asked to do.
public struct DeadLetterReplayOptions: Sendable {
    public var filter: DeadLetterFilter
    /// At most this many dead letters selected; the rest are left for the next run.
    public var limit: Int?
    /// At most this many records published per second.
    public var ratePerSecond: Double?
    public var dryRun: Bool
    /// The consumer group that records the replay's progress; nil names it after the relay's group and the filter.
    public var progressGroup: String?

    public init(
        filter: DeadLetterFilter, limit: Int? = nil, ratePerSecond: Double? = nil, dryRun: Bool = false,
        progressGroup: String? = nil
    ) {
        self.filter = filter
        self.limit = limit
        self.ratePerSecond = ratePerSecond
        self.dryRun = dryRun
        self.progressGroup = progressGroup
    }
}

/// How far a replay got: reported as it goes, and at its end.
public struct DeadLetterReplayReport: Sendable, Encodable {
    public var deadLetterTopic: String
    public var inputTopic: String
    public var progressGroup: String
    public var dryRun: Bool
    /// Dead letters after the group's progress when the replay started: what it reads at most.
    public var pending = 0
    public var read = 0
    public var selected = 0
    public var published = 0
    /// Selected, but replayed `LEAD_RELAY_MAX_REPLAYS` times already.
    public var refused = 0
    /// Read, but not selected by the filters.
    public var skipped = 0
    /// Could not be published; the replay stopped there.
    public var failed = 0
    /// Stopped by a signal before the end; running the same command again resumes.
    public var interrupted = false

    /// Exit status 0: nothing refused, failed or left by an interruption.
    public var isSuccess: Bool { refused == 0 && failed == 0 && !interrupted }
}

/// What a replay did with one selected dead letter.
public enum DeadLetterReplayEvent: Sendable {
    /// A dry run's: it would have been published.
    case wouldPublish(DeadLetterEntry)
    case published(DeadLetterEntry, KafkaDeliveryReport)
    case refused(DeadLetterEntry, maxReplays: Int)
    case failed(DeadLetterEntry, KafkaError)
}

extension DeadLetterQueue {
    /// `<relay group>.dlq-replay.<12 hex digits>`: the same topics and filters give the same group, so that the same
    /// replay run again resumes, while a replay of other dead letters keeps its own progress.
    public func progressGroup(for filter: DeadLetterFilter) -> String {
        let identity = [configuration.deadLetterTopic, configuration.inputTopic, filter.canonicalDescription]
            .joined(separator: "\n")
        let digest = SHA256.hash(data: Data(identity.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
        return "\(configuration.groupID).dlq-replay.\(digest)"
    }

    /// Publishes each selected dead letter to the input topic, from where the progress group stands to where the
    /// topic ended when the replay started. Progress is committed after each record the broker acknowledged, so
    /// that an interrupted replay resumes after it and a finished one publishes nothing when run again. Stops at
    /// the first record it cannot publish, and when the task is cancelled (after the record in hand).
    public func replay(
        _ options: DeadLetterReplayOptions,
        progress: (DeadLetterReplayReport) -> Void,
        event: (DeadLetterReplayEvent) -> Void
    ) async throws -> DeadLetterReplayReport {
        let group = options.progressGroup ?? progressGroup(for: options.filter)
        let report = DeadLetterReplayReport(
            deadLetterTopic: configuration.deadLetterTopic, inputTopic: configuration.inputTopic,
            progressGroup: group, dryRun: options.dryRun)
        let producer = try options.dryRun ? nil : KafkaProducer(configuration: producerConfiguration, logger: logger)
        do {
            let finished = try await replay(
                options, from: group, into: report, producer: producer, progress: progress, event: event)
            await producer?.close()
            return finished
        } catch {
            await producer?.close()
            throw error
        }
    }

    private func replay(
        _ options: DeadLetterReplayOptions, from group: String, into initial: DeadLetterReplayReport,
        producer: KafkaProducer?, progress: (DeadLetterReplayReport) -> Void, event: (DeadLetterReplayEvent) -> Void
    ) async throws -> DeadLetterReplayReport {
        var report = initial
        return try await withReader(groupID: group) { reader in
            let partitions = try await reader.partitions(of: configuration.deadLetterTopic)
            let watermarks = try await reader.watermarks(of: partitions)
            let committed = try await reader.committedOffsets(of: partitions)
            let start = watermarks.mapValues(\.lowerBound).merging(committed) { low, committed in max(low, committed) }
            let end = watermarks.mapValues(\.upperBound)
            report.pending = start.reduce(0) { $0 + Int(max(0, (end[$1.key] ?? 0) - $1.value)) }
            progress(report)
            var done: [TopicPartition: Int64] = [:]
            var pacing = Pacing(ratePerSecond: options.ratePerSecond)
            let now = Date()
            do {
                reading: for try await batch in try await reader.records(from: start, upTo: end) {
                    for record in batch {
                        if Task.isCancelled {
                            report.interrupted = true
                            break reading
                        }
                        let entry = DeadLetterEntry(record)
                        guard options.filter.matches(entry, now: now) else {
                            report.read += 1
                            report.skipped += 1
                            done[record.topicPartition] = record.offset + 1
                            continue
                        }
                        if let limit = options.limit, report.selected >= limit { break reading }
                        report.read += 1
                        report.selected += 1
                        if entry.replayCount >= configuration.maxReplays {
                            report.refused += 1
                            done[record.topicPartition] = record.offset + 1
                            event(.refused(entry, maxReplays: configuration.maxReplays))
                        } else if let producer {
                            await pacing.waitForNextStart()
                            let delivery: KafkaDeliveryReport
                            do {
                                delivery = try await producer.send(
                                    topic: configuration.inputTopic, key: record.key, value: record.value,
                                    headers: entry.replayHeaders())
                            } catch let error as KafkaError {
                                report.failed += 1
                                event(.failed(entry, error))
                                break reading
                            }
                            report.published += 1
                            done[record.topicPartition] = record.offset + 1
                            // A commit that fails ends the replay with its error: the record is published, and a
                            // run that does not know it would publish it again.
                            try await reader.commit(done)
                            event(.published(entry, delivery))
                        } else {
                            event(.wouldPublish(entry))
                        }
                        progress(report)
                    }
                    progress(report)
                }
            } catch is CancellationError {
                report.interrupted = true
            }
            if !options.dryRun, !done.isEmpty { try await reader.commit(done) }
            progress(report)
            return report
        }
    }

    /// Replayed records reach the input topic as soon as possible unless the operator configured a linger.
    private var producerConfiguration: KafkaConfiguration {
        var kafka = configuration.kafkaConfiguration
        if kafka.properties["linger.ms"] == nil { kafka.properties["linger.ms"] = "0" }
        return kafka
    }
}

/// Spaces the starts of publishes at most `ratePerSecond` apart; no limit without a rate.
private struct Pacing {
    let interval: Duration?
    var next = ContinuousClock.now

    init(ratePerSecond: Double?) {
        interval = ratePerSecond.map { .nanoseconds(Int64(1e9 / $0)) }
    }

    /// Returns early when the task is cancelled: the caller publishes the record in hand and then stops.
    mutating func waitForNextStart() async {
        guard let interval else { return }
        try? await Task.sleep(until: next, clock: .continuous)
        next = max(next, ContinuousClock.now) + interval
    }
}
