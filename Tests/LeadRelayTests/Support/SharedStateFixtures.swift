import Foundation
import Kafka
import LeadRelayDemo
import SeekerLeadsSimulator
import TestSupport
import Testing

/// The topics of the shared-state tests: the relay's default names, with a 12-partition input so that three or
/// four relays each hold several partitions. The results and dead-letter topics keep the partitions
/// `Topics.partitions` gives them, so `TopicTail.recordsBeforeEndMarkers` works on them unchanged.
enum SharedTopics {
    static let inputPartitions: Int32 = 12
    static let all: [String: Int32] = [
        Topics.input: inputPartitions, Topics.results: Topics.partitions[Topics.results] ?? 6,
        Topics.deadLetters: Topics.partitions[Topics.deadLetters] ?? 1,
    ]
}

/// `lead-relay kafka-dev` with `SharedTopics`.
final class SharedKafkaDev: Sendable {
    let process: ChildProcess
    let bootstrapServers: String

    init(scratch: ScratchDirectory) async throws {
        let topics = SharedTopics.all.flatMap { ["--topic", "\($0.key):\($0.value)"] }
        process = try ChildProcess(
            product: "lead-relay", arguments: ["kafka-dev", "--brokers", "1"] + topics, logDirectory: scratch.url)
        bootstrapServers = try await process.announcedValue("KAFKA_BOOTSTRAP_SERVERS")
    }
}

/// One test's world: a real PostgreSQL, kafka-dev with a 12-partition input, the simulator, a producer and a tail
/// of the results and dead-letter topics that reads from the test's start. Each test has its own.
final class SharedWorld: Sendable {
    let scratch: ScratchDirectory
    let database: PostgresServer
    let kafka: SharedKafkaDev
    let simulator: SimulatorProcess
    let producer: TestProducer
    let tail: TopicTail
    let groupID = uniqueName("relay")

    /// Runs `body` in a world of its own; every server and process is stopped when it returns or throws (the
    /// relays `body` started end with their last reference, PostgreSQL in `PostgresServer.with`).
    static func with(simulatorArguments: [String] = [], _ body: (SharedWorld) async throws -> Void) async throws {
        try await PostgresServer.with { database in
            let scratch = try ScratchDirectory()
            let kafka = try await SharedKafkaDev(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch, arguments: simulatorArguments)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let tail = try TopicTail(
                topics: [Topics.results, Topics.deadLetters], bootstrapServers: kafka.bootstrapServers)
            let world = SharedWorld(
                scratch: scratch, database: database, kafka: kafka, simulator: simulator, producer: producer,
                tail: tail)
            do {
                try await body(world)
            } catch {
                await world.close()
                throw error
            }
            await world.close()
        }
    }

    private init(
        scratch: ScratchDirectory, database: PostgresServer, kafka: SharedKafkaDev, simulator: SimulatorProcess,
        producer: TestProducer, tail: TopicTail
    ) {
        self.scratch = scratch
        self.database = database
        self.kafka = kafka
        self.simulator = simulator
        self.producer = producer
        self.tail = tail
    }

    private func close() async {
        await tail.close()
        await producer.close()
    }

    /// The environment of relay `name`: the end-to-end defaults, this world's database and group, a dedupe file
    /// of its own in `directory` (the world's scratch directory unless given), then `changes`.
    func relayEnvironment(
        _ name: String, in directory: ScratchDirectory? = nil, _ changes: [String: String] = [:]
    ) -> [String: String] {
        var environment = RelayEnvironment(
            kafka: kafka.bootstrapServers, simulator: simulator, groupID: groupID,
            dedupeDatabase: (directory ?? scratch).path("\(name).sqlite"))
        environment["LEAD_RELAY_DATABASE_URL"] = database.url
        // Up to seven processes share the cores here, and the simulator, starved for tens of milliseconds, then
        // reads the requests that came meanwhile at once: their arrivals, as it counts them, bunch up by more than
        // the end-to-end default allows for (20 ms still saw a violation with a release build alongside). The
        // margin is the budget's allowance for exactly that; these tests check what the relays share, not the rate.
        environment["LEAD_RELAY_RATE_MARGIN_MS"] = "50"
        return environment.variables.merging(changes) { _, new in new }
    }

