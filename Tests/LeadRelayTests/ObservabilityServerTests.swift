import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Prometheus
import ServiceLifecycle
import TestSupport
import Testing

@testable import LeadRelay

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite struct ObservabilityServerTests {
    private func application(_ readiness: Readiness, _ registry: PrometheusCollectorRegistry, _ metrics: RelayMetrics?)
        -> some ApplicationProtocol
    {
        Application(router: ObservabilityServer.makeRouter(readiness: readiness, registry: registry, metrics: metrics))
    }

    private func jsonObject(_ buffer: ByteBuffer) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any])
    }

    @Test func liveness() async throws {
        try await application(Readiness(), PrometheusCollectorRegistry(), nil).test(.router) { client in
            try await client.execute(uri: "/health/live", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                let body = try jsonObject(response.body)
                #expect(body["status"] as? String == "live")
            }
        }
    }

    @Test func readinessNamesEachFailingCheck() async throws {
        let readiness = Readiness()
        let storeHealthy = Locked(false)
        readiness.addProbe(Readiness.dedupeStore) {
            Readiness.dedupeStoreFailure(healthy: storeHealthy.value, path: "relay.sqlite")
        }
        readiness.set(Readiness.consumer, passing: true)
        readiness.set(Readiness.credentials, passing: false, reason: "authentication failed (401)")
        let registry = PrometheusCollectorRegistry()
        let metrics = RelayMetrics(factory: RelayMetricsFactory(registry: registry))
        try await application(readiness, registry, metrics).test(.router) { client in
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try jsonObject(response.body)
                #expect(body["status"] as? String == "not_ready")
                let failing = try #require(body["failing"] as? [[String: String]])
                #expect(failing.map { $0["check"] } == ["credentials", "dedupe_store", "producer"])
                #expect(failing.first?["reason"] == "authentication failed (401)")
                #expect(
                    failing.dropFirst().first?["reason"] == "the dedupe store relay.sqlite cannot be read and written")
                let checks = try #require(body["checks"] as? [String: String])
                #expect(checks["consumer"] == "pass")
            }
            readiness.set(Readiness.producer, passing: true)
            readiness.set(Readiness.credentials, passing: true)
            storeHealthy.value = true
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .ok)
                let body = try jsonObject(response.body)
                #expect(body["status"] as? String == "ready")
            }
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
                let text = String(buffer: response.body)
                #expect(text.contains("lead_relay_ready 1"))
                #expect(text.contains("lead_relay_outcomes_total{outcome=\"duplicate\"} 0"))
            }
        }
    }

    @Test func servesOnAFreePortUntilGracefulShutdown() async throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = RelayMetrics(factory: RelayMetricsFactory(registry: registry))
        let server = ObservabilityServer(
            host: "127.0.0.1", port: 0, readiness: Readiness(flags: []), registry: registry, metrics: metrics,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let group = ServiceGroup(
            services: [server], gracefulShutdownSignals: [],
            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let running = Task { try await group.run() }
        try await waitUntil { server.boundPort != nil }
        let port = try #require(server.boundPort)
        #expect(port > 0)

        let base = "http://127.0.0.1:\(port)"
        let (readyBody, readyResponse) = try await URLSession.shared.data(
            from: try #require(URL(string: base + "/health/ready")))
        #expect((readyResponse as? HTTPURLResponse)?.statusCode == 200)
        #expect(String(decoding: readyBody, as: UTF8.self).contains("\"ready\""))
        let (metricsBody, _) = try await URLSession.shared.data(from: try #require(URL(string: base + "/metrics")))
        let exposition = String(decoding: metricsBody, as: UTF8.self)
        #expect(exposition.contains("lead_relay_records_consumed_total 0"))
        if let promtoolPath {
            let result = try promtoolCheck(exposition, promtool: promtoolPath)
            #expect(result.status == 0, "promtool: \(result.output)")
        }

        await group.triggerGracefulShutdown()
        try await running.value
    }
}
