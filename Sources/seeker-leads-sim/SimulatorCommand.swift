import ArgumentParser
import Foundation
import Logging
import SeekerLeadsSimulator
import ServiceLifecycle

@main
struct SimulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seeker-leads-sim",
        abstract: "Serves a simulator of the Seeker Leads API: budget enforcement, OAuth2 tokens, fault injection."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one.") var port = 8081
    @Option(help: "OAuth2 client id accepted by POST /oauth/token.") var clientId = "lead-relay"
    @Option(help: "OAuth2 client secret accepted by POST /oauth/token.") var clientSecret = "dev-secret"
    @Option(help: "A static bearer token always accepted.") var token = "dev-token"
    @Option(help: "expires_in of issued tokens, in seconds.") var tokenTtl = 86_400
    @Option(help: "Requests in flight allowed before a 429 violation.") var maxInFlight = 10
    @Option(help: "Request starts allowed per window before a 429 violation.") var rateLimit = 10
    @Option(help: "The budget's sliding window, in milliseconds.") var windowMs = 200
    @Option(help: "Added latency, in milliseconds.") var latencyMs = 0
    @Option(help: "Random extra latency 0...N ms.") var latencyJitterMs = 0
    @Option(help: "Error rates per status code as JSON, e.g. '{\"500\":0.2,\"503\":0.1}'.") var errorRates = "{}"
    @Option(help: "Answer the next N API requests with 429.") var storm429Requests = 0
    @Option(help: "Answer API requests with 429 for this many seconds from start.") var storm429Seconds = 0.0
    @Option(help: "Retry-After seconds on injected 429/503 (0: none).") var retryAfterSeconds = 1
    @Flag(help: "Send Retry-After as an HTTP-date.") var retryAfterHttpDate = false
    @Option(help: "Probability of closing the connection without answering.") var dropConnectionRate = 0.0
    @Flag(help: "The token endpoint answers 503.") var tokenOutage = false
    @Option(help: "Probability that POST /leads stores the lead, then loses the answer (502 or dropped connection).")
    var storeThenFailRate = 0.0
    @Option(help: "Share of those lost answers that are dropped connections (the rest: 502), alternating.")
    var storeThenFailDropShare = 0.5
    @Option(help: "A stored lead becomes visible to GET /leads only this many milliseconds after it was stored.")
    var ingestionDelayMs = 0
    @Option(help: "Probability that a lead is GDPR-erased as it is stored (GET shows no contact data).")
    var erasedLeadRate = 0.0
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).") var logLevel = "info"
    @Flag(
        inversion: .prefixedNo,
        help: "Read requests, and count the budget, on a real-time thread where the system allows it.")
    var realtimeCounting = true

    func run() async throws {
        guard let rates = try? JSONDecoder().decode([String: Double].self, from: Data(errorRates.utf8)) else {
            throw ValidationError("--error-rates must be a JSON object of status code to probability")
        }
        var faults = SimulatorFaults()
        faults.latencyMs = latencyMs
        faults.latencyJitterMs = latencyJitterMs
        faults.errorRates = rates
        faults.storm429Requests = storm429Requests
        faults.storm429Seconds = storm429Seconds
        faults.retryAfterSeconds = retryAfterSeconds
        faults.retryAfterAsHTTPDate = retryAfterHttpDate
        faults.dropConnectionRate = dropConnectionRate
        faults.tokenEndpointOutage = tokenOutage
        faults.storeThenFailRate = storeThenFailRate
        faults.storeThenFailDropShare = storeThenFailDropShare
        faults.ingestionDelayMs = ingestionDelayMs
        faults.erasedLeadRate = erasedLeadRate

        var options = SimulatorOptions()
        options.host = host
        options.port = port
        options.clientID = clientId
        options.clientSecret = clientSecret
        options.staticToken = token
        options.tokenTTLSeconds = tokenTtl
        options.maxInFlight = maxInFlight
        options.rateLimit = rateLimit
        options.windowMs = windowMs
        options.faults = faults

        var logger = Logger(label: "seeker-leads-sim") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let announcedHost = host
        let eventLoopGroup = await SeekerLeadsSimulator.makeCountingEventLoopGroup(
            realtime: realtimeCounting, logger: logger)
        let (application, _) = try SeekerLeadsSimulator.makeApplication(
            options: options, logger: logger, eventLoopGroup: eventLoopGroup
        ) { boundPort in
            // The one line on stdout: tests and scripts read the base URL from it.
            FileHandle.standardOutput.write(Data("SEEKER_LEADS_BASE_URL=http://\(announcedHost):\(boundPort)\n".utf8))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: application)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
        try await eventLoopGroup.shutdownGracefully()
    }
}
