import Foundation
import Kafka
import LeadRelayDemo
import Logging
import SeekerLeadsSimulator
import Synchronization
import TestSupport

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Quiet: the Kafka clients of the tests log through it, and only failures matter.
let endToEndLogger: Logger = {
    var logger = Logger(label: "lead-relay-e2e")
    logger.logLevel = .critical
    return logger
}()

/// The topics `lead-relay kafka-dev` creates by default, which are also the relay's defaults.
enum Topics {
    static let input = "leads.submitted"
    static let results = "leads.results"
    static let deadLetters = "leads.dlq"
    static let partitions: [String: Int32] = [input: 6, results: 6, deadLetters: 1]
}

/// `lead-relay kafka-dev` in a process of its own.
final class KafkaDevProcess: Sendable {
    let process: ChildProcess
    let bootstrapServers: String

    init(scratch: ScratchDirectory) async throws {
        let topics = Topics.partitions.flatMap { ["--topic", "\($0.key):\($0.value)"] }
        process = try ChildProcess(
            product: "lead-relay", arguments: ["kafka-dev", "--brokers", "1"] + topics, logDirectory: scratch.url)
        bootstrapServers = try await process.announcedValue("KAFKA_BOOTSTRAP_SERVERS")
    }
}

/// `seeker-leads-sim` in a process of its own, with a static token of its own.
final class SimulatorProcess: Sendable {
    let process: ChildProcess
    let baseURL: String
    let token = "e2e-token-\(UUID().uuidString.lowercased())"

    init(scratch: ScratchDirectory, arguments: [String] = []) async throws {
        process = try ChildProcess(
            product: "seeker-leads-sim",
            arguments: ["--host", "127.0.0.1", "--port", "0", "--token", token] + arguments,
            logDirectory: scratch.url)
        baseURL = try await process.announcedValue("SEEKER_LEADS_BASE_URL")
    }

    func stats() async throws -> SimulatorStats {
        try JSONDecoder().decode(SimulatorStats.self, from: try await HTTP.get(baseURL + "/_sim/stats").body)
    }

    /// Every lead answered 503 with no `Retry-After`: an outage.
    func startOutage() async throws {
        var outage = SimulatorFaults()
        outage.errorRates = ["503": 1.0]
        outage.retryAfterSeconds = 0
        try await setFaults(outage)
    }

    func setFaults(_ faults: SimulatorFaults) async throws {
        let (status, _) = try await HTTP.post(baseURL + "/_sim/faults", body: try JSONEncoder().encode(faults))
        guard status == 200 else { throw UnexpectedAnswer(what: "POST /_sim/faults answered \(status)") }
    }

    func requestLog() async throws -> [SimulatorRequestRecord] {
        try JSONDecoder().decode(
            [SimulatorRequestRecord].self, from: try await HTTP.get(baseURL + "/_sim/requests").body)
    }

    /// Every lead the API stored, as canonical JSON (`canonicalJSON`), in arrival order.
    func storedLeads() async throws -> [Data] {
        let body = try await HTTP.get(baseURL + "/_sim/leads").body
        guard let leads = try JSONSerialization.jsonObject(with: body) as? [Any] else {
            throw UnexpectedAnswer(what: "GET /_sim/leads is not a JSON array")
        }
        return try leads.map { try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]) }
    }

    /// How many times the API stored each classifiedId.
    func storedCountByClassifiedID() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for lead in try await storedLeads() {
            let object = try JSONSerialization.jsonObject(with: lead) as? [String: Any]
            counts[object?["classifiedId"] as? String ?? "", default: 0] += 1
        }
        return counts
    }
}

/// `lead-relay run` in a process of its own; the port of its HTTP endpoint is read from its log.
final class RelayProcess: Sendable {
    let process: ChildProcess
    let httpPort: Int

