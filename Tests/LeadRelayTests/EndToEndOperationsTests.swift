import Foundation
import Kafka
import LeadRelayDemo
import SeekerLeadsSimulator
import TestSupport
import Testing

extension EndToEnd {
    /// What an operator does with a running relay: inspect and re-drive its dead letters (`lead-relay dlq`), and
    /// ask it why it is stuck (`GET /status`, `lead-relay status`).
    @Suite struct Operations {
        /// 30 leads the API rejects and 20 invalid records: the summary counts them by reason, a dry run publishes
        /// nothing, a replay interrupted by SIGTERM resumes without publishing twice, the 30 are then submitted
        /// once each, the 20 stay where they are, and the same replay run again publishes nothing.
        @Test func rejectedLeadsAreReplayedOnceAfterTheAPIAcceptsThemAndInvalidOnesStay() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            var rejecting = SimulatorFaults()
            rejecting.errorRates = ["422": 1.0]
            try await simulator.setFaults(rejecting)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let leads = distinctValidLeads(30, namespace: uniqueName("replay"), seed: 41)
            let invalid = SampleLeads.mix(count: 20, duplicateFraction: 0, invalidFraction: 1, seed: 41)
            _ = try await producer.produce(leads + invalid)
            let groupID = uniqueName("relay")
            let relay = try await startRelay(kafka, simulator, groupID: groupID, scratch)
            try await waitUntil("50 dead letters", timeout: .seconds(120)) {
                try await relay.metrics().value("lead_relay_outcomes_total", ["outcome": "dead_lettered"]) >= 50
            }
            let dlq = DeadLetterTool(bootstrapServers: kafka.bootstrapServers, groupID: groupID, scratch: scratch)

            let summary = try await dlq.json(["summary", "--format", "json"])
            #expect(summary["total"] as? Int == 50)
            var invalidByReason: [String: Int] = [:]
            for record in invalid {
                if case .deadLettered(let reason) = record.expectation { invalidByReason[reason, default: 0] += 1 }
            }
            let byReason = summary["byReason"] as? [String: Int] ?? [:]
            #expect(byReason == invalidByReason.merging(["rejected-by-api": 30]) { $0 + $1 }, "\(summary)")
            #expect((summary["byHttpStatus"] as? [String: Int])?["422"] == 30)

            let listing = try await dlq.run(["list"])
            #expect(listing.stdout.count == 50)
            expectNoPersonalData(in: listing.stdout.joined(separator: "\n"), of: leads + invalid)
            let listed = try await dlq.run(["list", "--format", "json", "--reason", "rejected-by-api"]).stdout
                .compactMap { jsonObject(Array($0.utf8)) }
            #expect(listed.count == 30)
            #expect(
                listed.allSatisfy { $0["dedupeKey"] is String }, "a rejected lead's dead letter names no dedupe key")
            let rejectedLocations = Set(
                listed.compactMap { entry -> String? in
                    guard let partition = entry["dlqPartition"] as? Int, let offset = entry["dlqOffset"] as? Int else {
                        return nil
                    }
                    return "\(Topics.deadLetters)/\(partition)/\(offset)"
                })

            let dryRun = try await dlq.run(["replay", "--reason", "rejected-by-api", "--dry-run"])
            #expect(dryRun.termination == .exited(0), "\(dryRun.stderr)")
            #expect(dryRun.stdout.filter { $0.hasPrefix("would publish ") }.count == 30)
            #expect(try await replayedRecords(kafka.bootstrapServers).isEmpty, "a dry run published")

            try await simulator.setFaults(SimulatorFaults())
            let interrupted = try dlq.start([
                "replay", "--reason", "rejected-by-api", "--rate", "5/s", "--format", "json",
            ])
            _ = try await interrupted.stderrLine("a few records replayed", timeout: .seconds(60)) { line -> Int? in
                guard let published = jsonObject(Array(line.utf8))?["published"] as? Int, published >= 2 else {
                    return nil
                }
                return published
            }
            interrupted.signal(SIGTERM)
            #expect(try await interrupted.waitForExit(timeout: .seconds(60)) == .exited(1))
            let first = try #require(interrupted.stdout.last.flatMap { jsonObject(Array($0.utf8)) })
            #expect(first["interrupted"] as? Bool == true, "\(first)")
            let publishedFirst = try #require(first["published"] as? Int)
            #expect((2..<30).contains(publishedFirst))

