import Foundation
import Kafka
import LeadRelay
import Logging
import Prometheus
import SeekerLeadsSimulator
import ServiceLifecycle

/// `lead-relay demo`: the relay end to end in one process, on embedded defaults: a mock Kafka
/// cluster, the API simulator, a producer of sample leads, and the relay itself.
public struct Demo: Sendable {
    public struct Options: Sendable {
        public var count = 500
        public var duplicateFraction = 0.1
        public var invalidFraction = 0.1
        public var latencyMs = 20
        public var httpPort = 8080
        public var partitions: Int32 = 6

        public init() {}
    }

    public struct Summary: Sendable {
        public var produced: Int
        public var submitted: Int
        public var duplicates: Int
        public var deadLettered: Int
        public var seconds: Double
        public var apiRequests: Int
        public var budgetViolations: Int
        public var leadsStoredByAPI: Int
    }

    public var options: Options

    public init(options: Options) {
        self.options = options
    }

    /// Runs until every sample has its outcome; `report` receives the progress lines.
    public func run(
        registry: PrometheusCollectorRegistry, logger: Logger, report: @escaping @Sendable (String) -> Void
    ) async throws -> Summary {
        let cluster = try MockCluster(brokers: 3, logger: logger)
        defer { cluster.shutdown() }
        for topic in ["leads.submitted", "leads.results"] {
            try cluster.createTopic(topic, partitions: options.partitions)
        }
        try cluster.createTopic("leads.dlq", partitions: 1)

        var simulatorOptions = SimulatorOptions()
        simulatorOptions.faults.latencyMs = options.latencyMs
        let simulator = try await SeekerLeadsSimulator.start(options: simulatorOptions, logger: logger)

        let samples = SampleLeads.mix(
            count: options.count, duplicateFraction: options.duplicateFraction,
            invalidFraction: options.invalidFraction, seed: UInt64(Date().timeIntervalSince1970))
        try await produce(samples, bootstrapServers: cluster.bootstrapServers, logger: logger)
        report("produced \(samples.count) sample records to leads.submitted")

        let dedupeDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("lead-relay-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dedupeDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dedupeDirectory) }
        let configuration = try RelayConfiguration.fromEnvironment([
            "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrapServers,
            "SEEKER_LEADS_BASE_URL": simulator.baseURL,
            "SEEKER_LEADS_TOKEN_URL": simulator.tokenURL,
            "SEEKER_LEADS_CLIENT_ID": simulatorOptions.clientID,
            "SEEKER_LEADS_CLIENT_SECRET": simulatorOptions.clientSecret,
            "LEAD_RELAY_HTTP_HOST": "127.0.0.1",
            "LEAD_RELAY_HTTP_PORT": String(options.httpPort),
            "LEAD_RELAY_DEDUPE_DB": dedupeDirectory.appendingPathComponent("dedupe.sqlite").path,
        ])
        let runtime = try RelayRuntime(
            configuration: configuration, registry: registry, logger: logger,
            onHTTPRunning: { port in report("metrics at http://127.0.0.1:\(port)/metrics") })
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: runtime.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))

        let start = ContinuousClock.now
        let summary = try await withThrowingTaskGroup(of: Summary?.self) { tasks in
            tasks.addTask {
                try await group.run()
                return nil
            }
            tasks.addTask {
                let tally = runtime.tally
                var lastLine = ContinuousClock.now
                while tally.total < samples.count {
                    try await Task.sleep(for: .milliseconds(100))
                    if ContinuousClock.now - lastLine >= .seconds(1) {
                        lastLine = ContinuousClock.now
                        let stats = await simulator.stats()
                        report(progressLine(tally, stats.requestsTotal, since: start))
                    }
                }
                let stats = await simulator.stats()
                report(progressLine(tally, stats.requestsTotal, since: start))
                await group.triggerGracefulShutdown()
                return Summary(
                    produced: samples.count, submitted: tally.count(of: .submitted),
                    duplicates: tally.count(of: .duplicate), deadLettered: tally.count(of: .deadLettered),
                    seconds: (ContinuousClock.now - start) / .seconds(1), apiRequests: stats.requestsTotal,
                    budgetViolations: stats.violations, leadsStoredByAPI: stats.leadsStored)
            }
            var summary: Summary?
            for try await result in tasks {
                if let result { summary = result }
            }
            return summary
        }
        await runtime.shutdown()
        await simulator.shutdown()
        guard let summary else { throw DemoError.stoppedEarly }
        return summary
    }

    private func progressLine(_ tally: OutcomeTally, _ apiRequests: Int, since start: ContinuousClock.Instant) -> String
    {
        let seconds = max((ContinuousClock.now - start) / .seconds(1), 0.001)
        let submitted = tally.count(of: .submitted)
        let rate = Double(submitted) / seconds
        let budgetUse = Double(apiRequests) / seconds / 50 * 100
        return String(
            format:
                "consumed-to-outcome %d/%d  submitted %d  duplicates %d  dead letters %d  %.1f leads/s  budget use %.0f%%",
            tally.total, options.count, submitted, tally.count(of: .duplicate), tally.count(of: .deadLettered), rate,
            budgetUse)
    }

    private func produce(_ samples: [SampleLeads.Record], bootstrapServers: String, logger: Logger) async throws {
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(properties: ["bootstrap.servers": bootstrapServers]), logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sample in samples {
                group.addTask {
                    _ = try await producer.send(
                        topic: "leads.submitted", key: sample.key, value: sample.value, headers: sample.headers)
                }
            }
            try await group.waitForAll()
        }
        await producer.close()
    }
}

enum DemoError: Error, CustomStringConvertible {
    case stoppedEarly
    var description: String { "the relay stopped before every sample had its outcome" }
}