    func startRelay(
        _ name: String, in directory: ScratchDirectory? = nil, _ changes: [String: String] = [:]
    ) async throws -> RelayProcess {
        try await RelayProcess(environment: relayEnvironment(name, in: directory, changes), scratch: scratch)
    }

    /// Starts `count` relays at once and waits until the group is stable: every relay ready, and the input's
    /// partitions shared among them with each held by exactly one (by their lag series, which a relay drops for
    /// a partition taken away at its next lag report). Records produced from then on are read once, unless a
    /// relay leaves or is stopped for longer than its session.
    func startStableGroup(_ count: Int, _ changes: [String: String] = [:]) async throws -> [RelayProcess] {
        let relays = try await withThrowingTaskGroup(of: (Int, RelayProcess).self) { group in
            for index in 0..<count {
                group.addTask { (index, try await self.startRelay("relay-\(index)", changes)) }
            }
            var started: [Int: RelayProcess] = [:]
            for try await (index, relay) in group { started[index] = relay }
            return (0..<count).compactMap { started[$0] }
        }
        try await waitForStableGroup(relays)
        return relays
    }

    func waitForStableGroup(_ relays: [RelayProcess]) async throws {
        try await waitUntil(
            "a stable group of \(relays.count) relays", timeout: .seconds(120), every: .milliseconds(200)
        ) {
            var holders: [Int32: Int] = [:]
            for relay in relays {
                guard (try? await relay.get("/health/ready").status) == 200 else { return false }
                guard let partitions = try? await relay.inputPartitions() else { return false }
                for partition in partitions { holders[partition, default: 0] += 1 }
            }
            return holders.count == Int(SharedTopics.inputPartitions) && holders.values.allSatisfy { $0 == 1 }
        }
    }

    /// Waits until the results and dead letters written so far name every record of `produced`. When they do
    /// not in time, the failure says which records lack one and what `relays` report.
    func waitForAnOutcomeOfEach(
        _ produced: [ProducedSample], relays: [RelayProcess] = [], timeout: Duration = .seconds(180)
    ) async throws {
        do {
            try await waitForAnOutcomeOfEachOnce(produced, timeout: timeout)
        } catch let error as TimedOut {
            Issue.record("\(error)\n\(await diagnosis(produced, relays: relays))")
            throw error
        }
    }

    /// The records of `produced` without an outcome, by partition, and each relay's state. With
    /// `LEAD_RELAY_E2E_KEEP_LOGS=<directory>` in the test's environment, the processes' logs are copied there.
    func diagnosis(_ produced: [ProducedSample], relays: [RelayProcess]) async -> String {
        let answered = Set(outcomePositionsSoFar())
        let missing = produced.filter { !answered.contains(InputPosition($0.partition, $0.offset)) }
        var lines = ["\(missing.count) of \(produced.count) records without an outcome:"]
        for (partition, records) in Dictionary(grouping: missing, by: \.partition).sorted(by: { $0.key < $1.key }) {
            let offsets = records.map(\.offset).sorted()
            lines.append("  partition \(partition): \(offsets.count) records, offsets \(offsets.prefix(8))...")
        }
        keepLogs()
        for (index, relay) in relays.enumerated() {
            let name = URL(fileURLWithPath: relay.process.stderrPath).lastPathComponent
            guard relay.process.isRunning else {
                lines.append("relay \(index) (\(name)): not running")
                continue
            }
            let metrics = try? await relay.metrics()
            let readiness = try? await relay.get("/health/ready")
            let figures = [
                "lead_relay_records_consumed_total", "lead_relay_outcomes_total", "lead_relay_in_process_records",
                "lead_relay_api_in_flight", "lead_relay_shared_budget_grants_total", "lead_relay_claims_waited_total",
                "lead_relay_claims_taken_over_total",
            ].map { "\($0)=\(metrics?.value($0) ?? -1)" }
            lines.append("relay \(index) (\(name)): \(figures.joined(separator: " "))")
            lines.append("  partitions \((try? await relay.inputPartitions())?.sorted() ?? [])")
            lines.append("  ready: \(readiness?.status ?? 0) \(readiness?.body ?? "")")
            let warnings = relay.process.stderr.split(separator: "\n").filter {
                $0.contains("\"warning\"") || $0.contains("\"error\"")
            }
            lines.append(
                "  \(warnings.count) warnings and errors; the last: \(warnings.suffix(5).joined(separator: "\n  "))")
        }
        return lines.joined(separator: "\n")
    }

