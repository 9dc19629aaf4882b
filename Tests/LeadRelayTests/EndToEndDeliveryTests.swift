import Foundation
import Kafka
import LeadRelayDemo
import TestSupport
import Testing

/// The relay as operators run it: `lead-relay run` in a process of its own, on `lead-relay kafka-dev`
/// and `seeker-leads-sim` processes. Each test starts its own processes on free ports, with its own
/// dedupe database and consumer group. Serialized: each test runs several processes on few cores.
@Suite(.serialized) enum EndToEnd {}

extension EndToEnd {
    @Suite struct Delivery {
        @Test func mixOfValidDuplicateAndInvalidEventsEndsInExactlyTheExpectedRecords() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let namespace = uniqueName("mix")
            let samples = SampleLeads.mix(
                count: 150, duplicateFraction: 0.15, invalidFraction: 0.15, seed: 7, namespace: namespace)
            try requireEveryKindOfRecord(in: samples)
            let produced = try await producer.produce(samples)

            let groupID = uniqueName("relay")
            let environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: groupID,
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            #expect(try await relay.get("/health/live").status == 200)
            let tail = try TopicTail(
                topics: [Topics.results, Topics.deadLetters], bootstrapServers: kafka.bootstrapServers)

            try await waitUntil("an outcome for every record", timeout: .seconds(120)) {
                try await relay.metrics().value("lead_relay_outcomes_total") >= Double(samples.count)
            }
            let ready = try await relay.get("/health/ready")
            #expect(ready.status == 200, "\(ready.body)")
            let metrics = try await relay.metrics()
            expectContractMetrics(metrics, samples: samples)

            let written = try await tail.recordsBeforeEndMarkers(
                of: [Topics.results, Topics.deadLetters], producer: producer)
            await tail.close()
            let byInputPosition = Dictionary(
                uniqueKeysWithValues: produced.map { (InputPosition($0.partition, $0.offset), $0.sample) })
            expectResults(written[Topics.results] ?? [], for: produced, byInputPosition: byInputPosition)
            expectDeadLetters(written[Topics.deadLetters] ?? [], for: produced, byInputPosition: byInputPosition)
            try await expectAPIReceivedEachUniqueLeadOnceAsSent(simulator, samples: samples)

            #expect(try await relay.terminate() == .exited(0))
            expectNoPersonalDataOrSecret(in: relay.process.stderr, samples: samples, token: simulator.token)
            let behind = try await partitionsNotCommittedToEnd(
                groupID: groupID, topic: Topics.input, bootstrapServers: kafka.bootstrapServers, producer: producer)
            #expect(behind.isEmpty, "the relay's group did not commit these partitions to their end: \(behind)")
            await producer.close()
        }

        /// A static token the API refuses: an authentication failure, which is the configuration's
        /// fault and not the leads'. Nothing is dead-lettered, and the relay says it is not ready.
        @Test func refusedCredentialsDeadLetterNothingAndMakeTheRelayNotReady() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(20, namespace: uniqueName("auth"), seed: 11)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            let wrongToken = "e2e-wrong-token-\(UUID().uuidString.lowercased())"
            environment["SEEKER_LEADS_TOKEN"] = wrongToken
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)

            let notReady = try await waitFor("the relay to report its credentials failing", timeout: .seconds(90)) {
                () -> [String: Any]? in
                let answer = try await relay.get("/health/ready")
                guard answer.status == 503, let report = jsonObject(Array(answer.body.utf8)) else { return nil }
                let failing = (report["failing"] as? [[String: Any]] ?? []).compactMap { $0["check"] as? String }
                return failing.contains("credentials") ? report : nil
            }
            #expect(notReady["status"] as? String == "not_ready")
            #expect((notReady["checks"] as? [String: String])?["credentials"] == "fail")

            // The relay keeps probing with back-off while the credentials fail; each probe is refused.
            try await waitUntil("two refused probes", timeout: .seconds(60)) {
                try await simulator.stats().requestsByStatus["401", default: 0] >= 2
            }
            let metrics = try await relay.metrics()
            #expect(metrics.value("lead_relay_outcomes_total") == 0)
            #expect(metrics.value("lead_relay_dead_letters_total") == 0)
            #expect(metrics.value("lead_relay_auth_failing") == 1)
            let stats = try await simulator.stats()
            #expect(stats.leadsStored == 0)
            // Paused partitions and one probe at a time: far fewer requests than leads waiting.
            #expect(stats.requestsTotal < samples.count, "\(stats.requestsByStatus)")

            #expect(try await relay.terminate() == .exited(0))
            #expect(!relay.process.stderr.contains(wrongToken), "the token appears in the relay's log")
            // Nothing reached an outcome, so nothing may have been written to either topic.
            let tail = try TopicTail(
                topics: [Topics.results, Topics.deadLetters], bootstrapServers: kafka.bootstrapServers)
            let written = try await tail.recordsBeforeEndMarkers(
                of: [Topics.results, Topics.deadLetters], producer: producer)
            await tail.close()
            let nothingWritten = written.values.allSatisfy(\.isEmpty)
            #expect(nothingWritten, "written: \(written.mapValues(\.count))")
            await producer.close()
        }
    }
}

