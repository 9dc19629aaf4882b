import Foundation
import Kafka
import LeadRelayDemo
import SeekerLeadsSimulator
import TestSupport
import Testing

extension EndToEnd {
    /// The consumer stays in its group and a shutdown ends on time, however far behind the relay is.
    @Suite struct Hardening {
        /// An API outage with the circuit open and the pending cap reached: SIGTERM still ends the relay with exit
        /// status 0 within the shutdown timeout plus 2 s, and a successor relays every lead exactly once.
        @Test func sigtermDuringAnOutageWithThePendingCapReachedEndsOnTime() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            try await simulator.startOutage()
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(200, namespace: uniqueName("outage-stop"), seed: 81)
            _ = try await producer.produce(samples)

            let shutdownTimeout = 3
            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_MAX_PENDING_RECORDS"] = "20"
            // Enough failures before the circuit opens for the first poll to fill the pending cap: an open circuit
            // stops fetching.
            environment["LEAD_RELAY_CIRCUIT_THRESHOLD"] = "30"
            environment["LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS"] = String(shutdownTimeout)
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            do {
                try await waitUntil("the circuit to open with leads held", timeout: .seconds(90)) {
                    let metrics = try await relay.metrics()
                    return metrics.value("lead_relay_circuit_open") == 1
                        && metrics.value("lead_relay_records_consumed_total") > 0
                }
            } catch {
                Issue.record("\(error); the relay's log ends with:\n\(relay.process.stderr.suffix(3000))")
                throw error
            }
            relay.process.signal(SIGTERM)
            try await expectExit(of: relay, within: .seconds(shutdownTimeout + 2))

            try await simulator.setFaults(SimulatorFaults())
            let successor = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("every lead stored by the API", timeout: .seconds(120)) {
                try await simulator.stats().leadsStored >= samples.count
            }
            #expect(try await successor.terminate() == .exited(0))
            try await expectEachLeadStoredOnce(samples, by: simulator)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(samples, kafka.bootstrapServers, producer)
            await producer.close()
        }

