import Foundation
import Kafka
import LeadRelayDemo
import SeekerLeadsSimulator
import TestSupport
import Testing

extension EndToEnd {
    @Suite struct Faults {
        /// 429 storms, 5xx bursts, slow answers and dropped connections, all at once, with a retry
        /// deadline far away: every lead gets through exactly once and nothing is dead-lettered.
        @Test func apiFaultsLoseNothingAndDeadLetterNothingBeforeTheDeadline() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            var faults = SimulatorFaults()
            faults.storm429Requests = 15
            faults.errorRates = ["500": 0.1, "502": 0.05, "503": 0.1]
            faults.latencyMs = 20
            faults.latencyJitterMs = 200
            faults.dropConnectionRate = 0.08
            try await simulator.setFaults(faults)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(90, namespace: uniqueName("faults"), seed: 21)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_RETRY_DEADLINE_SECONDS"] = "600"
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("every lead submitted", timeout: .seconds(120)) {
                let metrics = try await relay.metrics()
                #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "dead_lettered"]) == 0)
                return metrics.value("lead_relay_outcomes_total") >= Double(samples.count)
            }
            let metrics = try await relay.metrics()
            #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "submitted"]) == Double(samples.count))
            #expect(metrics.value("lead_relay_retries_total") > 0)

            let stats = try await simulator.stats()
            for (fault, status) in [("429 storm", "429"), ("5xx burst", "500"), ("dropped connections", "dropped")] {
                #expect(
                    stats.requestsByStatus[status, default: 0] > 0, "no \(fault) happened: \(stats.requestsByStatus)")
            }
            #expect(stats.violations == 0, "budget violations: \(stats.violationsByKind)")
            try await expectEachLeadStoredOnce(samples, by: simulator)
            #expect(try await relay.terminate() == .exited(0))
            expectNoPersonalDataOrSecret(in: relay.process.stderr, samples: samples, token: simulator.token)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(samples, kafka.bootstrapServers, producer)
            await producer.close()
        }

        /// An API that stores a lead and then loses its answer (a 502, or the connection dropped after the body
        /// was read) for a tenth of the posts, and lists a lead only 2 s after storing it: every lead in doubt is
        /// looked up before it is posted again, so each is stored exactly once, and those found say so.
        @Test func leadsWhoseAnswerWasLostAreReconciledAndStoredExactlyOnce() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            var faults = SimulatorFaults()
            faults.storeThenFailRate = 0.1
            faults.storeThenFailDropShare = 0.5
            faults.ingestionDelayMs = 2000
            try await simulator.setFaults(faults)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(300, namespace: uniqueName("lost-answers"), seed: 13)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_RECONCILE_AFTER_SECONDS"] = "3"
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("every lead has an outcome", timeout: .seconds(180)) {
                try await relay.metrics().value("lead_relay_outcomes_total") >= Double(samples.count)
            }
            let metrics = try await relay.metrics()
            let stats = try await simulator.stats()
            let lost = stats.answersLostAfterStoring.values.reduce(0, +)
            #expect(
                stats.answersLostAfterStoring.count == 2, "both kinds of lost answer: \(stats.answersLostAfterStoring)")
            #expect(lost >= 10)
            #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "submitted"]) == Double(samples.count))
            #expect(metrics.value("lead_relay_reconciled_total", ["result": "found"]) == Double(lost))
            #expect(metrics.value("lead_relay_in_doubt_total", ["cause": "ambiguous_answer"]) == Double(lost))
            #expect(metrics.value("lead_relay_api_requests_total", ["route": "list_leads", "code": "200"]) > 0)
            #expect(stats.violations == 0, "budget violations: \(stats.violationsByKind)")
            try await expectEachLeadStoredOnce(samples, by: simulator)
            #expect(try await relay.terminate() == .exited(0))
            expectNoPersonalDataOrSecret(in: relay.process.stderr, samples: samples, token: simulator.token)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(samples, kafka.bootstrapServers, producer)
            let tail = try TopicTail(topics: [Topics.results], bootstrapServers: kafka.bootstrapServers)
            let results = try await tail.recordsBeforeEndMarkers(of: [Topics.results], producer: producer)[
                Topics.results, default: []
            ].compactMap { jsonObject($0.value) }
            await tail.close()
            let reconciled = results.filter { $0["reconciled"] as? Bool == true }
            #expect(reconciled.count == lost)
            #expect(reconciled.allSatisfy { ($0["leadId"] as? String)?.hasPrefix("lead-") == true })
            #expect(reconciled.allSatisfy { $0["requestId"] is NSNull && $0["httpStatus"] is NSNull })
            await producer.close()
        }

        /// An outage longer than the circuit threshold and the retry deadline: the circuit opens, one
        /// probe at a time goes out, nothing is dead-lettered, and the backlog drains on recovery.
        @Test func apiOutageOpensTheCircuitDeadLettersNothingAndDrainsAfterRecovery() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            try await simulator.startOutage()
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(60, namespace: uniqueName("outage"), seed: 31)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            let retryDeadline = Duration.seconds(2)
            environment["LEAD_RELAY_RETRY_DEADLINE_SECONDS"] = "2"
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("the circuit to open", timeout: .seconds(90)) {
                try await relay.metrics().value("lead_relay_circuit_open") == 1
            }
            let openedAt = ContinuousClock.now
            let requestsBeforeOpen = try await simulator.requestLog()
            let circuitOpenedBy = requestsBeforeOpen.map(\.answeredAtNanos).max() ?? 0

            // Keep the API down past the retry deadline, and until the relay has probed a few times.
            try await waitUntil("probes while the circuit is open", timeout: .seconds(60)) {
                let probes = try await simulator.requestLog().filter { $0.arrivedAtNanos > circuitOpenedBy }
                return probes.count >= 3 && ContinuousClock.now - openedAt > retryDeadline * 2
            }
            let duringOutage = try await relay.metrics()
            #expect(duringOutage.value("lead_relay_circuit_open") == 1)
            #expect(duringOutage.value("lead_relay_outcomes_total") == 0)
            let probes = try await simulator.requestLog().filter { $0.arrivedAtNanos > circuitOpenedBy }
            #expect(probes.count <= 40, "\(probes.count) requests while the circuit was open")
            // Requests given their permission before the circuit opened may still be on their way for one budget
            // window or so after it; from then on, the circuit lets one probe out at a time.
            let tailAllowance: Int64 = 1_000_000_000
            let laterProbes = probes.filter { $0.arrivedAtNanos > circuitOpenedBy + tailAllowance }
            #expect(maxOverlap(laterProbes) == 1, "probes while the circuit is open go one at a time")

            try await simulator.setFaults(SimulatorFaults())
            try await waitUntil("the backlog to drain", timeout: .seconds(120)) {
                try await relay.metrics().value("lead_relay_outcomes_total") >= Double(samples.count)
            }
            let afterRecovery = try await relay.metrics()
            #expect(afterRecovery.value("lead_relay_circuit_open") == 0)
            #expect(afterRecovery.value("lead_relay_outcomes_total", ["outcome": "submitted"]) == Double(samples.count))
            let stats = try await simulator.stats()
            #expect(stats.violations == 0, "budget violations: \(stats.violationsByKind)")
            try await expectEachLeadStoredOnce(samples, by: simulator)
            #expect(try await relay.terminate() == .exited(0))
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(samples, kafka.bootstrapServers, producer)
            await producer.close()
        }

        /// `kafka-dev` has no control channel, so this test runs the mock cluster in the test process
        /// (the relay is still a process of its own) and takes a broker down and up while leads flow.
        @Test func brokerDownAndUpDuringProcessingLosesNothing() async throws {
            let scratch = try ScratchDirectory()
            let cluster = try MockCluster(brokers: 3, logger: endToEndLogger)
            defer { cluster.shutdown() }
            for (topic, partitions) in Topics.partitions {
                try cluster.createTopic(topic, partitions: partitions)
            }
            let simulator = try await SimulatorProcess(scratch: scratch, arguments: ["--latency-ms", "30"])
            let producer = try TestProducer(bootstrapServers: cluster.bootstrapServers)
            let samples = distinctValidLeads(90, namespace: uniqueName("broker"), seed: 41)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: cluster.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            // A fifth of the API's budget, so that leads are still flowing when the broker goes down.
            environment["LEAD_RELAY_RATE_LIMIT"] = "2"
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("leads flowing", timeout: .seconds(90)) {
                try await simulator.stats().leadsStored >= 10
            }
            try cluster.setBrokerDown(1)
            let downAt = ContinuousClock.now
            try await waitUntil("a few seconds of broker outage") { ContinuousClock.now - downAt > .seconds(3) }
            let outcomesBeforeRecovery = try await relay.metrics().value("lead_relay_outcomes_total")
            try cluster.setBrokerUp(1)
            try #require(outcomesBeforeRecovery < Double(samples.count), "the outage came too late to matter")

            try await waitUntil("every lead stored by the API", timeout: .seconds(120)) {
                try await simulator.stats().leadsStored >= samples.count
            }
            try await expectEachLeadStoredOnce(samples, by: simulator)
            #expect(try await relay.terminate() == .exited(0))
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(
                samples, cluster.bootstrapServers, producer, rereadsAllowed: true)
            await producer.close()
        }
    }
}

