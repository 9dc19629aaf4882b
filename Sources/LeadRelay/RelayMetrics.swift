import CoreMetrics
import Foundation
import Kafka
import Synchronization

/// The relay's own metrics, created once. The API client's metrics (`lead_relay_api_*`, `lead_relay_budget_wait_seconds`,
/// `lead_relay_retries_total`) are emitted by the SeekerLeads module through the same swift-metrics backend.
///
/// Every labelled series a dashboard relies on exists from the start, at zero.
public final class RelayMetrics: Sendable {
    public enum Outcome: String, Sendable, CaseIterable {
        case submitted
        case duplicate
        case deadLettered = "dead_lettered"
    }

    /// The dead-letter reasons the relay gives; the series of each exists from the start.
    public static let deadLetterReasons = DeadLetter.Reason.allCases.map(\.rawValue)

    private let factory: any MetricsFactory
    private let recordsConsumed: Counter
    private let outcomes: [Outcome: Counter]
    private let deadLetters: [DeadLetter.Reason: Counter]
    private let endToEnd: CoreMetrics.Timer
    private let circuitOpen: Gauge
    private let authFailing: Gauge
    private let ready: Gauge
    private let inProcessRecords: Meter
    private let abandonedInFlight: Counter
    private let repeatedOutcomes: Counter
    private let consumerLag: PartitionGauges
    private let oldestUnfinishedAge: PartitionGauges

    /// `factory` is the process's backend by default; tests pass a `RelayMetricsFactory` over their own registry.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        recordsConsumed = Counter(label: "lead_relay_records_consumed_total", factory: factory)
        outcomes = Dictionary(
            uniqueKeysWithValues: Outcome.allCases.map { outcome in
                (
                    outcome,
                    Counter(
                        label: "lead_relay_outcomes_total", dimensions: [("outcome", outcome.rawValue)],
                        factory: factory)
                )
            })
        deadLetters = Dictionary(
            uniqueKeysWithValues: DeadLetter.Reason.allCases.map { reason in
                (
                    reason,
                    Counter(
                        label: "lead_relay_dead_letters_total", dimensions: [("reason", reason.rawValue)],
                        factory: factory)
                )
            })
        endToEnd = CoreMetrics.Timer(label: "lead_relay_end_to_end_seconds", factory: factory)
        circuitOpen = Gauge(label: "lead_relay_circuit_open", factory: factory)
        authFailing = Gauge(label: "lead_relay_auth_failing", factory: factory)
        ready = Gauge(label: "lead_relay_ready", factory: factory)
        inProcessRecords = Meter(label: "lead_relay_in_process_records", factory: factory)
        abandonedInFlight = Counter(label: "lead_relay_abandoned_in_flight_total", factory: factory)
        repeatedOutcomes = Counter(label: "lead_relay_repeated_outcomes_total", factory: factory)
        consumerLag = PartitionGauges(label: "lead_relay_consumer_lag", factory: factory)
        oldestUnfinishedAge = PartitionGauges(label: "lead_relay_oldest_unfinished_age_seconds", factory: factory)
        for counter in Array(outcomes.values) + Array(deadLetters.values) + [abandonedInFlight, repeatedOutcomes] {
            counter.increment(by: 0)
        }
        for gauge in [circuitOpen, authFailing, ready] { gauge.record(0) }
        inProcessRecords.set(0)
    }

    public func recordConsumed(count: Int = 1) {
        recordsConsumed.increment(by: count)
    }

    /// One record reached `outcome`, acknowledged now; `recordTimestamp` (the Kafka record's) starts the
    /// end-to-end time.
    func recordOutcome(_ outcome: Outcome, deadLetterReason: DeadLetter.Reason? = nil, recordTimestamp: Date?) {
        outcomes[outcome]?.increment()
        if let deadLetterReason { deadLetters[deadLetterReason]?.increment() }
        if let recordTimestamp {
            let elapsed = max(0, Date().timeIntervalSince(recordTimestamp))
            endToEnd.recordNanoseconds(Int64(elapsed * 1e9))
        }
    }

    public func setCircuitOpen(_ open: Bool) { circuitOpen.record(open ? 1 : 0) }
    public func setAuthFailing(_ failing: Bool) { authFailing.record(failing ? 1 : 0) }
    public func setReady(_ isReady: Bool) { ready.record(isReady ? 1 : 0) }
    public func setInProcessRecords(_ count: Int) { inProcessRecords.set(count) }

    /// Leads already sent whose answer had not come when a shutdown or revocation stopped waiting for them.
    func recordAbandonedInFlight(count: Int) { abandonedInFlight.increment(by: count) }

    /// Records whose outcome was published but could not be committed (the group took the partition away first):
    /// their next owner publishes their outcome again.
    func recordRepeatedOutcomes(count: Int) { repeatedOutcomes.increment(by: count) }

    /// Gives newly assigned partitions their lag series at once, at 0 until the next `recordLag(_:assignment:)`, so
    /// that a scrape right after an assignment already has them.
    public func partitionsAssigned(_ partitions: [TopicPartition]) {
        consumerLag.add(partitions)
        oldestUnfinishedAge.add(partitions)
    }

    /// Updates the lag series of the assigned partitions: one whose watermark is not known yet (librdkafka has not
    /// fetched it, or just lost it) keeps its last value instead of vanishing from the scrape; partitions no longer
    /// assigned lose theirs.
    public func recordLag(_ lag: [TopicPartition: Int64], assignment: Set<TopicPartition>) {
        consumerLag.record(lag.mapValues(Double.init), assignment: assignment)
    }

    /// Lag in time: per assigned partition, how long ago its oldest unfinished record was written (0 with none).
    func recordOldestUnfinishedAge(_ ages: [TopicPartition: Double], assignment: Set<TopicPartition>) {
        oldestUnfinishedAge.record(
            Dictionary(uniqueKeysWithValues: assignment.map { ($0, ages[$0] ?? 0) }), assignment: assignment)
    }
}

/// One gauge per assigned partition, labelled `topic` and `partition`; a partition's series goes when it does.
private final class PartitionGauges: Sendable {
    private let label: String
    private let factory: any MetricsFactory
    private let gauges = Mutex<[TopicPartition: Gauge]>([:])

    init(label: String, factory: any MetricsFactory) {
        self.label = label
        self.factory = factory
    }

    /// New partitions' series at 0.
    func add(_ partitions: [TopicPartition]) {
        gauges.withLock { gauges in
            for partition in partitions where gauges[partition] == nil {
                let gauge = gauge(partition)
                gauge.record(0)
                gauges[partition] = gauge
            }
        }
    }

    /// A partition without a value keeps its last one (0 if it had none); partitions not in `assignment` go.
    func record(_ values: [TopicPartition: Double], assignment: Set<TopicPartition>) {
        let gone = gauges.withLock { gauges -> [Gauge] in
            var gone: [Gauge] = []
            for (partition, gauge) in gauges where !assignment.contains(partition) {
                gone.append(gauge)
                gauges[partition] = nil
            }
            for partition in assignment {
                let gauge = gauges[partition] ?? self.gauge(partition)
                if let value = values[partition] {
                    gauge.record(max(0, value))
                } else if gauges[partition] == nil {
                    gauge.record(0)
                }
                gauges[partition] = gauge
            }
            return gone
        }
        for gauge in gone { gauge.destroy() }
    }

    private func gauge(_ partition: TopicPartition) -> Gauge {
        Gauge(
            label: label, dimensions: [("topic", partition.topic), ("partition", String(partition.partition))],
            factory: factory)
    }
}
