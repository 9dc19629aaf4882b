import RelayPrimitives
import Synchronization

/// The named conditions `GET /health/ready` requires. Flags are set by the parts that know (the pipeline sets
/// `consumer` when it joins its group, `credentials` when the API authenticates); probes are asked on each request.
public final class Readiness: Sendable {
    public static let consumer = "consumer"
    public static let producer = "producer"
    public static let dedupeStore = "dedupe_store"
    public static let credentials = "credentials"

    private struct Flag {
        var passing: Bool
        var reason: String
    }

    private let flags: Mutex<[String: Flag]>
    private let probes = Mutex<[String: @Sendable () async -> Bool]>([:])

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

    /// Adds a check asked on every evaluation, such as `DedupeStore.checkHealth`.
    public func addProbe(_ name: String, _ probe: @escaping @Sendable () async -> Bool) {
        probes.withLock { $0[name] = probe }
    }

    public func evaluate() async -> ReadinessReport {
        var report = flags.withLock { flags in
            ReadinessReport(
                passing: flags.mapValues(\.passing),
                reasons: flags.filter { !$0.value.passing }.mapValues(\.reason))
        }
        let currentProbes = probes.withLock { $0 }
        for (name, probe) in currentProbes {
            let passing = await probe()
            report.passing[name] = passing
            report.reasons[name] = passing ? nil : "check failed"
        }
        return report
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