/// Where a record sits on the input topic.
struct InputPosition: Hashable {
    var partition: Int32
    var offset: Int64
    init(_ partition: Int32, _ offset: Int64) {
        self.partition = partition
        self.offset = offset
    }
}

enum SampleShape: Hashable {
    case structured, binary, plain
}

/// What the relay must make of one sample.
struct SampleFacts {
    var shape: SampleShape?
    /// For CloudEvents, `ce:<source>|<id>`; for plain events the key is a hash, checked by pattern.
    var cloudEventsKey: String?
    var eventID: String?
    var eventSource: String?
    /// The createLeadRequest fields sent, canonical JSON.
    var requestFields: Data?

    init(_ sample: SampleLeads.Record) {
        func header(_ name: String) -> String? {
            sample.headers.first { $0.key == name }?.value.map { String(decoding: $0, as: UTF8.self) }
        }
        if let id = header("ce_id"), let source = header("ce_source") {
            shape = .binary
            eventID = id
            eventSource = source
            requestFields = sample.value.flatMap { try? canonicalJSON(Data($0)) }
        } else if let object = jsonObject(sample.value), object["specversion"] != nil {
            shape = .structured
            eventID = object["id"] as? String
            eventSource = object["source"] as? String
            requestFields = object["data"].flatMap {
                try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys])
            }
        } else if jsonObject(sample.value) != nil {
            shape = .plain
            requestFields = sample.value.flatMap { try? canonicalJSON(Data($0)) }
        }
        if let eventID, let eventSource { cloudEventsKey = "ce:\(eventSource)|\(eventID)" }
    }
}

private func requireEveryKindOfRecord(in samples: [SampleLeads.Record]) throws {
    let valid = samples.filter { $0.expectation == .submitted }
    let shapes = Set(valid.compactMap { SampleFacts($0).shape })
    try #require(shapes == [.structured, .binary, .plain], "the mix lacks a shape: \(shapes)")
    try #require(samples.contains { $0.expectation == .duplicate })
    let reasons = Set(
        samples.compactMap { sample -> String? in
            if case .deadLettered(let reason) = sample.expectation { return reason } else { return nil }
        })
    try #require(reasons == ["malformed", "schema-violation", "unsupported-type"], "\(reasons)")
}

private func expectContractMetrics(_ metrics: PrometheusText, samples: [SampleLeads.Record]) {
    let submitted = samples.count { $0.expectation == .submitted }
    let duplicates = samples.count { $0.expectation == .duplicate }
    let deadLettered = samples.count - submitted - duplicates
    #expect(metrics.value("lead_relay_records_consumed_total") == Double(samples.count))
    #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "submitted"]) == Double(submitted))
    #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "duplicate"]) == Double(duplicates))
    #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "dead_lettered"]) == Double(deadLettered))
    #expect(metrics.value("lead_relay_dead_letters_total") == Double(deadLettered))
    #expect(metrics.value("lead_relay_api_requests_total", ["code": "200"]) == Double(submitted))
    for name in [
        "lead_relay_api_request_duration_seconds_bucket", "lead_relay_budget_wait_seconds_bucket",
        "lead_relay_end_to_end_seconds_bucket", "lead_relay_api_in_flight", "lead_relay_retries_total",
        "lead_relay_circuit_open",
    ] {
        #expect(metrics.has(name), "/metrics lacks \(name)")
    }
    let lag = metrics.series(named: "lead_relay_consumer_lag")
    #expect(Set(lag.compactMap { $0.labels["partition"] }).count == 6, "lag series: \(lag.map(\.labels))")
    #expect(lag.allSatisfy { $0.labels["topic"] == Topics.input })
    #expect(metrics.value("lead_relay_circuit_open") == 0)
}

