import Foundation
import Kafka
import RelayPrimitives
import Synchronization

/// The named conditions `GET /health/ready` requires. Flags are set by the parts that know (the pipeline sets
/// `credentials` when the API authenticates, `circuit` when it opens and closes); probes are asked on each request.
/// Every failing check says why, in words an operator can act on.
public final class Readiness: Sendable {
    public static let consumer = "consumer"
    public static let producer = "producer"
    public static let dedupeStore = "dedupe_store"
    /// The shared API budget, when `LEAD_RELAY_DATABASE_URL` is set.
    public static let budget = "budget"
    public static let credentials = "credentials"
    public static let circuit = "circuit"

    /// Asked on each evaluation: `nil` while the check passes, else why it fails.
    public typealias Probe = @Sendable () async -> String?

    private struct Flag {
        var passing: Bool
        var reason: String
    }

    private let flags: Mutex<[String: Flag]>
    private let probes = Mutex<[String: Probe]>([:])

    /// The flags named start failing with the reason "not checked yet".
    public init(flags names: [String] = [Readiness.consumer, Readiness.producer, Readiness.credentials]) {
        flags = Mutex(
            Dictionary(uniqueKeysWithValues: names.map { ($0, Flag(passing: false, reason: "not checked yet")) }))
    }

    /// Sets (or adds) a flag. `reason` says, without secrets or personal data, why it fails.
    public func set(_ name: String, passing: Bool, reason: String = "") {
        flags.withLock {
            $0[name] = Flag(passing: passing, reason: passing ? "" : (reason.isEmpty ? "failing" : reason))
        }
    }

    /// Adds a check asked on every evaluation; it returns `nil` while passing, else the reason it fails.
    public func addProbe(_ name: String, _ probe: @escaping Probe) {
        probes.withLock { $0[name] = probe }
    }

    public func evaluate() async -> ReadinessReport {
        var report = flags.withLock { flags in
            ReadinessReport(
                passing: flags.mapValues(\.passing),
                reasons: flags.filter { !$0.value.passing }.mapValues(\.reason))
        }
        let currentProbes = probes.withLock { $0 }
        // Concurrently: a probe that asks a broker can take its whole timeout when none answers.
        let failures = await withTaskGroup(of: (String, String?).self) { group in
            for (name, probe) in currentProbes {
                group.addTask { (name, await probe()) }
            }
            var failures: [String: String?] = [:]
            for await (name, failure) in group { failures[name] = failure }
            return failures
        }
        for (name, failure) in failures {
            report.passing[name] = failure == nil
            report.reasons[name] = failure.map { $0.isEmpty ? "failing" : $0 }
        }
        return report
    }
}

extension Readiness {
    /// The consumer check: passes while the consumer is a member of its group. While it is not, a broker that
    /// cannot be reached (`brokerReachable`, asked only then) explains why better than the membership does.
    public static func consumerFailure(
        _ membership: KafkaConsumerMembership, bootstrapServers: String, brokerReachable: () async -> Bool
    ) async -> String? {
        switch membership {
        case .member:
            return nil
        case .left:
            return "the consumer left its group (shutting down)"
        case .joining, .assignmentLost:
            guard await brokerReachable() else { return noBrokerReachable(at: bootstrapServers) }
            return membership == .joining
                ? "joining the consumer group" : "assignment lost; rejoining the consumer group"
        }
    }

    /// The producer check: passes while a broker answers a metadata request.
    public static func producerFailure(brokerReachable: Bool, bootstrapServers: String) -> String? {
        brokerReachable ? nil : noBrokerReachable(at: bootstrapServers)
    }

    public static func dedupeStoreFailure(healthy: Bool, path: String) -> String? {
        healthy ? nil : "the dedupe store \(path) cannot be read and written"
    }

    /// The circuit flag's reason while the circuit is open.
    public static func circuitOpenReason(since: Date) -> String {
        "circuit open since \(RFC3339Milliseconds.format(since)) after consecutive transient API failures"
    }

    static func noBrokerReachable(at bootstrapServers: String) -> String {
        "no broker reachable at \(bootstrapServers)"
    }
}

/// The outcome of every readiness check.
public struct ReadinessReport: Sendable, Equatable {
    /// Every check by name: true when it passes.
    public var passing: [String: Bool]
    /// Why each failing check fails.
    public var reasons: [String: String]

    public var isReady: Bool { passing.values.allSatisfy { $0 } }
    public var failingChecks: [String] { passing.filter { !$0.value }.keys.sorted() }

    /// `{"status":"ready"|"not_ready","checks":{"name":"pass"|"fail"},"failing":[{"check":…,"reason":…}]}`.
    public var json: String {
        var text = "{\"status\":" + (isReady ? "\"ready\"" : "\"not_ready\"") + ",\"checks\":{"
        text += passing.keys.sorted().map { name in
            var entry = ""
            JSONString.append(name, to: &entry)
            return entry + ":" + (passing[name] == true ? "\"pass\"" : "\"fail\"")
        }.joined(separator: ",")
        text += "},\"failing\":["
        text += failingChecks.map { name in
            var entry = "{\"check\":"
            JSONString.append(name, to: &entry)
            entry += ",\"reason\":"
            JSONString.append(reasons[name] ?? "failing", to: &entry)
            return entry + "}"
        }.joined(separator: ",")
        return text + "]}"
    }
}
