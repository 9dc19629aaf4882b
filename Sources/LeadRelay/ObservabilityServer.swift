import Foundation
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization

/// The operators' HTTP endpoint, as a service: `GET /health/live`, `GET /health/ready`, `GET /metrics`, and
/// `GET /status` when the relay gives its status.
///
/// It ends on graceful shutdown of its service group; put it first in the group so that it is the last to stop.
public final class ObservabilityServer: Service, Sendable {
    private let host: String
    private let port: Int
    private let readiness: Readiness
    private let registry: PrometheusCollectorRegistry
    private let metrics: RelayMetrics?
    private let status: RelayStatusReporter?
    private let logger: Logger
    private let onRunning: @Sendable (Int) async -> Void
    private let bound = Mutex<Int?>(nil)

    /// `port` 0 lets the system choose; `onRunning` then learns the port (also readable as `boundPort`).
    public init(
        host: String, port: Int, readiness: Readiness, registry: PrometheusCollectorRegistry,
        metrics: RelayMetrics? = nil, status: RelayStatusReporter? = nil, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.readiness = readiness
        self.registry = registry
        self.metrics = metrics
        self.status = status
        self.logger = logger
        self.onRunning = onRunning
    }

    /// The port the server listens on, once it does.
    public var boundPort: Int? { bound.withLock { $0 } }

    public func run() async throws {
        let application = Application(
            router: Self.makeRouter(readiness: readiness, registry: registry, metrics: metrics, status: status),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                self.bound.withLock { $0 = port }
                self.logger.info(
                    "health and metrics endpoint listening", metadata: ["host": "\(self.host)", "port": "\(port)"])
                await self.onRunning(port)
            },
            logger: logger
        )
        try await application.run()
    }

    static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The routes, without a socket: tests drive them with HummingbirdTesting's router client.
    public static func makeRouter(
        readiness: Readiness, registry: PrometheusCollectorRegistry, metrics: RelayMetrics? = nil,
        status: RelayStatusReporter? = nil
    ) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/health/live") { _, _ in
            jsonResponse(.ok, #"{"status":"live"}"#)
        }
        router.get("/health/ready") { _, _ in
            let report = await readiness.evaluate()
            metrics?.setReady(report.isReady)
            return jsonResponse(report.isReady ? .ok : .serviceUnavailable, report.json)
        }
        router.get("/metrics") { _, _ in
            // A scrape also refreshes lead_relay_ready, so that it is current without a readiness poller.
            if let metrics { metrics.setReady(await readiness.evaluate().isReady) }
            status?.refreshGauges()
            return Response(
                status: .ok, headers: [.contentType: metricsContentType],
                body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        if let status {
            router.get("/status") { _, _ in
                jsonResponse(.ok, await status.json())
            }
        }
        return router
    }

    private static func jsonResponse(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

extension ObservabilityServer {
    /// Why the endpoint could not listen on `host:port` (the system's words, e.g. "Address already in use"), or
    /// `nil` when it can. Port 0 (any free port) always can.
    ///
    /// Hummingbird binds its own socket and takes no bound one, so this binds a probe socket the way it will (the
    /// first address `getaddrinfo` gives, as SwiftNIO takes, with `SO_REUSEADDR` as Hummingbird sets by default, which
    /// on Linux still refuses a port another socket listens on) and closes it at once. Called before anything else
    /// starts, it turns a late bind failure, after Kafka and everything else are up, into a clear start-up error;
    /// a port taken in the moment between the probe and the real bind still fails as before.
    public static func bindFailure(host: String, port: Int) -> String? {
        guard port != 0 else { return nil }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &results)
        guard resolved == 0, let address = results else {
            return "cannot resolve the host: " + String(cString: gai_strerror(resolved))
        }
        defer { freeaddrinfo(results) }
        let probe = socket(address.pointee.ai_family, address.pointee.ai_socktype, address.pointee.ai_protocol)
        guard probe >= 0 else { return String(cString: strerror(errno)) }
        defer { close(probe) }
        var reuse: Int32 = 1
        _ = setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        guard bind(probe, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 else {
            return String(cString: strerror(errno))
        }
        return nil
    }
}
