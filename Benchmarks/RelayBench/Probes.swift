import AsyncHTTPClient
import Foundation
import NIOCore

/// GET over loopback: the status and the body (empty when the server is not answering yet).
func httpGet(_ url: String) async -> (status: Int, body: [UInt8]) {
    do {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 256 * 1024 * 1024)
        return (Int(response.status.code), Array(buffer: body))
    } catch {
        return (0, [])
    }
}

/// POST over loopback with a JSON body: the status (0 when the server did not answer).
func httpPost(_ url: String, json: [UInt8]) async -> Int {
    do {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(json)
        return Int(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code)
    } catch {
        return 0
    }
}

/// The simulator's `/_sim/stats`, the fields the benchmark reads.
struct SimulatorStats: Decodable {
    var requestsTotal: Int
    var leadsStored: Int
    /// Leads stored whose answer the simulator then lost on purpose (a fault), by how.
    var answersLostAfterStoring: [String: Int]
    /// Leads whose body was identical to one already stored: posted twice.
    var duplicateLeadsReceived: Int
    var violations: Int
    var violationsByKind: [String: Int]
    var maxStartsPerWindow: Int
    var maxConcurrency: Int
}

/// One entry of the simulator's `/_sim/requests`.
struct SimulatorRequest: Decodable {
    var method: String
    var path: String
    var arrivedAtNanos: Int64
    var answeredAtNanos: Int64
    var status: Int
}

struct SimulatorProbe {
    let baseURL: String

    func stats() async throws -> SimulatorStats {
        let (status, body) = await httpGet(baseURL + "/_sim/stats")
        guard status == 200 else { throw BenchError.failed("simulator stats answered \(status)") }
        return try JSONDecoder().decode(SimulatorStats.self, from: Data(body))
    }

    /// POST /leads requests in arrival order.
    func leadSubmissions() async throws -> [SimulatorRequest] {
        try await requests().filter { $0.method == "POST" && $0.path == "/leads" }
    }

    /// Every API request, in arrival order.
    func requests() async throws -> [SimulatorRequest] {
        let (status, body) = await httpGet(baseURL + "/_sim/requests")
        guard status == 200 else { throw BenchError.failed("simulator request log answered \(status)") }
        return try JSONDecoder().decode([SimulatorRequest].self, from: Data(body))
            .sorted { $0.arrivedAtNanos < $1.arrivedAtNanos }
    }

    /// Sets the simulator's faults (`/_sim/faults`, the simulator's `SimulatorFaults` as JSON).
    func setFaults(_ json: String) async throws {
        let status = await httpPost(baseURL + "/_sim/faults", json: Array(json.utf8))
        guard status == 200 else { throw BenchError.failed("simulator faults answered \(status)") }
    }
}

/// One scrape of the relay's Prometheus text.
struct MetricsSnapshot {
    /// Sample lines as (name with labels, value).
    private var samples: [(series: Substring, value: Double)] = []

    init(text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            samples.append((line[..<space], value))
        }
    }

    /// Several relays' scrapes as one: sums add up, and so do the histograms' cumulative bucket counts, which is
    /// exactly the histogram of all their observations together.
    init(merging snapshots: [MetricsSnapshot]) {
        samples = snapshots.flatMap(\.samples)
    }

    /// The sum of every series of `name` whose labels contain each of `labels` (e.g. `outcome="duplicate"`).
    func sum(_ name: String, labels: [String] = []) -> Double {
        samples.reduce(0) { total, sample in
            let series = sample.series
            let matchesName = series == name || series.hasPrefix(name + "{")
            guard matchesName, labels.allSatisfy({ series.contains($0) }) else { return total }
            return total + sample.value
        }
    }

    /// The sums of `name`'s series by the value of their label `label` (e.g. `operation`).
    func sums(_ name: String, by label: String) -> [String: Double] {
        var sums: [String: Double] = [:]
        for sample in samples where sample.series.hasPrefix(name + "{") {
            guard let value = Self.labelValue(label, in: sample.series) else { continue }
            sums[String(value), default: 0] += sample.value
        }
        return sums
    }

    /// The value of the label `label` in a series such as `name{label="value",...}`.
    private static func labelValue(_ label: String, in series: Substring) -> Substring? {
        guard let start = series.range(of: label + "=\""),
            let end = series[start.upperBound...].firstIndex(of: "\"")
        else { return nil }
        return series[start.upperBound..<end]
    }

    /// The cumulative buckets of a histogram, by upper bound, summed over label sets.
    func histogramBuckets(_ name: String) -> [(upperBound: Double, count: Double)] {
        var counts: [Double: Double] = [:]
        for sample in samples where sample.series.hasPrefix(name + "_bucket{") {
            guard let text = Self.labelValue("le", in: sample.series) else { continue }
            let bound = text == "+Inf" ? Double.infinity : Double(text) ?? .nan
            counts[bound, default: 0] += sample.value
        }
        return counts.sorted { $0.key < $1.key }.map { (upperBound: $0.key, count: $0.value) }
    }

    /// Prometheus' histogram_quantile: linear interpolation inside the bucket that holds the quantile.
    func histogramQuantile(_ name: String, _ quantile: Double) -> Double? {
        let buckets = histogramBuckets(name)
        guard let total = buckets.last?.count, total > 0 else { return nil }
        let rank = quantile * total
        var lowerBound = 0.0
        var lowerCount = 0.0
        for bucket in buckets {
            if bucket.count >= rank {
                if bucket.upperBound.isInfinite { return lowerBound }
                let inBucket = bucket.count - lowerCount
                guard inBucket > 0 else { return bucket.upperBound }
                return lowerBound + (bucket.upperBound - lowerBound) * (rank - lowerCount) / inBucket
            }
            lowerBound = bucket.upperBound
            lowerCount = bucket.count
        }
        return lowerBound
    }
}

struct RelayProbe {
    let baseURL: String

    func metrics() async -> MetricsSnapshot? {
        let (status, body) = await httpGet(baseURL + "/metrics")
        return status == 200 ? MetricsSnapshot(text: String(decoding: body, as: UTF8.self)) : nil
    }

    func isReady() async -> Bool {
        await httpGet(baseURL + "/health/ready").status == 200
    }
}