    init(environment: [String: String], scratch: ScratchDirectory) async throws {
        process = try ChildProcess(
            product: "lead-relay", arguments: ["run"], environment: environment, logDirectory: scratch.url)
        httpPort = try await process.stderrLine("the relay's HTTP endpoint") { line in
            guard line.contains("health and metrics endpoint listening"),
                let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let port = object["port"] as? String
            else { return nil }
            return Int(port)
        }
    }

    var baseURL: String { "http://127.0.0.1:\(httpPort)" }

    func get(_ path: String) async throws -> (status: Int, body: String) {
        let (status, body) = try await HTTP.get(baseURL + path)
        return (status, String(decoding: body, as: UTF8.self))
    }

    func metrics() async throws -> PrometheusText {
        PrometheusText(try await get("/metrics").body)
    }

    /// Waits until the relay reports ready: in its group, producer connected, store and credentials working.
    func waitUntilReady() async throws {
        try await waitUntil("the relay to be ready", timeout: .seconds(90)) {
            (try? await get("/health/ready").status) == 200
        }
    }

    /// Sends SIGTERM and returns how the relay ended.
    func terminate() async throws -> ChildProcess.Termination {
        process.signal(SIGTERM)
        return try await process.waitForExit(timeout: .seconds(90))
    }
}

/// The environment of one relay: the defaults of these tests on top of what it must be told.
struct RelayEnvironment {
    var variables: [String: String]

    init(kafka bootstrapServers: String, simulator: SimulatorProcess, groupID: String, dedupeDatabase: String) {
        variables = [
            "KAFKA_BOOTSTRAP_SERVERS": bootstrapServers,
            // A restarted relay joins a group its predecessor left: see mock-cluster-notes.md.
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "SEEKER_LEADS_BASE_URL": simulator.baseURL,
            "SEEKER_LEADS_TOKEN": simulator.token,
            "LEAD_RELAY_GROUP_ID": groupID,
            "LEAD_RELAY_HTTP_HOST": "127.0.0.1",
            "LEAD_RELAY_HTTP_PORT": "0",
            "LEAD_RELAY_DEDUPE_DB": dedupeDatabase,
            "LEAD_RELAY_RETRY_BASE_MS": "20",
            "LEAD_RELAY_RETRY_MAX_MS": "500",
            // Several processes share two cores in these tests: the simulator then reads a request up to several
            // milliseconds after it arrived, and the margin is the budget's allowance for exactly that jitter. 10 ms
            // still saw one violation in a full run on a machine running two other builds; 20 ms costs the tests
            // under a tenth of their rate.
            "LEAD_RELAY_RATE_MARGIN_MS": "20",
            "LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS": "10",
            // The simulator lists a lead as soon as it stores it, unless a test sets an ingestion delay.
            "LEAD_RELAY_RECONCILE_AFTER_SECONDS": "1",
            "LEAD_RELAY_LOG_LEVEL": "info",
        ]
    }

    subscript(name: String) -> String? {
        get { variables[name] }
        set { variables[name] = newValue }
    }
}

/// One sample record as it landed on the input topic.
struct ProducedSample: Sendable {
    var sample: SampleLeads.Record
    var partition: Int32
    var offset: Int64
}

/// The tests' own producer, for input records and end markers.
final class TestProducer: Sendable {
    let producer: KafkaProducer

    init(bootstrapServers: String) throws {
        producer = try KafkaProducer(
            configuration: KafkaConfiguration(properties: ["bootstrap.servers": bootstrapServers, "linger.ms": "1"]),
            logger: endToEndLogger)
    }

    func produce(_ samples: [SampleLeads.Record], to topic: String = Topics.input) async throws -> [ProducedSample] {
        var produced: [ProducedSample] = []
        for sample in samples {
            let report = try await producer.send(
                topic: topic, key: sample.key, value: sample.value, headers: sample.headers)
            produced.append(ProducedSample(sample: sample, partition: report.partition, offset: report.offset))
        }
        return produced
    }

