import Foundation
import Kafka
import LeadRelayDemo
import SeekerLeadsSimulator
import TestSupport
import Testing

extension EndToEnd {
    @Suite struct Restarts {
        /// SIGTERM while slow answers keep leads in flight: the relay finishes them, commits, exits 0;
        /// its successor neither loses nor re-posts a lead.
        @Test func sigtermWithLeadsInFlightThenRestartLosesNothingAndPostsNothingTwice() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch, arguments: ["--latency-ms", "1000"])
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(40, namespace: uniqueName("sigterm"), seed: 51)
            _ = try await producer.produce(samples)

            let environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            let first = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("leads flowing", timeout: .seconds(90)) {
                try await simulator.stats().leadsStored >= 5
            }
            let inFlight = try await first.metrics().value("lead_relay_api_in_flight")
            let storedAtSignal = try await simulator.stats().leadsStored
            #expect(try await first.terminate() == .exited(0))
            try #require(inFlight > 0 && storedAtSignal < samples.count, "nothing was in flight at SIGTERM")
            // The answers to the requests in flight arrived before the relay exited: they were stored.
            #expect(try await simulator.stats().leadsStored > storedAtSignal)

            let second = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("every lead stored by the API", timeout: .seconds(120)) {
                try await simulator.stats().leadsStored >= samples.count
            }
            #expect(try await second.terminate() == .exited(0))
            try await expectEachLeadStoredOnce(samples, by: simulator)
            #expect(try await simulator.stats().duplicateLeadsReceived == 0)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(samples, kafka.bootstrapServers, producer)
            await producer.close()
        }

        /// SIGKILL during a backlog with requests in flight: the successor finds their attempts begun and
        /// unfinished, looks those leads up in the API's listing before posting them, and posts every lead the
        /// first did not finish: each is stored exactly once.
        @Test func sigkillDuringBacklogThenRestartLosesNothingAndPostsNothingTwice() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(scratch: scratch, arguments: ["--latency-ms", "300"])
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(60, namespace: uniqueName("sigkill"), seed: 61)
            _ = try await producer.produce(samples)

            let maxInFlight = 5
            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_MAX_IN_FLIGHT"] = String(maxInFlight)
            let first = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("leads flowing", timeout: .seconds(90)) {
                try await simulator.stats().leadsStored >= 10
            }
            first.process.signal(SIGKILL)
            #expect(try await first.process.waitForExit() == .killed(SIGKILL))
            try #require(try await simulator.stats().leadsStored < samples.count, "the backlog was gone at the kill")

            let second = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("every lead stored by the API", timeout: .seconds(120)) {
                try await simulator.storedCountByClassifiedID().count >= samples.count
            }
            let inDoubt = try await second.metrics().value("lead_relay_in_doubt_total", ["cause": "unfinished_attempt"])
            #expect(inDoubt >= 1, "no attempt the kill cut short was found unfinished")
            #expect(try await second.terminate() == .exited(0))
            try await expectEachLeadStoredOnce(samples, by: simulator)
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(
                samples, kafka.bootstrapServers, producer, rereadsAllowed: true)
            await producer.close()
        }

        /// Two relays share the group and the API's budget half each; one stops midway and the
        /// other takes over its partitions.
        @Test func twoRelaysInOneGroupOneStoppedMidwayLoseNothingAndStayWithinTheBudget() async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let simulator = try await SimulatorProcess(
                scratch: scratch, arguments: ["--latency-ms", "100", "--max-in-flight", "10", "--rate-limit", "10"])
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let groupID = uniqueName("relay")
            func environment(_ name: String) -> [String: String] {
                var environment = RelayEnvironment(
                    kafka: kafka.bootstrapServers, simulator: simulator, groupID: groupID,
                    dedupeDatabase: scratch.path("\(name).sqlite"))
                environment["LEAD_RELAY_RATE_LIMIT"] = "5"
                environment["LEAD_RELAY_MAX_IN_FLIGHT"] = "5"
                // Few records held per relay, so that partitions moving between them carry work along.
                environment["LEAD_RELAY_MAX_PENDING_RECORDS"] = "10"
                return environment.variables
            }
            async let startedFirst = RelayProcess(environment: environment("first"), scratch: scratch)
            async let startedSecond = RelayProcess(environment: environment("second"), scratch: scratch)
            let (first, second) = try await (startedFirst, startedSecond)
            try await first.waitUntilReady()
            try await second.waitUntilReady()
            let samples = distinctValidLeads(150, namespace: uniqueName("pair"), seed: 71)
            _ = try await producer.produce(samples)

            try await waitUntil("both relays relaying", timeout: .seconds(90)) {
                let firstConsumed = try await first.metrics().value("lead_relay_records_consumed_total")
                let secondConsumed = try await second.metrics().value("lead_relay_records_consumed_total")
                let stored = try await simulator.stats().leadsStored
                return firstConsumed > 0 && secondConsumed > 0 && stored >= 40
            }
            #expect(try await first.terminate() == .exited(0))
            try #require(try await simulator.stats().leadsStored < samples.count, "no work was left after the stop")

            try await waitUntil("every lead stored by the API", timeout: .seconds(120)) {
                try await simulator.stats().leadsStored >= samples.count
            }
            #expect(try await second.terminate() == .exited(0))
            try await expectEachLeadStoredOnce(samples, by: simulator)
            let stats = try await simulator.stats()
            #expect(stats.violations == 0, "budget violations: \(stats.violationsByKind)")
            // The mock cluster may take the remaining relay's partitions away as lost while the group
            // rebalances (its commits then fail), so it can re-read records it had finished.
            try await expectOneSubmittedResultPerLeadAndNoDeadLetter(
                samples, kafka.bootstrapServers, producer, rereadsAllowed: true)
            await producer.close()
        }
    }
}