            let resumed = try await dlq.json(["replay", "--reason", "rejected-by-api", "--format", "json"])
            #expect(resumed["published"] as? Int == 30 - publishedFirst, "\(resumed)")
            #expect(resumed["failed"] as? Int == 0)
            let again = try await dlq.json(["replay", "--reason", "rejected-by-api", "--format", "json"])
            #expect(again["published"] as? Int == 0, "a second run published again: \(again)")

            let replayed = try await replayedRecords(kafka.bootstrapServers)
            let replayedFrom = replayed.compactMap { $0.header("lead-relay.replayed-from") }
            #expect(replayedFrom.count == 30)
            #expect(Set(replayedFrom) == rejectedLocations, "replayed other than the 30 rejected leads")
            for record in replayed {
                #expect(record.header("lead-relay.replay-count") == "1")
                #expect(!record.headers.contains { $0.key.hasPrefix("lead-relay.error.") })
                #expect(!record.headers.contains { $0.key.hasPrefix("lead-relay.source.") })
            }
            try await waitUntil("the 30 replayed leads submitted", timeout: .seconds(120)) {
                try await relay.metrics().value("lead_relay_outcomes_total", ["outcome": "submitted"]) >= 30
            }
            try await expectEachLeadStoredOnce(leads, by: simulator)
            let results = try await topicSnapshot(Topics.results, kafka.bootstrapServers)
            let submitted = results.compactMap { jsonObject($0.value) }.filter {
                $0["status"] as? String == "SUBMITTED"
            }
            #expect(Set(submitted.compactMap { $0["dedupeKey"] as? String }).count == 30)
            #expect(submitted.count == 30)
            let after = try await dlq.json(["summary", "--format", "json"])
            #expect(after["total"] as? Int == 50, "the replayed leads were dead-lettered again: \(after)")
            #expect(try await relay.terminate() == .exited(0))
            await producer.close()
        }

        /// A record that fails at every round is replayed `LEAD_RELAY_MAX_REPLAYS` times, its count carried from
        /// one dead letter to the next, and then refused (exit status 1).
        @Test func aRecordThatKeepsFailingIsRefusedAfterTheMaximumOfReplays() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            _ = try await producer.producer.send(
                topic: Topics.input, key: Array("broken".utf8), value: Array("{\"email\": ".utf8),
                headers: [KafkaHeader(key: "portal", value: Array("p1".utf8))])
            let groupID = uniqueName("relay")
            let relay = try await startRelay(kafka, simulator, groupID: groupID, scratch)
            var dlq = DeadLetterTool(bootstrapServers: kafka.bootstrapServers, groupID: groupID, scratch: scratch)
            dlq.environment["LEAD_RELAY_MAX_REPLAYS"] = "2"
            for round in 0...2 {
                let letters = try await waitFor("dead letter \(round + 1)", timeout: .seconds(90)) {
                    let letters = try await topicSnapshot(Topics.deadLetters, kafka.bootstrapServers)
                    return letters.count == round + 1 ? letters : nil
                }
                let newest = try #require(letters.last)
                #expect(newest.value == Array("{\"email\": ".utf8), "the value changed on its way round")
                #expect(newest.header("portal") == "p1")
                #expect(newest.header("lead-relay.replay-count") == (round == 0 ? nil : String(round)))
                if round > 0 {
                    let previous = letters[letters.count - 2]
                    #expect(
                        newest.header("lead-relay.replayed-from")
                            == "\(Topics.deadLetters)/\(previous.partition)/\(previous.offset)")
                }
                let replay = try await dlq.run(["replay", "--reason", "malformed", "--format", "json"])
                let report = try #require(replay.stdout.last.flatMap { jsonObject(Array($0.utf8)) })
                if round < 2 {
                    #expect(replay.termination == .exited(0), "\(replay.stderr)")
                    #expect(report["published"] as? Int == 1, "\(report)")
                } else {
                    #expect(replay.termination == .exited(1))
                    #expect(report["refused"] as? Int == 1, "\(report)")
                    #expect(report["published"] as? Int == 0)
                    #expect(replay.stderr.contains("replayed 2 times already"), "\(replay.stderr)")
                }
            }
            #expect(try await replayedRecords(kafka.bootstrapServers).count == 2)
            #expect(try await relay.terminate() == .exited(0))
            await producer.close()
        }

        /// During an outage the status page shows the circuit open and the oldest unfinished record getting older;
        /// during a `Retry-After` hold it shows the hold; `lead-relay status` says both for a person.
        @Test func statusShowsTheOpenCircuitTheGrowingAgeAndARetryAfterHold() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            try await simulator.startOutage()
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            _ = try await producer.produce(distinctValidLeads(6, namespace: uniqueName("status"), seed: 43))
            let relay = try await startRelay(kafka, simulator, groupID: uniqueName("relay"), scratch)

            func status() async throws -> [String: Any] {
                let (code, body) = try await relay.get("/status")
                #expect(code == 200)
                return try #require(jsonObject(Array(body.utf8)))
            }
            func oldestAge(_ status: [String: Any]) -> Double? {
                (status["partitions"] as? [[String: Any]])?.compactMap { $0["oldestUnfinishedAgeSeconds"] as? Double }
                    .max()
            }
            let open = try await waitFor("the circuit open with leads held", timeout: .seconds(90)) {
                let current = try await status()
                let circuit = current["circuit"] as? [String: Any]
                return circuit?["state"] as? String == "open" && oldestAge(current) != nil ? current : nil
            }
            let firstAge = try #require(oldestAge(open))
            let held = (open["partitions"] as? [[String: Any]])?.compactMap { $0["recordsHeld"] as? Int }.reduce(0, +)
            #expect(held == 6, "\(open)")
            try await waitUntil("the oldest unfinished record getting older", timeout: .seconds(60)) {
                (oldestAge(try await status()) ?? 0) >= firstAge + 1
            }
            let ages = try await relay.metrics().series(named: "lead_relay_oldest_unfinished_age_seconds")
            #expect(ages.count == Topics.partitions[Topics.input].map(Int.init))
            #expect((ages.map(\.value).max() ?? 0) >= firstAge + 1)
            let text = try await StatusTool.run(url: relay.baseURL + "/status", scratch: scratch)
            #expect(text.contains("circuit: open since"), "\(text)")
            #expect(!text.contains("@example.com"))

            var storm = SimulatorFaults()
            storm.storm429Requests = 1000
            storm.retryAfterSeconds = 30
            try await simulator.setFaults(storm)
            let hold = try await waitFor("a Retry-After hold", timeout: .seconds(60)) {
                let budget = try await status()["budget"] as? [String: Any]
                return budget?["retryAfterHold"] as? [String: Any]
            }
            let remaining = try #require(hold["remainingSeconds"] as? Double)
            #expect(remaining > 0 && remaining <= 30, "\(hold)")
            let heldText = try await StatusTool.run(url: relay.baseURL + "/status", scratch: scratch)
            #expect(heldText.contains("Retry-After hold until"), "\(heldText)")
            _ = try await relay.terminate()
            await producer.close()
        }
    }
}

