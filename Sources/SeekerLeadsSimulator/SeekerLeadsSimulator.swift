import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import OpenAPIHummingbird
import OpenAPIRuntime
import ServiceLifecycle

/// The Seeker Leads API simulator: the generated server stubs over Hummingbird, an OAuth2 token
/// endpoint, and admin routes (`/_sim/...`).
public enum SeekerLeadsSimulator {
    /// The Hummingbird application serving the simulator; run it as a `Service`.
    /// `onRunning` gets the bound port once the server listens. The budget is counted on
    /// `eventLoopGroup`'s loop as request heads are read.
    public static func makeApplication(
        options: SimulatorOptions,
        logger: Logger,
        eventLoopGroup: CountingEventLoopGroup,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> (application: some ApplicationProtocol, controller: SimulatorController) {
        let state = SimulatorState(options: options)
        let router = Router(context: SimulatorRequestContext.self)
        router.add(middleware: APIGateMiddleware(state: state))
        // ErrorHandlingMiddleware: a request the generated code cannot decode (a required query parameter
        // missing, `limit=x`) is a 400, not a 500.
        try SimulatorAPI(state: state).registerHandlers(
            on: router, configuration: .init(jsonEncodingOptions: [.withoutEscapingSlashes]),
            middlewares: [ErrorHandlingMiddleware()])
        addTokenRoute(to: router, state: state)
        addAdminRoutes(to: router, state: state)
        let application = Application(
            router: router,
            server: .http1(
                configuration: .init(additionalChannelHandlers: [
                    BudgetAccountingHandler(state: state, readDelay: eventLoopGroup.readDelay)
                ])),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "seeker-leads-sim"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? options.port) },
            eventLoopGroupProvider: .shared(eventLoopGroup.group),
            logger: logger
        )
        return (application, SimulatorController(state: state))
    }

    /// Starts the simulator in the background (tests, demo, benchmarks), on an event loop of its
    /// own: sharing one with the client under test lets the client's work delay the moment the
    /// simulator reads a request head, and so its budget count (measured: worse than two threads).
    public static func start(options: SimulatorOptions, logger: Logger) async throws -> RunningSimulator {
        let eventLoopGroup = await makeCountingEventLoopGroup(logger: logger)
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let (application, controller) = try makeApplication(
            options: options, logger: logger, eventLoopGroup: eventLoopGroup
        ) { port in
            portContinuation.yield(port)
            portContinuation.finish()
        }
        let group = ServiceGroup(services: [application], gracefulShutdownSignals: [], logger: logger)
        let run = Task {
            defer { portContinuation.finish() }
            try await group.run()
        }
        var iterator = portStream.makeAsyncIterator()
        guard let port = await iterator.next() else {
            defer { Task { try? await eventLoopGroup.shutdownGracefully() } }
            try await run.value
            throw SimulatorStartError()
        }
        return RunningSimulator(
            host: options.host, port: port, controller: controller, group: group, run: run,
            eventLoopGroup: eventLoopGroup)
    }

    private struct TokenRequest: Decodable {
        let client_id: String?
        let client_secret: String?
        let grant_type: String?
        let audience: String?
    }

    private struct TokenResponse: Encodable {
        let access_token: String
        let expires_in: Int
        let token_type = "Bearer"
    }

    private static func addTokenRoute(to router: Router<SimulatorRequestContext>, state: SimulatorState) {
        router.post("/oauth/token") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 16 * 1024)
            guard let tokenRequest = try? JSONDecoder().decode(TokenRequest.self, from: Data(body.readableBytesView))
            else {
                return jsonResponse(400, ["error": "invalid_request"])
            }
            guard tokenRequest.grant_type == "client_credentials" else {
                return jsonResponse(400, ["error": "unsupported_grant_type"])
            }
            switch state.grantToken(clientID: tokenRequest.client_id, clientSecret: tokenRequest.client_secret) {
            case .outage:
                return jsonResponse(503, ["error": "temporarily_unavailable"])
            case .invalidClient:
                return jsonResponse(401, ["error": "invalid_client"])
            case .issued(let token, let expiresIn):
                return jsonResponse(200, TokenResponse(access_token: token, expires_in: expiresIn))
            }
        }
    }

    private static func addAdminRoutes(to router: Router<SimulatorRequestContext>, state: SimulatorState) {
        router.get("/_sim/stats") { _, _ in jsonResponse(200, state.stats) }
        router.get("/_sim/faults") { _, _ in jsonResponse(200, state.faults) }
        router.post("/_sim/faults") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 64 * 1024)
            guard let faults = try? JSONDecoder().decode(SimulatorFaults.self, from: Data(body.readableBytesView))
            else {
                return jsonResponse(400, ["error": "body must be a JSON object of SimulatorFaults fields"])
            }
            state.setFaults(faults)
            return jsonResponse(200, state.faults)
        }
        router.get("/_sim/leads") { _, _ -> Response in
            var json = Data("[".utf8)
            for (index, body) in state.storedLeadBodies.enumerated() {
                if index > 0 { json.append(UInt8(ascii: ",")) }
                json.append(body)
            }
            json.append(UInt8(ascii: "]"))
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
        router.get("/_sim/requests") { _, _ in jsonResponse(200, state.requestLog) }
        router.post("/_sim/erase") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 1024 * 1024)
            guard let erase = try? JSONDecoder().decode(EraseRequest.self, from: Data(body.readableBytesView)),
                (erase.leadIds == nil) == (erase.all == true)
            else {
                return jsonResponse(400, ["error": #"body must be {"leadIds": [...]} or {"all": true}"#])
            }
            return jsonResponse(200, ["erased": state.erase(leadIDs: erase.leadIds)])
        }
    }

    /// `POST /_sim/erase`: GDPR-erase these stored leads, or all of them.
    private struct EraseRequest: Decodable {
        let leadIds: [String]?
        let all: Bool?
    }

    private static func jsonResponse(_ status: Int, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: .init(code: status),
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: body))
        )
    }
}