        /// Every broker gone mid-backlog (the group cannot even be left): SIGTERM still ends the relay with exit
        /// status 0 within the shutdown timeout plus 2 s.
        @Test func sigtermWithEveryBrokerGoneEndsOnTime() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch, arguments: ["--latency-ms", "200"])
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            _ = try await producer.produce(distinctValidLeads(100, namespace: uniqueName("brokers-gone"), seed: 111))
            await producer.close()

            let shutdownTimeout = 3
            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS"] = String(shutdownTimeout)
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("leads flowing", timeout: .seconds(90)) {
                try await simulator.stats().leadsStored >= 5
            }
            kafka.process.signal(SIGKILL)
            #expect(try await kafka.process.waitForExit() == .killed(SIGKILL))
            relay.process.signal(SIGTERM)
            try await expectExit(of: relay, within: .seconds(shutdownTimeout + 2))
        }

        /// Two relays with a backlog that keeps their pending caps full, and a third joining and leaving three
        /// times: every lead is posted once, and after clean stops every partition is committed to its end. The
        /// relays share one dedupe file, as instances on one host do. A second result is published only for records
        /// whose commit the group refused during a rebalance (librdkafka's mock cluster refuses every commit while
        /// an eager rebalance is under way), each counted by the relay that finished it.
        @Test func aThirdRelayJoiningAndLeavingThreeTimesLosesNothingAndPostsNothingTwice() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(
                scratch: scratch, arguments: ["--latency-ms", "20", "--max-in-flight", "10", "--rate-limit", "10"])
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let groupID = uniqueName("relay")
            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: groupID,
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_RATE_LIMIT"] = "3"
            environment["LEAD_RELAY_MAX_IN_FLIGHT"] = "3"
            environment["LEAD_RELAY_MAX_PENDING_RECORDS"] = "20"
            let samples = distinctValidLeads(400, namespace: uniqueName("churn"), seed: 91)
            _ = try await producer.produce(samples)

            async let startedFirst = RelayProcess(environment: environment.variables, scratch: scratch)
            async let startedSecond = RelayProcess(environment: environment.variables, scratch: scratch)
            let (first, second) = try await (startedFirst, startedSecond)
            var relays = [first, second]
            for round in 1...3 {
                let storedBefore = try await simulator.stats().leadsStored
                let third = try await RelayProcess(environment: environment.variables, scratch: scratch)
                relays.append(third)
                try await waitUntil("the third relay relaying (round \(round))", timeout: .seconds(90)) {
                    try await third.metrics().value("lead_relay_outcomes_total") >= 5
                }
                #expect(try await third.terminate() == .exited(0), "round \(round)")
                try await waitUntil("the pair relaying again (round \(round))", timeout: .seconds(90)) {
                    try await simulator.stats().leadsStored >= storedBefore + 20
                }
            }
            try #require(try await simulator.stats().leadsStored < samples.count, "the backlog was gone before the end")
            try await waitUntil("every lead stored by the API", timeout: .seconds(180)) {
                try await simulator.stats().leadsStored >= samples.count
            }
            // One after the other, as a rollout stops them, the second once it is ready again with every partition
            // read to its end and nothing held: a relay stopping while the group rebalances finds its commits refused
            // until the rebalance is over (see the README).
            #expect(try await first.terminate() == .exited(0))
            try await second.waitUntilReady()
            try await waitUntil("the survivor to hold nothing, every partition read", timeout: .seconds(90)) {
                let metrics = try await second.metrics()
                let lag = metrics.series(named: "lead_relay_consumer_lag")
                return lag.count == Int(Topics.partitions[Topics.input] ?? 0) && lag.allSatisfy { $0.value == 0 }
                    && metrics.value("lead_relay_in_process_records") == 0
            }
            #expect(try await second.terminate() == .exited(0))
            try await expectEachLeadStoredOnce(samples, by: simulator)
            let stats = try await simulator.stats()
            #expect(stats.violations == 0, "budget violations: \(stats.violationsByKind)")
            let counted = relays.map { repeatedOutcomesLogged(by: $0) }.reduce(0, +)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(
                samples, kafka.bootstrapServers, producer, repeatsAllowed: counted)
            let behind = try await partitionsNotCommittedToEnd(
                groupID: groupID, topic: Topics.input, bootstrapServers: kafka.bootstrapServers, producer: producer)
            #expect(behind.isEmpty, "partitions not committed to their end: \(behind)")
            await producer.close()
        }

        /// `max.poll.interval.ms` shorter than the time the relay needs for the leads it holds: the consumer keeps
        /// polling while fetching is held, so it is never thrown out of its group and nothing is repeated.
        @Test func aPollIntervalShorterThanTheDrainKeepsTheRelayInItsGroup() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch)
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(120, namespace: uniqueName("poll-interval"), seed: 101)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            // 10 leads per second: the 100 held leads take 10 s, longer than the 7 s poll interval.
            environment["LEAD_RELAY_RATE_LIMIT"] = "2"
            environment["LEAD_RELAY_MAX_IN_FLIGHT"] = "2"
            environment["LEAD_RELAY_MAX_PENDING_RECORDS"] = "100"
            environment["KAFKA_MAX_POLL_INTERVAL_MS"] = "7000"
            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("every lead stored by the API", timeout: .seconds(180)) {
                try await simulator.stats().leadsStored >= samples.count
            }
            #expect(try await relay.terminate() == .exited(0))
            let log = relay.process.stderr
            #expect(!log.contains("\"lost\":\"true\""), "the consumer lost its partitions")
            #expect(!log.contains("maximum poll interval"), "the consumer left its group")
            try await expectEachLeadStoredOnce(samples, by: simulator)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(samples, kafka.bootstrapServers, producer)
            await producer.close()
        }
    }
}

/// The outcomes a relay reported as published but refused a commit (their next owner repeats them), from its log.
func repeatedOutcomesLogged(by relay: RelayProcess) -> Int {
    relay.process.stderr.split(separator: "\n").compactMap { line -> Int? in
        guard line.contains("their next owner repeats"),
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let count = object["count"] as? String
        else { return nil }
        return Int(count)
    }.reduce(0, +)
}

/// The relay ends with exit status 0 within `bound`; otherwise the issue shows the end of its log.
func expectExit(
    of relay: RelayProcess, within bound: Duration, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let termination: ChildProcess.Termination
    do {
        termination = try await relay.process.waitForExit(timeout: bound)
    } catch {
        Issue.record(
            "\(error); the relay's log ends with:\n\(relay.process.stderr.suffix(3000))", sourceLocation: sourceLocation
        )
        return
    }
    #expect(termination == .exited(0), "\(relay.process.stderr.suffix(3000))", sourceLocation: sourceLocation)
}