/// `lead-relay dlq` refuses bad usage and a bad configuration with exit status 2 and one line naming what is wrong,
/// before it connects to anything.
@Test func deadLetterCommandsRefuseBadUsageAndConfigurationWithStatusTwo() async throws {
    let scratch = try ScratchDirectory()
    let cluster = ["KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"]
    let cases: [(arguments: [String], environment: [String: String], says: String)] = [
        (["summary"], [:], "lead-relay: KAFKA_BOOTSTRAP_SERVERS: required"),
        (["replay"], cluster.merging(["LEAD_RELAY_MAX_REPLAYS": "0"]) { $1 }, "lead-relay: LEAD_RELAY_MAX_REPLAYS: "),
        (["replay", "--rate", "fast"], cluster, "--rate"),
        (["list", "--since", "yesterday"], cluster, "--since"),
        (["list", "--source-offset", "9-3"], cluster, "--source-offset"),
    ]
    for (arguments, environment, says) in cases {
        let process = try ChildProcess(
            product: "lead-relay", arguments: ["dlq"] + arguments, environment: environment, logDirectory: scratch.url)
        #expect(try await process.waitForExit() == .exited(2), "dlq \(arguments): \(process.stderr)")
        #expect(process.stderr.contains(says), "dlq \(arguments): \(process.stderr)")
    }
}

