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
        /// The sample mix depends only on this (and the fractions), so two runs print the same counts.
        public var seed: UInt64 = 1
        /// How often `run` reports progress.
        public var progressInterval: Duration = .seconds(1)
        /// The span of the current rate and budget use in progress reports.
        public var recentWindow: Duration = .seconds(3)

        public init() {}
    }

    /// What `run` tells its caller while it runs.
    public enum Report: Sendable {
        /// A line to show once.
        case note(String)
        /// The relay runs but has no outcome yet: its consumer is joining the group and being assigned partitions,
        /// which takes librdkafka a few seconds.
        case joining(elapsed: Duration)
        case progress(Progress)
    }

    public struct Progress: Sendable {
        /// Records with an outcome, of `total`.
        public var done: Int
        public var total: Int
        public var submitted: Int
        public var duplicates: Int
        public var deadLettered: Int
        /// Leads submitted per second, and API requests as a fraction of the API's budget, over the last
        /// `Options.recentWindow` (less when the relay has been working for less).
        public var recentLeadsPerSecond: Double
        public var recentBudgetUse: Double
    }

    public struct Summary: Sendable {
        public var produced: Int
        public var submitted: Int
        public var duplicates: Int
        public var deadLettered: Int
        /// From the relay's start to its first API request or outcome: the consumer group join.
        public var joinSeconds: Double
        /// From then to the last outcome.
        public var seconds: Double
        public var apiRequests: Int
        /// The API's budget, in requests per second.
        public var budgetPerSecond: Double
        public var budgetViolations: Int
        public var leadsStoredByAPI: Int
        /// What `lead-relay dlq summary` said of the demo's dead-letter topic, when it holds any.
        public var deadLetterSummary: DeadLetterSummary?

        /// Over `seconds`: the wait for the group join is not part of the relay's rate. (A run of a few
        /// dozen records lasts less than a second, and most of it fits in the budget's first window.)
        public var leadsPerSecond: Double { Double(submitted) / max(seconds, 0.001) }
        public var budgetUse: Double { Double(apiRequests) / max(seconds, 0.001) / budgetPerSecond }
    }

    public var options: Options

    /// The health and metrics endpoint listens on loopback only.
    public static let httpHost = "127.0.0.1"

    public init(options: Options) {
        self.options = options
    }

    /// Runs until every sample has its outcome, reporting what happens meanwhile.
    public func run(
        registry: PrometheusCollectorRegistry, logger: Logger, report: @escaping @Sendable (Report) -> Void
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
            invalidFraction: options.invalidFraction, seed: options.seed)
        try await produce(samples, bootstrapServers: cluster.bootstrapServers, logger: logger)
        report(.note("produced \(samples.count) sample records to leads.submitted (seed \(options.seed))"))

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
            "LEAD_RELAY_HTTP_HOST": Self.httpHost,
            "LEAD_RELAY_HTTP_PORT": String(options.httpPort),
            "LEAD_RELAY_DEDUPE_DB": dedupeDirectory.appendingPathComponent("dedupe.sqlite").path,
        ])
        let runtime = try RelayRuntime(
            configuration: configuration, registry: registry, logger: logger,
            onHTTPRunning: { port in report(.note("metrics at http://127.0.0.1:\(port)/metrics")) })
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: runtime.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))

        let budgetPerSecond = Double(simulatorOptions.rateLimit) * 1000 / Double(simulatorOptions.windowMs)
        let start = ContinuousClock.now
        let summary = try await withThrowingTaskGroup(of: Summary?.self) { tasks in
            tasks.addTask {
                try await group.run()
                return nil
            }
            tasks.addTask {
                let tally = runtime.tally
                var recent = RecentCounts(window: options.recentWindow)
                // The last poll that found neither an API request nor an outcome: until then the consumer was
                // joining its group; the rates are measured from there, not from the start.
                var lastIdle = start
                var lastReport = ContinuousClock.now
                while true {
                    let finished = tally.total >= samples.count
                    if !finished { try await Task.sleep(for: .milliseconds(100)) }
                    let now = ContinuousClock.now
                    let requests = await simulator.stats().requestsTotal
                    let idle = requests == 0 && tally.total == 0
                    if idle { lastIdle = now }
                    recent.add(
                        at: now, handled: tally.total, submitted: tally.count(of: .submitted), requests: requests)
                    if finished || now - lastReport >= options.progressInterval {
                        lastReport = now
                        report(
                            idle
                                ? .joining(elapsed: now - start)
                                : .progress(progress(tally, recent, budgetPerSecond: budgetPerSecond)))
                    }
                    if finished { break }
                }
                let end = ContinuousClock.now
                let stats = await simulator.stats()
                await group.triggerGracefulShutdown()
                return Summary(
                    produced: samples.count, submitted: tally.count(of: .submitted),
                    duplicates: tally.count(of: .duplicate), deadLettered: tally.count(of: .deadLettered),
                    joinSeconds: (lastIdle - start) / .seconds(1), seconds: (end - lastIdle) / .seconds(1),
                    apiRequests: stats.requestsTotal, budgetPerSecond: budgetPerSecond,
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
        guard var summary else { throw DemoError.stoppedEarly }
        if summary.deadLettered > 0 {
            // Read while the demo's cluster still runs: it goes with this process.
            let queue = DeadLetterQueue(
                configuration: try DeadLetterToolConfiguration.fromEnvironment([
                    "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrapServers
                ]), logger: logger)
            summary.deadLetterSummary = try await queue.summary(DeadLetterFilter())
        }
        return summary
    }

    private func progress(_ tally: OutcomeTally, _ recent: RecentCounts, budgetPerSecond: Double) -> Progress {
        Progress(
            done: tally.total, total: options.count, submitted: tally.count(of: .submitted),
            duplicates: tally.count(of: .duplicate), deadLettered: tally.count(of: .deadLettered),
            recentLeadsPerSecond: recent.submittedPerSecond, recentBudgetUse: recent.requestsPerSecond / budgetPerSecond
        )
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

/// Cumulative counts sampled over time, for rates over the last `window` rather than since the start.
struct RecentCounts {
    private struct Sample {
        var time: ContinuousClock.Instant
        var handled: Int
        var submitted: Int
        var requests: Int
    }

    let window: Duration
    private var samples: [Sample] = []

    init(window: Duration) {
        self.window = window
    }

    mutating func add(at time: ContinuousClock.Instant, handled: Int, submitted: Int, requests: Int) {
        let sample = Sample(time: time, handled: handled, submitted: submitted, requests: requests)
        // Nothing happened since the oldest sample (before the first outcome, or a stall as long as the
        // window): the rates start from now, rather than spreading the next outcomes over idle time.
        if let oldest = samples.first, oldest.handled == handled, oldest.requests == requests {
            samples = [sample]
            return
        }
        samples.append(sample)
        // Keep one sample at or before the window's start, so the rates span the whole window.
        while samples.count > 2, time - samples[1].time >= window { samples.removeFirst() }
    }

    var submittedPerSecond: Double { rate(\.submitted) }
    var requestsPerSecond: Double { rate(\.requests) }

    private func rate(_ count: KeyPath<Sample, Int>) -> Double {
        guard let first = samples.first, let last = samples.last, last.time > first.time else { return 0 }
        return Double(last[keyPath: count] - first[keyPath: count]) / ((last.time - first.time) / .seconds(1))
    }
}

enum DemoError: Error, CustomStringConvertible {
    case stoppedEarly
    var description: String { "the relay stopped before every sample had its outcome" }
}