    /// With `LEAD_RELAY_E2E_KEEP_LOGS=<directory>` in the test's environment, copies the processes' logs there.
    private func keepLogs() {
        guard let keepLogs = ProcessInfo.processInfo.environment["LEAD_RELAY_E2E_KEEP_LOGS"] else { return }
        try? FileManager.default.createDirectory(atPath: keepLogs, withIntermediateDirectories: true)
        for file in (try? FileManager.default.contentsOfDirectory(atPath: scratch.url.path)) ?? [] {
            try? FileManager.default.copyItem(atPath: scratch.path(file), toPath: keepLogs + "/" + file)
        }
    }

    private func waitForAnOutcomeOfEachOnce(_ produced: [ProducedSample], timeout: Duration) async throws {
        let expected = Set(produced.map { InputPosition($0.partition, $0.offset) })
        try await waitUntil(
            "an outcome for each of \(produced.count) records", timeout: timeout, every: .milliseconds(250)
        ) {
            expected.isSubset(of: Set(outcomePositionsSoFar()))
        }
    }

    /// Waits until the results and dead letters written so far name at least `count` distinct records.
    func waitForOutcomes(atLeast count: Int, timeout: Duration = .seconds(120)) async throws {
        try await waitUntil("outcomes of \(count) records", timeout: timeout, every: .milliseconds(100)) {
            Set(outcomePositionsSoFar()).count >= count
        }
    }

    /// The input records named by the results and dead letters read so far, once per outcome.
    func outcomePositionsSoFar() -> [InputPosition] {
        tail.records.compactMap { record in
            if record.topic == Topics.results, !EndMarker.isMarker(record) {
                return SharedOutcome(result: record)?.position
            }
            if record.topic == Topics.deadLetters, !EndMarker.isMarker(record) {
                return SharedOutcome(deadLetter: record)?.position
            }
            return nil
        }
    }

    /// Every outcome written, once the relays are done: results and dead letters before end markers produced now.
    func writtenOutcomes() async throws -> [SharedOutcome] {
        let written = try await tail.recordsBeforeEndMarkers(
            of: [Topics.results, Topics.deadLetters], producer: producer)
        var outcomes: [SharedOutcome] = []
        for record in written[Topics.results, default: []] {
            guard let outcome = SharedOutcome(result: record) else {
                Issue.record("a result that is not a JSON object with an input position")
                continue
            }
            outcomes.append(outcome)
        }
        for record in written[Topics.deadLetters, default: []] {
            outcomes.append(SharedOutcome(deadLetter: record) ?? SharedOutcome(kind: .deadLettered))
        }
        return outcomes
    }

    /// Expects the group to have committed every input partition to its end, once `relays` have left (it joins
    /// their group, after producing a marker to each partition). A failure names the partitions behind and quotes
    /// what each relay logged about its partitions and commits.
    func expectInputCommittedToEnd(
        by relays: [RelayProcess], sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let behind = try await partitionsNotCommittedToEnd(
            groupID: groupID, topic: Topics.input, partitionCount: SharedTopics.inputPartitions,
            bootstrapServers: kafka.bootstrapServers, producer: producer)
        guard !behind.isEmpty else { return }
        keepLogs()
        var lines = ["the group did not commit these input partitions to their end: \(behind)"]
        for (index, relay) in relays.enumerated() {
            let events = relay.process.stderr.split(separator: "\n").filter { line in
                ["commit", "partitions", "relay stop", "rebalance"].contains { line.contains($0) }
            }
            lines.append("relay \(index), the last of its partition and commit events:")
            lines.append(contentsOf: events.suffix(12).map { "  \($0)" })
        }
        Issue.record(Comment(rawValue: lines.joined(separator: "\n")), sourceLocation: sourceLocation)
    }
}