private let resultFields = [
    "status", "dedupeKey", "eventId", "eventSource", "classifiedId", "requestId", "title", "httpStatus", "attempts",
    "firstAttemptAt", "completedAt", "input",
]

private func expectResults(
    _ results: [KafkaConsumerRecord], for produced: [ProducedSample],
    byInputPosition: [InputPosition: SampleLeads.Record]
) {
    let relayed = produced.filter { $0.sample.expectation == .submitted || $0.sample.expectation == .duplicate }
    #expect(results.count == relayed.count)
    var answered: [InputPosition: Int] = [:]
    var statusesByKey: [String: [(status: String, requestId: String)]] = [:]
    for result in results {
        let key = String(decoding: result.key ?? [], as: UTF8.self)
        #expect(result.headers == [KafkaHeader(key: "content-type", value: Array("application/json".utf8))])
        guard let value = jsonObject(result.value) else {
            Issue.record("a result value is not a JSON object")
            continue
        }
        let missing = resultFields.filter { value[$0] == nil }
        #expect(missing.isEmpty, "result lacks \(missing)")
        let input = value["input"] as? [String: Any] ?? [:]
        #expect(input["topic"] as? String == Topics.input)
        let position = InputPosition(
            Int32(input["partition"] as? Int ?? -1), Int64(input["offset"] as? Int ?? -1))
        answered[position, default: 0] += 1
        guard let sample = byInputPosition[position] else {
            Issue.record("a result names no produced record: \(position)")
            continue
        }
        let facts = SampleFacts(sample)
        if let expectedKey = facts.cloudEventsKey {
            #expect(key == expectedKey)
        } else {
            #expect(key.hasPrefix("sha256:") && key.count == 7 + 64, "plain event key \(key)")
        }
        #expect(value["dedupeKey"] as? String == key)
        #expect(value["classifiedId"] as? String == sample.classifiedID)
        #expect(value["eventId"] as? String == facts.eventID)
        #expect(value["eventSource"] as? String == facts.eventSource)
        let status = value["status"] as? String ?? ""
        #expect(["SUBMITTED", "DUPLICATE"].contains(status))
        #expect(value["httpStatus"] as? Int == 200)
        let attempts = value["attempts"] as? Int ?? -1
        #expect(status == "SUBMITTED" ? attempts >= 1 : attempts == 0, "\(status) with \(attempts) attempts")
        for field in ["firstAttemptAt", "completedAt"] {
            #expect(parseRFC3339(value[field] as? String) != nil, "\(field): \(value[field] ?? "nil")")
        }
        let requestId = value["requestId"] as? String ?? ""
        #expect(!requestId.isEmpty)
        statusesByKey[key, default: []].append((status, requestId))
    }
    for sample in relayed {
        #expect(answered[InputPosition(sample.partition, sample.offset)] == 1, "outcomes of \(sample.offset)")
    }
    let recordsByClassifiedID = Dictionary(grouping: relayed, by: { $0.sample.classifiedID ?? "" })
    #expect(statusesByKey.count == recordsByClassifiedID.count)
    for (key, statuses) in statusesByKey {
        let submitted = statuses.filter { $0.status == "SUBMITTED" }
        #expect(submitted.count == 1, "\(key): \(statuses.map(\.status))")
        let duplicates = statuses.filter { $0.status == "DUPLICATE" }
        #expect(duplicates.allSatisfy { $0.requestId == submitted.first?.requestId }, "\(key): requestIds differ")
    }
}

private let deadLetterHeaderNames: Set<String> = [
    "lead-relay.error.stage", "lead-relay.error.reason", "lead-relay.error.message", "lead-relay.error.details",
    "lead-relay.source.topic", "lead-relay.source.partition", "lead-relay.source.offset",
    "lead-relay.source.timestamp", "lead-relay.attempts", "lead-relay.failed-at",
]