    /// One end marker per partition (`partitionCount`, else the topic's in `Topics`); returns each marker's offset.
    func produceEndMarkers(to topic: String, partitionCount: Int32? = nil) async throws -> [Int32: Int64] {
        var offsets: [Int32: Int64] = [:]
        for partition in 0..<(partitionCount ?? Topics.partitions[topic] ?? 1) {
            let report = try await producer.send(
                topic: topic, partition: partition, key: EndMarker.key, value: EndMarker.key)
            offsets[partition] = report.offset
        }
        return offsets
    }

    func close() async { await producer.close() }
}

extension KafkaConsumerRecord {
    /// The value of the last header named `name`, as text.
    func header(_ name: String) -> String? {
        headers.last { $0.key == name }?.value.map { String(decoding: $0, as: UTF8.self) }
    }
}

enum EndMarker {
    static let key = Array("lead-relay-e2e-end-marker".utf8)

    static func isMarker(_ record: KafkaConsumerRecord) -> Bool { record.key == key }
}

/// A consumer in a group of its own that reads topics from the beginning for as long as it lives.
final class TopicTail: Sendable {
    private let consumer: KafkaConsumer
    private let received = Locked<[KafkaConsumerRecord]>([])
    private let reader: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(topics: [String], bootstrapServers: String, groupID: String = uniqueName("e2e-tail")) throws {
        consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(properties: [
                "bootstrap.servers": bootstrapServers, "session.timeout.ms": "6000",
                "heartbeat.interval.ms": "500", "fetch.wait.max.ms": "50",
            ]),
            groupID: groupID, logger: endToEndLogger)
        try consumer.subscribe(topics: topics)
        let task = Task { [consumer, received] in
            for await event in consumer.events {
                switch event {
                case .records(let records): received.withLock { $0.append(contentsOf: records) }
                case .partitionsAssigned: break
                case .partitionsRevoked(_, let revocation, _): revocation.acknowledge()
                }
            }
        }
        reader.withLock { $0 = task }
    }

    /// Every record read so far, end markers included.
    var records: [KafkaConsumerRecord] { received.value }

    func records(of topic: String) -> [KafkaConsumerRecord] {
        records.filter { $0.topic == topic && !EndMarker.isMarker($0) }
    }

    /// Everything the topics held before the markers now produced to each of their partitions: once the
    /// relay's outcomes are acknowledged (as its metrics or the API tell), this is exactly what it wrote.
    func recordsBeforeEndMarkers(of topics: [String], producer: TestProducer) async throws
        -> [String: [KafkaConsumerRecord]]
    {
        var markers: [TopicPartition: Int64] = [:]
        for topic in topics {
            for (partition, offset) in try await producer.produceEndMarkers(to: topic) {
                markers[TopicPartition(topic: topic, partition: partition)] = offset
            }
        }
        try await waitUntil("the end markers of \(topics)", timeout: .seconds(90)) {
            let seen = Set(records.filter(EndMarker.isMarker).map(\.topicPartition))
            return markers.keys.allSatisfy(seen.contains)
        }
        var result: [String: [KafkaConsumerRecord]] = [:]
        for record in records where !EndMarker.isMarker(record) {
            if let end = markers[record.topicPartition], record.offset < end {
                result[record.topic, default: []].append(record)
            }
        }
        return result
    }

    /// Closes the consumer; its events end even when the close does not finish in time, so the reader does too.
    func close() async {
        _ = try? await consumer.close()
        await reader.withLock { $0 }?.value
    }
}