extension RelayProcess {
    /// The input partitions this relay holds, by its lag series.
    func inputPartitions() async throws -> Set<Int32> {
        Set(
            try await metrics().series(named: "lead_relay_consumer_lag")
                .filter { $0.labels["topic"] == Topics.input }
                .compactMap { $0.labels["partition"].flatMap { Int32($0) } })
    }

    /// `/health/ready`'s status and its checks (name → "pass" or "fail").
    func readiness() async throws -> (status: Int, checks: [String: String]) {
        let answer = try await get("/health/ready")
        let checks = jsonObject(Array(answer.body.utf8))?["checks"] as? [String: String] ?? [:]
        return (answer.status, checks)
    }
}

/// One record written to the results or the dead-letter topic, with the input record it answers.
struct SharedOutcome {
    enum Kind: Equatable {
        case submitted, duplicate, deadLettered
        case other(String)
    }

    var kind: Kind
    var position: InputPosition?
    var classifiedID: String?
    var requestID: String?

    init?(result: KafkaConsumerRecord) {
        guard let value = jsonObject(result.value), let input = value["input"] as? [String: Any],
            let partition = input["partition"] as? Int, let offset = input["offset"] as? Int
        else { return nil }
        switch value["status"] as? String {
        case "SUBMITTED": kind = .submitted
        case "DUPLICATE": kind = .duplicate
        case let status: kind = .other(status ?? "none")
        }
        position = InputPosition(Int32(partition), Int64(offset))
        classifiedID = value["classifiedId"] as? String
        requestID = value["requestId"] as? String
    }

    init?(deadLetter: KafkaConsumerRecord) {
        guard let partition = deadLetter.header("lead-relay.source.partition").flatMap({ Int32($0) }),
            let offset = deadLetter.header("lead-relay.source.offset").flatMap({ Int64($0) })
        else { return nil }
        kind = .deadLettered
        position = InputPosition(partition, offset)
    }

    init(kind: Kind) {
        self.kind = kind
    }
}

/// A backlog of valid leads of which every fifth record re-sends an earlier lead of the backlog (same value and
/// headers, so the same dedupe key) under a Kafka key of its own, so on another partition most of the time. The
/// lead re-sent is drawn from all the earlier ones: some far back (long submitted), some just before (probably
/// still in flight on another relay, whose claim the re-send meets).
struct SharedBacklog {
    /// In the order produced.
    var records: [SampleLeads.Record]
    /// The distinct leads, each once.
    var uniqueLeads: [SampleLeads.Record]

    var resendCount: Int { records.count - uniqueLeads.count }

    init(count: Int, namespace: String, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var records: [SampleLeads.Record] = []
        var unique: [SampleLeads.Record] = []
        for position in 0..<count {
            if position % 5 == 4 {
                var resend = unique[Int(random.next() % UInt64(unique.count))]
                resend.key = Array("resend-\(position)-\(resend.classifiedID ?? "")".utf8)
                resend.expectation = .duplicate
                records.append(resend)
            } else {
                let lead = SampleLeads.valid(
                    index: unique.count, shape: SampleLeads.Shape.allCases[unique.count % 3], namespace: namespace,
                    seed: seed)
                unique.append(lead)
                records.append(lead)
            }
        }
        self.records = records
        uniqueLeads = unique
    }
}

/// What the outcomes of a backlog say, once checked by `expectOutcomes`.
struct OutcomeSummary {
    /// Leads (classifiedId) with SUBMITTED results under more than one requestId: posted again and recorded again.
    var leadsWithSeveralRequestIDs: Int
    /// Re-send records (not the first copy of their lead) answered DUPLICATE.
    var resendsAnsweredDuplicate: Int
    /// Records with more than one outcome.
    var recordsWithSeveralOutcomes: Int
}