struct SimulatorStartError: Error, CustomStringConvertible {
    var description: String { "the simulator stopped before it listened" }
}

/// Reads and changes a simulator while it runs.
public struct SimulatorController: Sendable {
    let state: SimulatorState

    public func stats() -> SimulatorStats { state.stats }
    public func faults() -> SimulatorFaults { state.faults }
    public func setFaults(_ faults: SimulatorFaults) { state.setFaults(faults) }
    /// Every stored lead's body (canonical JSON: sorted keys), in arrival order.
    public func storedLeadBodies() -> [Data] { state.storedLeadBodies }
    /// Every API request seen (bounded), in answer order.
    public func requestLog() -> [SimulatorRequestRecord] { state.requestLog }
    /// GDPR-erases the stored leads with these ids (every stored lead when nil); returns the ids erased now.
    @discardableResult public func eraseLeads(ids: [String]?) -> [String] { state.erase(leadIDs: ids) }
}

/// A simulator started with `SeekerLeadsSimulator.start(options:logger:)`.
public final class RunningSimulator: Sendable {
    public let host: String
    public let port: Int
    public let controller: SimulatorController
    private let group: ServiceGroup
    private let run: Task<Void, any Error>
    private let eventLoopGroup: CountingEventLoopGroup

    init(
        host: String,
        port: Int,
        controller: SimulatorController,
        group: ServiceGroup,
        run: Task<Void, any Error>,
        eventLoopGroup: CountingEventLoopGroup
    ) {
        self.host = host
        self.port = port
        self.controller = controller
        self.group = group
        self.run = run
        self.eventLoopGroup = eventLoopGroup
    }

    /// `http://<host>:<port>`: the API's base URL.
    public var baseURL: String { "http://\(host):\(port)" }
    /// The OAuth2 token endpoint.
    public var tokenURL: String { baseURL + "/oauth/token" }

    public func stats() async -> SimulatorStats { controller.stats() }
    public func setFaults(_ faults: SimulatorFaults) async { controller.setFaults(faults) }

    /// Stops the server and waits for it to close.
    public func shutdown() async {
        await group.triggerGracefulShutdown()
        _ = try? await run.value
        try? await eventLoopGroup.shutdownGracefully()
    }
}