/// The API stored every lead, and at most `extraPostsAllowed` of them more than once.
func expectEachLeadStoredOnce(
    _ samples: [SampleLeads.Record], by simulator: SimulatorProcess, extraPostsAllowed: Int = 0,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let stored = try await simulator.storedCountByClassifiedID()
    let missing = samples.compactMap(\.classifiedID).filter { stored[$0] == nil }
    #expect(missing.isEmpty, "leads lost: \(missing)", sourceLocation: sourceLocation)
    #expect(stored.count == samples.count, sourceLocation: sourceLocation)
    let extraPosts = stored.values.map { $0 - 1 }.reduce(0, +)
    #expect(
        extraPosts <= extraPostsAllowed, "leads posted more than once: \(stored.filter { $0.value > 1 })",
        sourceLocation: sourceLocation)
}

/// Once the relays have stopped: the dead-letter topic holds nothing, and the results topic one
/// SUBMITTED record per lead, and DUPLICATE only for a lead re-read after a rebalance, carrying the
/// submission's requestId. With `rereadsAllowed`, a record re-read after a crash or a lost
/// partition (before its offset was committed) publishes its SUBMITTED result again, with the same
/// requestId; without it, at most `repeatsAllowed` results repeat one. A lead in flight at a crash may have been posted again: at most `repostsAllowed`
/// leads have a second requestId.
func expectOneSubmittedResultPerLeadAndNoDeadLetter(
    _ samples: [SampleLeads.Record], _ bootstrapServers: String, _ producer: TestProducer,
    rereadsAllowed: Bool = false, repostsAllowed: Int = 0, repeatsAllowed: Int = 0,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let tail = try TopicTail(topics: [Topics.results, Topics.deadLetters], bootstrapServers: bootstrapServers)
    let written = try await tail.recordsBeforeEndMarkers(of: [Topics.results, Topics.deadLetters], producer: producer)
    await tail.close()
    #expect(written[Topics.deadLetters, default: []].isEmpty, "dead letters written", sourceLocation: sourceLocation)
    var submittedRequestIDs: [String: [String]] = [:]
    var duplicateRequestIDs: [String: [String]] = [:]
    for result in written[Topics.results, default: []] {
        let value = jsonObject(result.value) ?? [:]
        let classifiedID = value["classifiedId"] as? String ?? ""
        let requestID = value["requestId"] as? String ?? ""
        switch value["status"] as? String {
        case "SUBMITTED": submittedRequestIDs[classifiedID, default: []].append(requestID)
        case "DUPLICATE": duplicateRequestIDs[classifiedID, default: []].append(requestID)
        case let status: Issue.record("a result with status \(status ?? "none")", sourceLocation: sourceLocation)
        }
    }
    let lost = samples.compactMap(\.classifiedID).filter { submittedRequestIDs[$0] == nil }
    #expect(lost.isEmpty, "leads without a SUBMITTED result: \(lost)", sourceLocation: sourceLocation)
    #expect(submittedRequestIDs.count == samples.count, sourceLocation: sourceLocation)
    for (classifiedID, requestIDs) in duplicateRequestIDs {
        let submitted = Set(submittedRequestIDs[classifiedID] ?? [])
        #expect(
            requestIDs.allSatisfy(submitted.contains), "DUPLICATE of \(classifiedID) names no submission",
            sourceLocation: sourceLocation)
    }
    if !rereadsAllowed {
        let repeats = submittedRequestIDs.values.map { $0.count - 1 }.reduce(0, +)
        #expect(
            repeats <= repeatsAllowed, "repeated SUBMITTED: \(submittedRequestIDs.filter { $0.value.count > 1 })",
            sourceLocation: sourceLocation)
    }
    let reposted = submittedRequestIDs.filter { Set($0.value).count > 1 }
    #expect(reposted.count <= repostsAllowed, "posted twice: \(reposted)", sourceLocation: sourceLocation)
}

/// The most requests in flight at once among `requests`.
func maxOverlap(_ requests: [SimulatorRequestRecord]) -> Int {
    struct Change {
        var at: Int64
        var delta: Int
    }
    var changes: [Change] = []
    for request in requests {
        changes.append(Change(at: request.arrivedAtNanos, delta: 1))
        changes.append(Change(at: request.answeredAtNanos, delta: -1))
    }
    // An answer and an arrival at the same instant do not overlap: count the answer first.
    changes.sort { $0.at == $1.at ? $0.delta < $1.delta : $0.at < $1.at }
    var current = 0
    var highest = 0
    for change in changes {
        current += change.delta
        highest = max(highest, current)
    }
    return highest
}