/// Checks the outcomes of `produced` (all valid leads): nothing dead-lettered; every record an outcome, and
/// exactly one unless `rereadsAllowed` (a relay killed before committing: its successor reads the record again);
/// per lead one SUBMITTED record and DUPLICATE for every other copy, each DUPLICATE naming a submission's
/// requestId. With `rereadsAllowed` a lead may have several SUBMITTED results (re-reads and in-doubt re-posts).
@discardableResult
func expectOutcomes(
    _ outcomes: [SharedOutcome], of produced: [ProducedSample], rereadsAllowed: Bool = false,
    sourceLocation: SourceLocation = #_sourceLocation
) -> OutcomeSummary {
    let deadLetters = outcomes.filter { $0.kind == .deadLettered }
    #expect(deadLetters.isEmpty, "\(deadLetters.count) records dead-lettered", sourceLocation: sourceLocation)
    let unknownStatuses = outcomes.compactMap { outcome -> String? in
        if case .other(let status) = outcome.kind { status } else { nil }
    }
    #expect(unknownStatuses.isEmpty, "results with status \(unknownStatuses)", sourceLocation: sourceLocation)

    let byPosition = Dictionary(grouping: outcomes.filter { $0.position != nil }, by: { $0.position! })
    let producedPositions = Set(produced.map { InputPosition($0.partition, $0.offset) })
    let strangers = Set(byPosition.keys).subtracting(producedPositions)
    #expect(strangers.isEmpty, "outcomes of records never produced: \(strangers)", sourceLocation: sourceLocation)
    let withoutOutcome = produced.filter { byPosition[InputPosition($0.partition, $0.offset)] == nil }
    let lostExamples = withoutOutcome.prefix(5).map { "\($0.partition)@\($0.offset)" }
    #expect(
        withoutOutcome.isEmpty, "\(withoutOutcome.count) records without an outcome, e.g. \(lostExamples)",
        sourceLocation: sourceLocation)
    let several = byPosition.filter { $0.value.count > 1 }
    if !rereadsAllowed {
        let examples = several.prefix(5).map { "\($0.key.partition)@\($0.key.offset): \($0.value.map(\.kind))" }
        #expect(
            several.isEmpty, "\(several.count) records with several outcomes, e.g. \(examples)",
            sourceLocation: sourceLocation)
    }

    // Per lead: the copies' outcomes agree.
    var summary = OutcomeSummary(
        leadsWithSeveralRequestIDs: 0, resendsAnsweredDuplicate: 0, recordsWithSeveralOutcomes: several.count)
    let copies = Dictionary(grouping: produced, by: { $0.sample.classifiedID ?? "" })
    for (classifiedID, records) in copies {
        let leadOutcomes = records.flatMap { byPosition[InputPosition($0.partition, $0.offset)] ?? [] }
        let submitted = leadOutcomes.filter { $0.kind == .submitted }
        let duplicates = leadOutcomes.filter { $0.kind == .duplicate }
        let submittedIDs = Set(submitted.compactMap(\.requestID))
        #expect(!submitted.isEmpty, "lead \(classifiedID) has no SUBMITTED result", sourceLocation: sourceLocation)
        if !rereadsAllowed {
            #expect(
                submitted.count == 1, "lead \(classifiedID): \(submitted.count) SUBMITTED results",
                sourceLocation: sourceLocation)
            #expect(
                duplicates.count == records.count - 1,
                "lead \(classifiedID): \(records.count) copies, \(duplicates.count) DUPLICATE",
                sourceLocation: sourceLocation)
        }
        let strayIDs = duplicates.compactMap(\.requestID).filter { !submittedIDs.contains($0) }
        #expect(
            strayIDs.isEmpty, "lead \(classifiedID): DUPLICATE naming no submission: \(strayIDs)",
            sourceLocation: sourceLocation)
        if submittedIDs.count > 1 { summary.leadsWithSeveralRequestIDs += 1 }
        for record in records where record.sample.expectation == .duplicate {
            let kinds = byPosition[InputPosition(record.partition, record.offset)]?.map(\.kind) ?? []
            if kinds == [.duplicate] { summary.resendsAnsweredDuplicate += 1 }
        }
    }
    return summary
}

