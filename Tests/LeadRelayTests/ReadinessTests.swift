import Foundation
import Kafka
import RelayPrimitives
import TestSupport
import Testing

@testable import LeadRelay

/// Each readiness check's reason in each state: words an operator can act on, never a bare "check failed".
@Suite struct ReadinessTests {
    static let servers = "broker-1:9092,broker-2:9092"

    @Test func consumerReasonInEachMembership() async {
        func failure(_ membership: KafkaConsumerMembership, reachable: Bool) async -> String? {
            await Readiness.consumerFailure(membership, bootstrapServers: Self.servers) { reachable }
        }
        #expect(await failure(.member, reachable: true) == nil)
        #expect(await failure(.member, reachable: false) == nil)
        #expect(await failure(.joining, reachable: true) == "joining the consumer group")
        #expect(await failure(.joining, reachable: false) == "no broker reachable at \(Self.servers)")
        #expect(await failure(.assignmentLost, reachable: true) == "assignment lost; rejoining the consumer group")
        #expect(await failure(.assignmentLost, reachable: false) == "no broker reachable at \(Self.servers)")
        #expect(await failure(.left, reachable: true) == "the consumer left its group (shutting down)")
    }

    @Test func producerAndDedupeStoreReasons() {
        #expect(Readiness.producerFailure(brokerReachable: true, bootstrapServers: Self.servers) == nil)
        #expect(
            Readiness.producerFailure(brokerReachable: false, bootstrapServers: Self.servers)
                == "no broker reachable at \(Self.servers)")
        #expect(Readiness.dedupeStoreFailure(healthy: true, path: "a.sqlite") == nil)
        #expect(
            Readiness.dedupeStoreFailure(healthy: false, path: "a.sqlite")
                == "the dedupe store a.sqlite cannot be read and written")
    }

    @Test func probeReasonsReachTheReport() async {
        let readiness = Readiness(flags: [])
        readiness.addProbe(Readiness.consumer) { "joining the consumer group" }
        readiness.addProbe(Readiness.producer) { nil }
        let report = await readiness.evaluate()
        #expect(!report.isReady)
        #expect(report.failingChecks == [Readiness.consumer])
        #expect(report.reasons == [Readiness.consumer: "joining the consumer group"])
        #expect(
            report.json
                == #"{"status":"not_ready","checks":{"consumer":"fail","producer":"pass"},"#
                + #""failing":[{"check":"consumer","reason":"joining the consumer group"}]}"#)
    }

    /// The circuit and credentials flags follow their breakers, with the time the circuit opened.
    @Test func circuitAndCredentialsReasonsFollowTheBreakers() async throws {
        let readiness = Readiness(flags: [])
        let circuit = CircuitBreaker(threshold: 1, backoff: Backoff(base: .seconds(60), max: .seconds(60)))
        let credentials = CircuitBreaker(threshold: 1, backoff: Backoff(base: .seconds(60), max: .seconds(60)))
        let gates = SubmissionGates(
            circuit: circuit, credentials: credentials, maxConcurrentAttempts: 1, metrics: RelayMetrics(),
            readiness: readiness)
        #expect(await readiness.evaluate().passing[Readiness.circuit] == true)
        let following = Task { await gates.followChanges { _ in } }
        defer { following.cancel() }

        circuit.recordTransientFailure(.normal)
        let since = try #require(circuit.openSince)
        let circuitReason = try await waitFor("the circuit to fail readiness", timeout: .seconds(30)) {
            await readiness.evaluate().reasons[Readiness.circuit]
        }
        #expect(circuitReason == Readiness.circuitOpenReason(since: since))
        #expect(circuitReason.hasPrefix("circuit open since \(RFC3339Milliseconds.format(since))"))

        credentials.recordTransientFailure(.normal)
        let credentialsReason = try await waitFor("the credentials to fail readiness", timeout: .seconds(30)) {
            await readiness.evaluate().reasons[Readiness.credentials]
        }
        #expect(credentialsReason == "the API refuses the credentials")

        circuit.recordSuccess()
        credentials.recordSuccess()
        try await waitUntil("both to pass again", timeout: .seconds(30)) { await readiness.evaluate().isReady }
        #expect(circuit.openSince == nil)
    }
}
