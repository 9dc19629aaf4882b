import CoreMetrics
import Foundation
import Kafka
import Prometheus
import TestSupport
import Testing

@testable import LeadRelay

/// promtool, when installed (make test's set-up installs it).
let promtoolPath: String? = ["/usr/bin/promtool", "/usr/local/bin/promtool", "/bin/promtool"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// Runs `promtool check metrics` on `exposition`; returns its exit status and output.
func promtoolCheck(_ exposition: String, promtool: String) throws -> (status: Int32, output: String) {
    let run = try CompletedProcess.run(
        URL(fileURLWithPath: promtool), arguments: ["check", "metrics"], standardInput: Array(exposition.utf8))
    return (run.status, run.standardOutput + run.standardError)
}

@Suite struct RelayMetricsTests {
    /// Everything the relay and the API client emit, over a private registry.
    static func populatedRegistry() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        let factory = RelayMetricsFactory(registry: registry)
        let metrics = RelayMetrics(factory: factory)
        metrics.recordConsumed()
        metrics.recordOutcome(.submitted, recordTimestamp: Date().addingTimeInterval(-2))
        metrics.recordOutcome(.deadLettered, deadLetterReason: .schemaViolation, recordTimestamp: nil)
        metrics.setCircuitOpen(true)
        metrics.setInProcessRecords(7)
        let p3 = TopicPartition(topic: "leads.submitted", partition: 3)
        metrics.recordLag([p3: 42], assignment: [p3])
        metrics.recordOldestUnfinishedAge([p3: 12.5], assignment: [p3])
        // As the SeekerLeads module reports them through swift-metrics.
        Counter(
            label: "lead_relay_api_requests_total", dimensions: [("route", "create_lead"), ("code", "201")],
            factory: factory
        ).increment()
        CoreMetrics.Timer(label: "lead_relay_api_request_duration_seconds", factory: factory)
            .recordMilliseconds(120)
        Meter(label: "lead_relay_api_in_flight", factory: factory).set(3)
        CoreMetrics.Timer(label: "lead_relay_budget_wait_seconds", factory: factory).recordMilliseconds(15)
        Counter(label: "lead_relay_retries_total", factory: factory).increment()
        CoreMetrics.Timer(label: "lead_relay_budget_timer_lateness_seconds", factory: factory).recordMicroseconds(80)
        // With a shared database; the SharedState module counts its round trips itself.
        let shared = SharedStateMetrics(factory: factory)
        shared.grants.increment()
        shared.grantWait.recordMilliseconds(4)
        shared.groupInFlight.record(6)
        shared.claimsWaited.increment()
        shared.claimsTakenOver.increment()
        shared.inDoubtAfterTakeOver.increment()
        Counter(label: "lead_relay_database_round_trips_total", dimensions: [("operation", "claim")], factory: factory)
            .increment()
        // As the Reconciler reports them.
        Counter(label: "lead_relay_reconciled_total", dimensions: [("result", "found")], factory: factory).increment()
        Gauge(label: "lead_relay_reconciliations_waiting", factory: factory).record(2)
        return registry
    }

    @Test func seriesDashboardsRelyOnExistFromTheStart() {
        let registry = PrometheusCollectorRegistry()
        _ = RelayMetrics(factory: RelayMetricsFactory(registry: registry))
        let text = registry.emitToString()
        for outcome in ["submitted", "duplicate", "dead_lettered"] {
            #expect(text.contains("lead_relay_outcomes_total{outcome=\"\(outcome)\"} 0"))
        }
        for reason in RelayMetrics.deadLetterReasons {
            #expect(text.contains("lead_relay_dead_letters_total{reason=\"\(reason)\"} 0"))
        }
        for gauge in ["lead_relay_circuit_open 0", "lead_relay_ready 0", "lead_relay_auth_failing 0"] {
            #expect(text.contains(gauge))
        }
        #expect(text.contains("# TYPE lead_relay_end_to_end_seconds histogram"))
    }

    @Test func recordedValuesAppear() {
        let text = Self.populatedRegistry().emitToString()
        #expect(text.contains("lead_relay_records_consumed_total 1"))
        #expect(text.contains("lead_relay_outcomes_total{outcome=\"submitted\"} 1"))
        #expect(text.contains("lead_relay_outcomes_total{outcome=\"dead_lettered\"} 1"))
        #expect(text.contains("lead_relay_dead_letters_total{reason=\"schema-violation\"} 1"))
        #expect(text.contains("lead_relay_circuit_open 1"))
        #expect(text.contains("lead_relay_consumer_lag{topic=\"leads.submitted\",partition=\"3\"} 42"))
        #expect(
            text.contains("lead_relay_oldest_unfinished_age_seconds{topic=\"leads.submitted\",partition=\"3\"} 12.5"))
        #expect(text.contains("lead_relay_end_to_end_seconds_count 1"))
        #expect(text.contains("lead_relay_end_to_end_seconds_bucket{le=\"2.5\"} 1"))
        #expect(text.contains("lead_relay_api_request_duration_seconds_bucket{le=\"0.2\"} 1"))
        #expect(text.contains("lead_relay_api_request_duration_seconds_sum 0.12"))
        #expect(text.contains("lead_relay_budget_wait_seconds_count 1"))
        #expect(text.contains("lead_relay_api_in_flight 3"))
        #expect(text.contains("lead_relay_retries_total 1"))
        #expect(text.contains("# HELP lead_relay_api_requests_total "))
    }

    @Test func revokedPartitionsLoseTheirLagSeries() {
        let registry = PrometheusCollectorRegistry()
        let metrics = RelayMetrics(factory: RelayMetricsFactory(registry: registry))
        let p0 = TopicPartition(topic: "leads.submitted", partition: 0)
        let p1 = TopicPartition(topic: "leads.submitted", partition: 1)
        metrics.recordLag([p0: 5, p1: 6], assignment: [p0, p1])
        metrics.recordLag([p1: 1], assignment: [p1])
        let text = registry.emitToString()
        #expect(!text.contains("partition=\"0\""))
        #expect(text.contains("lead_relay_consumer_lag{topic=\"leads.submitted\",partition=\"1\"} 1"))
    }

    @Test(.enabled(if: promtoolPath != nil)) func expositionPassesPromtool() throws {
        let result = try promtoolCheck(Self.populatedRegistry().emitToString(), promtool: try #require(promtoolPath))
        #expect(result.status == 0, "promtool: \(result.output)")
    }

    /// Every metric label in the sources, as written at its creation.
    static func labelsInSources() throws -> Set<String> {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources")
        var labels = Set<String>()
        let files = try #require(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
        for case let file as URL in files where file.pathExtension == "swift" {
            let text = try String(contentsOf: file, encoding: .utf8)
            for match in text.matches(of: #/label: "(lead_relay_[a-z_]+)"/#) { labels.insert(String(match.1)) }
        }
        return labels
    }

    /// A metric without its own help text would show the factory's fallback, which says nothing of what it measures.
    @Test func everyMetricInTheSourcesHasAHelpText() throws {
        let labels = try Self.labelsInSources()
        #expect(labels.count >= 16, "\(labels)")
        let missing = labels.filter { RelayMetricsFactory.helpTexts[$0] == nil }
        #expect(missing.isEmpty, "no help text: \(missing.sorted())")
    }

    @Test func everyHelpLineOfAScrapeSaysWhatItMeasures() throws {
        let text = Self.populatedRegistry().emitToString()
        let helpLines = text.split(separator: "\n").filter { $0.hasPrefix("# HELP ") }
        let helped = Set(helpLines.compactMap { $0.split(separator: " ").dropFirst(2).first.map(String.init) })
        #expect(helped == Set(RelayMetricsFactory.helpTexts.keys), "\(text)")
        #expect(!text.contains("reported through swift-metrics"), "\(text)")
    }

    @Test func assignedPartitionsHaveALagSeriesAtOnceThatOutlivesAnUnknownWatermark() {
        let registry = PrometheusCollectorRegistry()
        let metrics = RelayMetrics(factory: RelayMetricsFactory(registry: registry))
        let first = TopicPartition(topic: "leads.submitted", partition: 0)
        let second = TopicPartition(topic: "leads.submitted", partition: 1)
        metrics.partitionsAssigned([first, second])
        var text = registry.emitToString()
        #expect(text.contains(#"lead_relay_consumer_lag{topic="leads.submitted",partition="0"} 0"#), "\(text)")
        #expect(text.contains(#"lead_relay_consumer_lag{topic="leads.submitted",partition="1"} 0"#), "\(text)")
        metrics.recordLag([first: 5, second: 7], assignment: [first, second])
        // The second partition's watermark is not known this time: it keeps its value.
        metrics.recordLag([first: 3], assignment: [first, second])
        text = registry.emitToString()
        #expect(text.contains(#"lead_relay_consumer_lag{topic="leads.submitted",partition="0"} 3"#), "\(text)")
        #expect(text.contains(#"lead_relay_consumer_lag{topic="leads.submitted",partition="1"} 7"#), "\(text)")
        metrics.recordLag([first: 1], assignment: [first])
        text = registry.emitToString()
        #expect(!text.contains(#"lead_relay_consumer_lag{topic="leads.submitted",partition="1""#), "\(text)")
    }
}