/// The API stored each of `uniqueLeads` at least once and nothing else; returns how many extra copies it stored
/// (leads posted more than once).
func extraPosts(
    of uniqueLeads: [SampleLeads.Record], by simulator: SimulatorProcess,
    sourceLocation: SourceLocation = #_sourceLocation
)
    async throws -> Int
{
    let stored = try await simulator.storedCountByClassifiedID()
    let missing = uniqueLeads.compactMap(\.classifiedID).filter { stored[$0] == nil }
    #expect(
        missing.isEmpty, "\(missing.count) leads never reached the API: \(missing.prefix(10))",
        sourceLocation: sourceLocation)
    let expected = Set(uniqueLeads.compactMap(\.classifiedID))
    let strangers = stored.keys.filter { !expected.contains($0) }
    #expect(strangers.isEmpty, "the API stored leads never produced: \(strangers)", sourceLocation: sourceLocation)
    return stored.values.map { $0 - 1 }.reduce(0, +)
}

/// The API request starts (arrivals) per second from the first to the last, by the simulator's request log.
func apiStartRate(_ log: [SimulatorRequestRecord]) -> (starts: Int, seconds: Double, perSecond: Double) {
    let arrivals = log.filter { $0.method == "POST" }.map(\.arrivedAtNanos).sorted()
    guard let first = arrivals.first, let last = arrivals.last, last > first else { return (arrivals.count, 0, 0) }
    let seconds = Double(last - first) / 1e9
    return (arrivals.count, seconds, Double(arrivals.count - 1) / seconds)
}

/// A line for the test output: figures recorded, not asserted (speed belongs to `make bench`).
func record(_ line: String) {
    print("EndToEndSharedState: \(line)")
}

/// For a failure's message: each request the simulator refused as over the budget (429 in the log; these tests
/// inject no 429), with the arrivals of the window before it, in milliseconds before it, and where it lies among
/// `marks` (named instants of the simulator's clock, such as the last arrival seen when a relay was paused).
func budgetViolationReport(_ log: [SimulatorRequestRecord], marks: [String: Int64] = [:], window: Int64 = 200_000_000)
    -> String
{
    let arrivals = log.map(\.arrivedAtNanos).sorted()
    let refused = log.filter { $0.status == 429 }.sorted { $0.arrivedAtNanos < $1.arrivedAtNanos }
    guard let first = arrivals.first else { return "no requests" }
    func ms(_ nanos: Int64) -> String { String(format: "%.1f", Double(nanos) / 1e6) }
    var lines = ["\(refused.count) requests refused as over the budget, of \(log.count):"]
    for request in refused {
        let before = arrivals.filter { $0 > request.arrivedAtNanos - window && $0 <= request.arrivedAtNanos }
        let placed = marks.sorted { $0.value < $1.value }.map { name, mark in
            "\(ms(request.arrivedAtNanos - mark)) ms after \(name)"
        }
        lines.append(
            "  at \(ms(request.arrivedAtNanos - first)) ms (\(placed.joined(separator: ", "))): \(before.count) "
                + "arrivals within \(ms(window)) ms, at -\(before.map { ms(request.arrivedAtNanos - $0) })")
    }
    return lines.joined(separator: "\n")
}

extension SharedWorld {
    /// The simulator counted no request over the budget; else the failure shows each, placed among `marks`.
    func expectNoBudgetViolation(marks: [String: Int64] = [:], sourceLocation: SourceLocation = #_sourceLocation)
        async throws
    {
        let stats = try await simulator.stats()
        let report = stats.violations == 0 ? "" : budgetViolationReport(try await simulator.requestLog(), marks: marks)
        #expect(
            stats.violations == 0, "budget violations: \(stats.violationsByKind)\n\(report)",
            sourceLocation: sourceLocation)
    }

    /// The latest arrival the simulator has answered, on its clock: a mark for `expectNoBudgetViolation`.
    func lastArrival() async throws -> Int64 {
        try await simulator.requestLog().map(\.arrivedAtNanos).max() ?? 0
    }
}