private func expectDeadLetters(
    _ deadLetters: [KafkaConsumerRecord], for produced: [ProducedSample],
    byInputPosition: [InputPosition: SampleLeads.Record]
) {
    let invalid = produced.filter {
        if case .deadLettered = $0.sample.expectation { true } else { false }
    }
    #expect(deadLetters.count == invalid.count)
    var seen = Set<InputPosition>()
    for letter in deadLetters {
        var added: [String: String] = [:]
        for header in letter.headers where header.key.hasPrefix("lead-relay.") {
            added[header.key] = header.value.map { String(decoding: $0, as: UTF8.self) }
        }
        let position = InputPosition(
            Int32(added["lead-relay.source.partition"] ?? "") ?? -1,
            Int64(added["lead-relay.source.offset"] ?? "") ?? -1)
        guard let sample = byInputPosition[position], case .deadLettered(let reason) = sample.expectation else {
            Issue.record("a dead letter names no invalid input record: \(added)")
            continue
        }
        #expect(seen.insert(position).inserted, "two dead letters for \(position)")
        #expect(letter.key == sample.key)
        #expect(letter.value == sample.value)
        #expect(Array(letter.headers.prefix(sample.headers.count)) == sample.headers, "original headers changed")
        #expect(letter.headers.dropFirst(sample.headers.count).allSatisfy { $0.key.hasPrefix("lead-relay.") })
        #expect(
            deadLetterHeaderNames.isSubset(of: added.keys), "missing \(deadLetterHeaderNames.subtracting(added.keys))")
        #expect(added["lead-relay.error.reason"] == reason)
        #expect(added["lead-relay.error.stage"] == (reason == "schema-violation" ? "validate" : "decode"))
        #expect(added["lead-relay.error.http-status"] == nil, "no API answer for a record that was never posted")
        #expect(added["lead-relay.source.topic"] == Topics.input)
        #expect(Int64(added["lead-relay.source.timestamp"] ?? "") != nil)
        #expect(added["lead-relay.attempts"] == "0")
        #expect(parseRFC3339(added["lead-relay.failed-at"]) != nil)
        #expect(!(added["lead-relay.error.message"] ?? "\n").contains("\n"))
        let details = (added["lead-relay.error.details"]).flatMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [[String: Any]]
        }
        #expect(details?.isEmpty == false && details?.allSatisfy { $0["pointer"] is String } == true)
        if reason == "schema-violation" {
            #expect(details?.contains { $0["pointer"] as? String == "/email" } == true, "\(details ?? [])")
        }
    }
}

private func expectAPIReceivedEachUniqueLeadOnceAsSent(
    _ simulator: SimulatorProcess, samples: [SampleLeads.Record]
) async throws {
    var sentByClassifiedID: [String: Data] = [:]
    for sample in samples where sample.expectation == .submitted {
        sentByClassifiedID[sample.classifiedID ?? ""] = SampleFacts(sample).requestFields
    }
    let stored = try await simulator.storedLeads()
    #expect(stored.count == sentByClassifiedID.count)
    var storedByClassifiedID: [String: [Data]] = [:]
    for body in stored {
        let classifiedID = jsonObject(Array(body))?["classifiedId"] as? String ?? ""
        storedByClassifiedID[classifiedID, default: []].append(body)
    }
    for (classifiedID, sent) in sentByClassifiedID {
        #expect(storedByClassifiedID[classifiedID] == [sent], "the API's copy of \(classifiedID) differs or repeats")
    }
    let stats = try await simulator.stats()
    #expect(stats.duplicateLeadsReceived == 0)
    #expect(stats.violations == 0, "budget violations: \(stats.violationsByKind)")
}

/// The relay's log holds no contact data of the samples and not the API token.
func expectNoPersonalDataOrSecret(in log: String, samples: [SampleLeads.Record], token: String) {
    #expect(!log.isEmpty)
    #expect(!log.contains(token), "the API token appears in the relay's log")
    #expect(!log.contains("@example.com"), "an email address appears in the relay's log")
    #expect(!log.contains("+33 555"), "a phone number appears in the relay's log")
    #expect(!log.contains("I would like to visit"), "a lead's message appears in the relay's log")
    #expect(!log.contains("Seeker "), "a seeker's name appears in the relay's log")
    for line in log.split(separator: "\n") {
        #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) is [String: Any], "not JSON: \(line)")
    }
}

func parseRFC3339(_ text: String?) -> Date? {
    guard let text else { return nil }
    let withFraction = ISO8601DateFormatter()
    withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return withFraction.date(from: text) ?? ISO8601DateFormatter().date(from: text)
}
