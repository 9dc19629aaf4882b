import CoreMetrics
import Prometheus
import RelayPrimitives

/// swift-metrics over a Prometheus registry, as `PrometheusMetricsFactory` but with a `# HELP` line for every metric
/// (`promtool check metrics` requires one) and histogram buckets chosen per metric. Timers become histograms in
/// seconds; gauges and meters become gauges.
public struct RelayMetricsFactory: MetricsFactory {
    public let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Makes this factory the process's swift-metrics backend, so that every module's metrics land in `registry`.
    /// Call once, at start-up.
    public static func bootstrap(registry: PrometheusCollectorRegistry) {
        MetricsSystem.bootstrap(RelayMetricsFactory(registry: registry))
    }

    /// Every metric the relay's modules create has an entry (a test checks the sources); the fallback in
    /// `descriptor` is for metrics of other libraries.
    static let helpTexts: [String: String] = [
        "lead_relay_records_consumed_total": "Records taken from the input topic.",
        "lead_relay_outcomes_total": "Records that reached their outcome, by outcome.",
        "lead_relay_dead_letters_total": "Records dead-lettered, by reason.",
        "lead_relay_circuit_open": "1 while the circuit is open after consecutive transient API failures.",
        "lead_relay_auth_failing": "1 while the API refuses the credentials.",
        "lead_relay_ready": "1 while every readiness check passes.",
        "lead_relay_consumer_lag": "Records behind the end of the partition.",
        "lead_relay_oldest_unfinished_age_seconds":
            "Seconds since the oldest record received and not yet at its outcome was written (0 with none).",
        "lead_relay_in_process_records": "Records consumed and not yet at their outcome.",
        "lead_relay_abandoned_in_flight_total":
            "Leads sent to the API whose answer had not come when a shutdown or revocation stopped waiting.",
        "lead_relay_repeated_outcomes_total":
            "Published outcomes whose offsets the group refused to commit; the next owner publishes them again.",
        "lead_relay_end_to_end_seconds": "From the record's timestamp to its acknowledged outcome.",
        "lead_relay_api_requests_total": "Requests to the Seeker Leads API, by route and HTTP status code.",
        "lead_relay_api_request_duration_seconds": "Duration of requests to the Seeker Leads API.",
        "lead_relay_api_in_flight": "Requests to the Seeker Leads API outstanding.",
        "lead_relay_budget_wait_seconds": "Time spent waiting for the rate budget before a request.",
        "lead_relay_budget_timer_lateness_seconds":
            "How late the rate budget's timer woke a waiting request after its due instant (scheduling delay).",
        "lead_relay_retries_total": "Retries of transient API failures.",
        "lead_relay_database_round_trips_total": "Statements sent to the shared PostgreSQL database, by operation.",
        "lead_relay_shared_budget_grants_total": "API request starts this relay was granted by the shared budget.",
        "lead_relay_shared_budget_grant_wait_seconds": "Time this relay waited for a grant of the shared budget.",
        "lead_relay_shared_budget_group_in_flight":
            "API requests outstanding in the whole group, as of this relay's last grant.",
        "lead_relay_shared_budget_start_lag_seconds":
            "From a shared-budget grant's instant to its request's write as counted, by the database's clock.",
        "lead_relay_database_clock_uncertainty_seconds":
            "Width of this relay's bounds on the offset between its clock and the database's, at the last start.",
        "lead_relay_claims_waited_total": "Times a lead waited for another relay's claim of its dedupe key to end.",
        "lead_relay_claims_taken_over_total": "Claims of a stopped relay taken over after they expired.",
        "lead_relay_in_doubt_total":
            "Leads an earlier attempt may have stored without saying so, looked up before being posted again, by cause.",
        "lead_relay_reconciled_total": "Look-ups of leads in doubt in the API's listing, by result (found or not).",
        "lead_relay_reconciliations_waiting": "Leads in doubt waiting for a listing of the API's leads.",
    ]

    static let durationBuckets: [String: [Duration]] = [
        "lead_relay_end_to_end_seconds": [
            0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
        ].map(Duration.init(timeInterval:)),
        "lead_relay_budget_wait_seconds": [
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60,
        ].map(Duration.init(timeInterval:)),
        "lead_relay_shared_budget_grant_wait_seconds": [
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60,
        ].map(Duration.init(timeInterval:)),
        "lead_relay_shared_budget_start_lag_seconds": [
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1,
        ].map(Duration.init(timeInterval:)),
    ]

    /// Request durations: from a fast loopback answer to the client's timeout.
    static let defaultDurationBuckets: [Duration] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 30,
    ].map(Duration.init(timeInterval:))

    static let defaultValueBuckets: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

    /// One help text per name, the same each time: the registry refuses a second, different one.
    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(
            metricName: label, unitName: "",
            helpText: Self.helpTexts[label] ?? "\(label) (reported through swift-metrics).")
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)])
        -> any FloatingPointCounterHandler
    {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: descriptor(label), labels: dimensions, buckets: Self.defaultValueBuckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: descriptor(label), labels: dimensions,
            buckets: Self.durationBuckets[label] ?? Self.defaultDurationBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
        if let histogram = handler as? ValueHistogram { registry.unregisterValueHistogram(histogram) }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