/// Joins `groupID` after its relays have left and reads the first record of every partition of `topic`,
/// after markers were produced to each: when the group committed every partition up to its end, each
/// first record is the marker. Returns the partitions whose first record was not.
func partitionsNotCommittedToEnd(
    groupID: String, topic: String, partitionCount: Int32? = nil, bootstrapServers: String, producer: TestProducer
) async throws -> [Int32] {
    let markers = try await producer.produceEndMarkers(to: topic, partitionCount: partitionCount)
    let consumer = try KafkaConsumer(
        configuration: KafkaConfiguration(properties: [
            "bootstrap.servers": bootstrapServers, "session.timeout.ms": "6000", "heartbeat.interval.ms": "500",
            // The relays' assignor: a member they left behind (its leave lost on a loaded machine) keeps the group's
            // protocol until its session ends, and a member with another one could not join meanwhile.
            "partition.assignment.strategy": "roundrobin",
        ]),
        groupID: groupID, logger: endToEndLogger)
    try consumer.subscribe(topics: [topic])
    let firstOffsets = Locked<[Int32: Int64]>([:])
    let reader = Task {
        for await event in consumer.events {
            switch event {
            case .records(let records):
                firstOffsets.withLock { offsets in
                    for record in records where offsets[record.partition] == nil {
                        offsets[record.partition] = record.offset
                    }
                }
            case .partitionsAssigned: break
            case .partitionsRevoked(_, let revocation, _): revocation.acknowledge()
            }
        }
    }
    defer { reader.cancel() }
    try await waitUntil("a first record of every partition of \(topic)", timeout: .seconds(90)) {
        firstOffsets.value.count == markers.count
    }
    _ = try? await consumer.close()
    let first = firstOffsets.value
    return markers.keys.sorted().filter { first[$0] != markers[$0] }
}

/// The samples of one test: valid leads only, each distinct, in all three shapes.
func distinctValidLeads(_ count: Int, namespace: String, seed: UInt64) -> [SampleLeads.Record] {
    (0..<count).map { index in
        SampleLeads.valid(
            index: index, shape: SampleLeads.Shape.allCases[index % SampleLeads.Shape.allCases.count],
            namespace: namespace, seed: seed)
    }
}

/// A JSON document re-serialized with sorted keys, so that equal documents have equal bytes.
func canonicalJSON(_ data: Data) throws -> Data {
    try JSONSerialization.data(
        withJSONObject: try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
        options: [.sortedKeys, .fragmentsAllowed])
}

func jsonObject(_ bytes: [UInt8]?) -> [String: Any]? {
    guard let bytes else { return nil }
    return try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
}

/// A Prometheus text exposition, by series.
struct PrometheusText {
    struct Series {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    let text: String
    let series: [Series]

    init(_ text: String) {
        self.text = text
        series = text.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "),
                let value = Double(line[line.index(after: space)...])
            else { return nil }
            let identifier = line[..<space]
            guard let open = identifier.firstIndex(of: "{") else {
                return Series(name: String(identifier), labels: [:], value: value)
            }
            var labels: [String: String] = [:]
            for pair in identifier[identifier.index(after: open)..<identifier.index(before: identifier.endIndex)]
                .split(separator: ",")
            {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
            }
            return Series(name: String(identifier[..<open]), labels: labels, value: value)
        }
    }

    /// The sum over every series of `name` whose labels include `labels`; 0 when there is none.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double {
        series.filter { series in
            series.name == name && labels.allSatisfy { key, value in series.labels[key] == value }
        }.map(\.value).reduce(0, +)
    }

    func has(_ name: String) -> Bool { series.contains { $0.name == name } }

    func series(named name: String) -> [Series] { series.filter { $0.name == name } }
}

struct UnexpectedAnswer: Error, CustomStringConvertible {
    var what: String
    var description: String { what }
}

enum HTTP {
    private static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 30
        return URLSession(configuration: configuration)
    }()

    static func get(_ url: String) async throws -> (status: Int, body: Data) {
        try await send(URLRequest(url: try requireURL(url)))
    }

    static func post(_ url: String, body: Data) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: try requireURL(url))
        request.httpMethod = "POST"
        request.httpBody = body
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        return try await send(request)
    }

    private static func send(_ request: URLRequest) async throws -> (status: Int, body: Data) {
        let (body, response) = try await session.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, body)
    }

    private static func requireURL(_ string: String) throws -> URL {
        guard let url = URL(string: string) else { throw UnexpectedAnswer(what: "not a URL: \(string)") }
        return url
    }
}
