import Foundation
import Kafka
import LeadEvents
import LeadRelay
import LeadRelayDemo
import Logging

import func TestSupport.freeLoopbackPort

#if canImport(Glibc)
    import Glibc
#endif

/// The processes and files one bench run shares: the release binaries, kafka-dev, a scratch directory.
struct BenchEnvironment: Sendable {
    let relayBinary: String
    /// The relay for the scenarios that call the API; the same binary unless BENCH_API_RELAY_BIN overrides it.
    let apiRelayBinary: String
    let simulatorBinary: String
    let eventsBenchBinary: String
    let workDirectory: String
    let kafka: KafkaTools
    let logger: Logger

    func path(_ name: String) -> String { workDirectory + "/" + name }

    func startSimulator(latencyMs: Int, label: String) async throws -> (ChildProcess, SimulatorProbe) {
        let simulator = try ChildProcess(
            name: "seeker-leads-sim", executable: simulatorBinary,
            arguments: [
                "--host", "127.0.0.1", "--port", "0", "--latency-ms", String(latencyMs), "--log-level", "warning",
            ],
            environment: ProcessInfo.processInfo.environment, logPath: path("sim-\(label).log"))
        let baseURL = try await simulator.announcedValue(prefix: "SEEKER_LEADS_BASE_URL=")
        return (simulator, SimulatorProbe(baseURL: baseURL))
    }

    /// Starts `lead-relay run` with the given dedupe file, in `groupID` or else a fresh group; returns once it is
    /// ready. With `databaseURL` the relay keeps its dedupe memory and API budget in that PostgreSQL database
    /// instead, shared with every relay given the same URL.
    func startRelay(
        input: String, results: String, simulatorURL: String, dedupePath: String, label: String, callsAPI: Bool = true,
        groupID: String? = nil, databaseURL: String? = nil, settings: [String: String] = [:]
    ) async throws -> RelayProcess {
        let port = try freeLoopbackPort()
        var environment = ProcessInfo.processInfo.environment
        // nil also drops a URL the bench itself was given: a relay without a database must not get one.
        environment["LEAD_RELAY_DATABASE_URL"] = databaseURL
        environment.merge(
            [
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers,
                "KAFKA_SESSION_TIMEOUT_MS": "6000",
                "SEEKER_LEADS_BASE_URL": simulatorURL,
                "SEEKER_LEADS_TOKEN": "dev-token",
                "LEAD_RELAY_GROUP_ID": groupID ?? "bench-\(label)-\(UUID().uuidString.prefix(8))",
                "LEAD_RELAY_INPUT_TOPIC": input,
                "LEAD_RELAY_RESULTS_TOPIC": results,
                "LEAD_RELAY_DLQ_TOPIC": Topics.deadLetters,
                "LEAD_RELAY_HTTP_HOST": "127.0.0.1",
                "LEAD_RELAY_HTTP_PORT": String(port),
                "LEAD_RELAY_DEDUPE_DB": dedupePath,
                "LEAD_RELAY_LOG_LEVEL": "warning",
            ].merging(settings) { _, setting in setting }
        ) { _, new in new }
        let process = try ChildProcess(
            name: "lead-relay", executable: callsAPI ? apiRelayBinary : relayBinary, arguments: ["run"],
            environment: environment,
            logPath: path("relay-\(label).log"))
        let probe = RelayProbe(baseURL: "http://127.0.0.1:\(port)")
        let deadline = ContinuousClock.now + .seconds(60)
        while !(await probe.isReady()) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                await process.terminate()
                throw BenchError.failed("relay \(label) did not become ready; see \(path("relay-\(label).log"))")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let readyAt = ContinuousClock.now
        return RelayProcess(
            process: process, probe: probe, groupID: environment["LEAD_RELAY_GROUP_ID"] ?? "", readyAt: readyAt,
            readySeconds: (readyAt - process.startedAt).seconds)
    }

    /// Polls the relays' metrics until `condition` holds for their scrapes merged; returns each relay's scrape, or
    /// nil on timeout or when a relay exits.
    func waitForMetrics(
        _ relays: [RelayProcess], every interval: Duration = .milliseconds(200), timeout: Duration,
        until condition: (MetricsSnapshot) -> Bool
    ) async throws -> [MetricsSnapshot]? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, relays.allSatisfy(\.process.isRunning) {
            var snapshots: [MetricsSnapshot] = []
            for relay in relays {
                guard let metrics = await relay.probe.metrics() else { break }
                snapshots.append(metrics)
            }
            if snapshots.count == relays.count, condition(MetricsSnapshot(merging: snapshots)) { return snapshots }
            try await Task.sleep(for: interval)
        }
        return nil
    }

    /// A dedupe store holding every given valid lead as already SUBMITTED, as if a relay had posted them.
    func seedDedupeStore(at path: String, with leads: [SampleLeads.Record]) throws {
        let store = try DedupeStore(path: path, ttl: .seconds(7 * 24 * 3600))
        let decoder = LeadEventDecoder()
        let now = Date()
        for (index, lead) in leads.enumerated() {
            let headers = lead.headers.map { (key: $0.key, value: $0.value) }
            guard case .success(let event) = decoder.decode(key: lead.key, value: lead.value, headers: headers) else {
                throw BenchError.failed("seed lead \(index) does not decode")
            }
            try store.recordSubmitted(
                SubmittedLead(
                    dedupeKey: event.dedupeKey, requestId: "seed-\(index)", title: "Lead received", submittedAt: now,
                    httpStatus: 201, attempts: 1, firstAttemptAt: now))
        }
    }

    /// A private copy of a seeded store (its WAL files included), so each run starts from the same state.
    func copyStore(from template: String, label: String) throws -> String {
        let copy = path("dedupe-\(label).sqlite")
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: template + suffix) {
            try? FileManager.default.removeItem(atPath: copy + suffix)
            try FileManager.default.copyItem(atPath: template + suffix, toPath: copy + suffix)
        }
        return copy
    }
}

struct RelayProcess: Sendable {
    let process: ChildProcess
    let probe: RelayProbe
    let groupID: String
    let readyAt: ContinuousClock.Instant
    let readySeconds: Double
}

enum Topics {
    static let budget = "bench.budget"
    static let sharedBudget = "bench.shared-budget"
    static let lostAnswers = "bench.lost-answers"
    static let noAPI = "bench.no-api"
    static let million = "bench.million"
    static let results = "bench.results"
    static let deadLetters = "bench.dlq"

    static func latencyInput(_ run: Int) -> String { "bench.latency.in.\(run)" }
    static func latencyResults(_ run: Int) -> String { "bench.latency.results.\(run)" }
    static func stop(_ run: Int) -> String { "bench.stop.\(run)" }
}