/// A relay with the tests' defaults, its dedupe store in `scratch`.
private func startRelay(
    _ kafka: KafkaDevProcess, _ simulator: SimulatorProcess, groupID: String, _ scratch: ScratchDirectory
) async throws -> RelayProcess {
    let environment = RelayEnvironment(
        kafka: kafka.bootstrapServers, simulator: simulator, groupID: groupID,
        dedupeDatabase: scratch.path("dedupe.sqlite"))
    return try await RelayProcess(environment: environment.variables, scratch: scratch)
}

/// `lead-relay dlq` against the tests' cluster, with the relay's group.
struct DeadLetterTool {
    var environment: [String: String]
    let scratch: ScratchDirectory

    init(bootstrapServers: String, groupID: String, scratch: ScratchDirectory) {
        environment = ["KAFKA_BOOTSTRAP_SERVERS": bootstrapServers, "LEAD_RELAY_GROUP_ID": groupID]
        self.scratch = scratch
    }

    struct Run {
        var termination: ChildProcess.Termination
        var stdout: [String]
        var stderr: String
    }

    func start(_ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(
            product: "lead-relay", arguments: ["dlq"] + arguments, environment: environment, logDirectory: scratch.url)
    }

    func run(_ arguments: [String]) async throws -> Run {
        let process = try start(arguments)
        let termination = try await process.waitForExit(timeout: .seconds(120))
        return Run(termination: termination, stdout: process.stdout, stderr: process.stderr)
    }

    /// The last line of standard output as a JSON object, after a successful run.
    func json(_ arguments: [String]) async throws -> [String: Any] {
        let run = try await run(arguments)
        #expect(run.termination == .exited(0), "lead-relay dlq \(arguments): \(run.stderr)")
        return try #require(run.stdout.last.flatMap { jsonObject(Array($0.utf8)) }, "\(run.stdout)")
    }
}

/// `lead-relay status --url`, for a person.
enum StatusTool {
    static func run(url: String, scratch: ScratchDirectory) async throws -> String {
        let process = try ChildProcess(
            product: "lead-relay", arguments: ["status", "--url", url], logDirectory: scratch.url)
        #expect(try await process.waitForExit() == .exited(0), "\(process.stderr)")
        return process.stdout.joined(separator: "\n")
    }
}

/// Everything `topic` holds now, read from its start to its end.
func topicSnapshot(_ topic: String, _ bootstrapServers: String) async throws -> [KafkaConsumerRecord] {
    let reader = try KafkaTopicReader(
        configuration: KafkaConfiguration(properties: ["bootstrap.servers": bootstrapServers]), groupID: nil,
        logger: endToEndLogger)
    let watermarks = try await reader.watermarks(of: try await reader.partitions(of: topic))
    var records: [KafkaConsumerRecord] = []
    for try await batch in try await reader.records(
        from: watermarks.mapValues(\.lowerBound), upTo: watermarks.mapValues(\.upperBound))
    {
        records += batch
    }
    await reader.close()
    return records.sorted { ($0.partition, $0.offset) < ($1.partition, $1.offset) }
}

/// The input topic's records that a replay published.
func replayedRecords(_ bootstrapServers: String) async throws -> [KafkaConsumerRecord] {
    try await topicSnapshot(Topics.input, bootstrapServers).filter { $0.header("lead-relay.replayed-from") != nil }
}

/// No contact field of any record (email, phone number, name, message) appears in `text`.
func expectNoPersonalData(
    in text: String, of records: [SampleLeads.Record], sourceLocation: SourceLocation = #_sourceLocation
) {
    for record in records {
        guard let object = jsonObject(record.value) else { continue }
        let request = object["data"] as? [String: Any] ?? object
        var values = ["email", "firstName", "lastName", "message"].compactMap { request[$0] as? String }
        values += (request["phoneNumbers"] as? [[String: Any]] ?? []).compactMap { $0["number"] as? String }
        for value in values where value.count >= 4 {
            #expect(!text.contains(value), "\(value) appears in the output", sourceLocation: sourceLocation)
        }
    }
}
