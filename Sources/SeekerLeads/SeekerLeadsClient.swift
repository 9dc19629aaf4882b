import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import OpenAPIRuntime
import RelayPrimitives

/// The Seeker Leads API client: one long-lived HTTP client with a connection pool for the API (and one for the
/// token endpoint), the generated OpenAPI client over it, authentication, the shared rate budget and retries.
public final class SeekerLeadsClient: Sendable {
    public let configuration: SeekerLeadsClientConfiguration
    /// The budget every request of this client goes through.
    public let budget: any RequestBudget
    private let httpClient: HTTPClient
    /// The token endpoint's own pool: the API's pool is used by the budgeted requests alone, so that
    /// `ProvenConnections` knows which of its connections are idle.
    private let tokenHTTPClient: HTTPClient
    private let eventLoopGroup: MultiThreadedEventLoopGroup
    private let api: Client
    private let tokens: AccessTokenProvider
    private let metrics = ClientMetrics()
    private let logger: Logger

    /// `budget` is a `RateBudget` of `configuration.budget` unless given (a budget shared with other processes).
    public init(
        configuration: SeekerLeadsClientConfiguration, budget: (any RequestBudget)? = nil, logger: Logger
    ) throws {
        guard let serverURL = URL(string: configuration.baseURL), serverURL.scheme != nil, serverURL.host != nil else {
            throw SeekerLeadsConfigurationError(description: "SEEKER_LEADS_BASE_URL is not an absolute URL")
        }
        let timeout = TimeAmount.nanoseconds(configuration.timeout.nanosecondsValue)
        var httpConfiguration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: timeout, read: timeout),
            connectionPool: .init(
                idleTimeout: .seconds(60),
                // One kept-alive connection per request that may be outstanding, so the budget's
                // starts never wait for a TCP connect.
                concurrentHTTP1ConnectionsPerHostSoftLimit: max(8, configuration.budget.maxInFlight + 2)
            ),
            decompression: .disabled
        )
        httpConfiguration.httpVersion = .http1Only
        // One event loop of its own: every connection's writes and their reports to the budget then
        // happen on one thread, with no hop between the write and the report, and no other part of
        // the process (a server sharing the singleton group) can delay them.
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let httpClient = HTTPClient(eventLoopGroupProvider: .shared(eventLoopGroup), configuration: httpConfiguration)
        let tokenHTTPClient = HTTPClient(
            eventLoopGroupProvider: .shared(eventLoopGroup), configuration: httpConfiguration)
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.httpClient = httpClient
        self.tokenHTTPClient = tokenHTTPClient
        self.budget = budget ?? RateBudget(configuration: configuration.budget)
        self.logger = logger
        self.api = Client(
            serverURL: serverURL,
            configuration: .init(jsonEncodingOptions: [.withoutEscapingSlashes]),
            transport: HeadWriteReportingTransport(client: httpClient, timeout: configuration.timeout),
            middlewares: [ExchangeMiddleware(userAgent: configuration.userAgent)]
        )
        self.tokens = AccessTokenProvider(
            authentication: configuration.authentication,
            httpClient: tokenHTTPClient,
            timeout: configuration.timeout,
            userAgent: configuration.userAgent,
            logger: logger
        )
    }

    /// What the client knows of the API now: its budget, its credentials, and its answers to `POST /leads` so far.
    public func status() async -> SeekerLeadsClientStatus {
        let (method, expiresAt) = await tokens.status()
        return SeekerLeadsClientStatus(
            budget: budget.snapshot(), authentication: method, tokenExpiresAt: expiresAt,
            answersByCode: metrics.answersByCode)
    }

    /// One attempt: through the budget; a 401 triggers one token refresh and one retry inside this call.
    /// `requestBody` is the `createLeadRequest` JSON; only the fields the schema defines are sent.
    /// Withdrawn (`SubmissionWithdrawn`, nothing sent) when `mayWrite` says no once the budget granted the attempt.
    public func submitLead(
        requestBody: [UInt8], traceparent: String?, mayWrite: @escaping @Sendable () -> Bool = { true }
    ) async throws(SubmissionWithdrawn) -> SubmissionAttemptOutcome {
        let lead: Components.Schemas.createLeadRequest
        do {
            lead = try JSONDecoder().decode(Components.Schemas.createLeadRequest.self, from: Data(requestBody))
        } catch {
            return Self.undecodableLead(error)
        }
        let token: String
        do {
            token = try await tokens.token()
        } catch {
            return Self.outcome(of: error)
        }
        let first = try await send(lead, traceparent: traceparent, token: token, mayWrite: mayWrite)
        guard first.status == 401, tokens.canRefresh else { return first.outcome }
        logger.info("API answered 401; refreshing the access token once")
        let refreshed: String
        do {
            refreshed = try await tokens.token(replacing: token)
        } catch {
            return Self.outcome(of: error)
        }
        return try await send(lead, traceparent: traceparent, token: refreshed, mayWrite: mayWrite).outcome
    }

    /// Retries transient outcomes with back-off (at least the `Retry-After` when there is one) until
    /// `deadline` (nil: no deadline). `beforeAttempt` may gate or cancel attempts by throwing;
    /// `afterAttempt` observes every attempt. `mayWrite` is asked when an attempt's budget permit is granted, just
    /// before its request goes out: false ends the submission with `SubmissionWithdrawn`, nothing sent.
    public func submitLeadRetrying(
        requestBody: [UInt8],
        traceparent: String?,
        deadline: ContinuousClock.Instant?,
        beforeAttempt: @Sendable () async throws -> Void = {},
        mayWrite: @escaping @Sendable () -> Bool = { true },
        afterAttempt: @Sendable (SubmissionAttemptOutcome) async -> Void = { _ in }
    ) async throws -> (outcome: SubmissionAttemptOutcome, attempts: Int) {
        var attempts = 0
        while true {
            try Task.checkCancellation()
            try await beforeAttempt()
            let outcome = try await submitLead(requestBody: requestBody, traceparent: traceparent, mayWrite: mayWrite)
            attempts += 1
            await afterAttempt(outcome)
            guard case .transient(_, _, let retryAfter, _) = outcome else { return (outcome, attempts) }
            let delay = max(retryAfter ?? .zero, configuration.retry.jitteredDelay(afterAttempt: attempts))
            let nextAttemptAt = ContinuousClock.now.advanced(by: delay)
            if let deadline, nextAttemptAt > deadline { return (outcome, attempts) }
            metrics.retries.increment()
            try await Task.sleep(until: nextAttemptAt, clock: .continuous)
        }
    }

    /// Every lead the API ingested from `from` to `to` (widened outward to whole seconds, and to at most the
    /// 7 days one listing may span, the latest ones kept), read page by page: each page is one request through the
    /// budget. Throws `ReadBackFailed` when a page gets no 200.
    public func listLeads(ingestedFrom from: Date, to: Date) async throws -> [ListedLead] {
        let maxDate = Int64(to.timeIntervalSince1970.rounded(.up))
        let minDate = max(Int64(from.timeIntervalSince1970.rounded(.down)), maxDate - Self.longestListing)
        var leads: [ListedLead] = []
        var cursor: String?
        while true {
            let page = try await listingPage(minDate: minDate, maxDate: maxDate, after: cursor)
            let items = page.items ?? []
            leads += items.map(ListedLead.init)
            guard page.links?.next != nil, let last = items.last else { return leads }
            cursor = last.metadata.leadId
        }
    }

    /// 7 days, in seconds: the longest span of one `GET /leads`.
    static let longestListing: Int64 = 7 * 24 * 3600

    private func listingPage(minDate: Int64, maxDate: Int64, after cursor: String?) async throws
        -> Components.Schemas.paginatedResultSet
    {
        var token = try await tokens.token()
        var refreshed = false
        while true {
            let record = ExchangeRecord(bearerToken: token, budget: budget, mayWrite: { true })
            let input = Operations.listLeads.Input(
                query: .init(minDate: minDate, maxDate: maxDate, limit: 100, start: cursor))
            let output: Operations.listLeads.Output
            do {
                output = try await ExchangeRecord.$current.withValue(record) { try await api.listLeads(input) }
            } catch {
                let transport = TransportFailure(error)
                metrics.countRequest(.listLeads, code: transport.code)
                throw ReadBackFailed(description: "GET /leads got no answer: \(transport.description)")
            }
            let status = record.response?.status ?? 0
            metrics.countRequest(.listLeads, code: String(status))
            switch output {
            case .ok(let ok):
                return try ok.body.json
            case .unauthorized where !refreshed && tokens.canRefresh:
                token = try await tokens.token(replacing: token)
                refreshed = true
            default:
                throw ReadBackFailed(description: "GET /leads answered HTTP \(status)")
            }
        }
    }

    /// Obtains (or refreshes) an access token; true for a static token. For readiness checks.
    public func checkCredentials() async -> Bool {
        do {
            _ = try await tokens.token()
            return true
        } catch {
            logger.warning("access token unavailable", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Closes the connection pools. Call once, after the last request.
    public func shutdown() async throws {
        try await httpClient.shutdown()
        try await tokenHTTPClient.shutdown()
        try await eventLoopGroup.shutdownGracefully()
    }

    // MARK: - One exchange

    private struct Exchange {
        let status: Int?
        let outcome: SubmissionAttemptOutcome
    }

    private func send(
        _ lead: Components.Schemas.createLeadRequest, traceparent: String?, token: String,
        mayWrite: @escaping @Sendable () -> Bool
    ) async throws(SubmissionWithdrawn) -> Exchange {
        metrics.requestStarted()
        defer { metrics.requestEnded() }
        let record = ExchangeRecord(bearerToken: token, budget: budget, mayWrite: mayWrite)
        let input = Operations.createLead.Input(headers: .init(traceparent: traceparent), body: .json(lead))
        let output: Operations.createLead.Output?
        let failure: (any Error)?
        do {
            output = try await ExchangeRecord.$current.withValue(record) { try await api.createLead(input) }
            failure = nil
        } catch {
            if let withdrawn = Self.withdrawal(in: error) { throw withdrawn }
            output = nil
            failure = error
        }
        let elapsed = ContinuousClock.now - (record.grantedAt ?? .now)
        metrics.requestDuration.recordNanoseconds(elapsed.nanosecondsValue)

        guard let response = record.response else {
            let transport = TransportFailure(failure ?? CancellationError())
            metrics.countRequest(.createLead, code: transport.code)
            logger.debug(
                "API request got no answer",
                metadata: ["code": "\(transport.code)", "error": "\(transport.description)"])
            return Exchange(
                status: nil,
                outcome: .transient(
                    httpStatus: nil, description: transport.description, retryAfter: nil,
                    inDoubt: InDoubt.isInDoubt(noAnswerAfterHeadWritten: record.wasHeadWritten)))
        }
        metrics.countRequest(.createLead, code: String(response.status))
        logger.debug(
            "API answered",
            metadata: ["http_status": "\(response.status)", "elapsed_ms": "\(elapsed.nanosecondsValue / 1_000_000)"]
        )
        return Exchange(status: response.status, outcome: classify(response, decoded: output))
    }

    private func classify(_ response: ExchangeRecord.Response, decoded: Operations.createLead.Output?)
        -> SubmissionAttemptOutcome
    {
        let status = response.status
        switch status {
        case 200..<300:
            if case .ok(let ok)? = decoded, case .json(let body) = ok.body {
                return .accepted(requestId: body.requestId ?? "", title: body.title ?? "", httpStatus: status)
            }
            let body = try? JSONDecoder().decode(Components.Schemas.createLeadResponse.self, from: Data(response.body))
            return .accepted(requestId: body?.requestId ?? "", title: body?.title ?? "", httpStatus: status)
        case 401, 403:
            return .authenticationFailed(httpStatus: status)
        case _ where HTTPStatusClass.isTransient(status):
            let retryAfter = response.retryAfter.flatMap { RetryAfter.delay(fromHeaderValue: $0) }
            if let retryAfter, status == 429 || status == 503 {
                logger.info(
                    "API asked to wait; holding the rate budget",
                    metadata: [
                        "http_status": "\(status)", "retry_after_ms": "\(retryAfter.nanosecondsValue / 1_000_000)",
                    ])
            }
            return .transient(
                httpStatus: status, description: "HTTP \(status)", retryAfter: retryAfter,
                inDoubt: InDoubt.isInDoubt(httpStatus: status))
        default:
            return Self.rejection(status: status, body: response.body)
        }
    }

    static func rejection(status: Int, body: [UInt8]) -> SubmissionAttemptOutcome {
        let rawBody = String(decoding: body, as: UTF8.self)
        let isJSONObject = (try? JSONSerialization.jsonObject(with: Data(body))) is [String: Any]
        let problem = isJSONObject ? try? JSONDecoder().decode(ProblemDetails.self, from: Data(body)) : nil
        let detailsJSON = problem != nil ? rawBody : JSONString.quoted(rawBody)
        return .rejected(httpStatus: status, problem: problem, rawBody: rawBody, detailsJSON: detailsJSON)
    }

    private static func undecodableLead(_ error: any Error) -> SubmissionAttemptOutcome {
        // Name the field, never its value: decoding errors may quote personal data.
        var path = ""
        if let decodingError = error as? DecodingError {
            switch decodingError {
            case .keyNotFound(let key, let context):
                path = (context.codingPath + [key]).map(\.stringValue).joined(separator: "/")
            case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
                path = context.codingPath.map(\.stringValue).joined(separator: "/")
            @unknown default: path = ""
            }
        }
        let problem = ProblemDetails(
            title: "Request body does not match createLeadRequest",
            detail: "not sent: the value at /\(path) does not decode"
        )
        let json = (try? JSONEncoder().encode(problem)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return .rejected(httpStatus: 0, problem: problem, rawBody: "", detailsJSON: json)
    }

    private static func outcome(of tokenError: any Error) -> SubmissionAttemptOutcome {
        switch tokenError as? AccessTokenError {
        case .refused(let status)?:
            return .authenticationFailed(httpStatus: status)
        case .unavailable(let status, _)?:
            return .transient(httpStatus: status, description: "\(tokenError)", retryAfter: nil, inDoubt: false)
        case nil:
            return .transient(
                httpStatus: nil, description: "access token unavailable", retryAfter: nil, inDoubt: false)
        }
    }
}

extension SeekerLeadsClient {
    /// The generated client wraps a middleware's error in its own.
    fileprivate static func withdrawal(in error: any Error) -> SubmissionWithdrawn? {
        if let withdrawn = error as? SubmissionWithdrawn { return withdrawn }
        return ((error as? ClientError)?.underlyingError).flatMap { $0 as? SubmissionWithdrawn }
    }
}

/// A lead as `GET /leads` lists it: its id and what identifies the request that made it. The contact fields are
/// nil for a lead whose contact data was erased (GDPR).
public struct ListedLead: Sendable, Equatable {
    public var leadId: String
    public var classifiedId: String?
    public var email: String?
    public var firstName: String?
    public var lastName: String?
    public var message: String?

    public init(
        leadId: String, classifiedId: String?, email: String?, firstName: String?, lastName: String?, message: String?
    ) {
        self.leadId = leadId
        self.classifiedId = classifiedId
        self.email = email
        self.firstName = firstName
        self.lastName = lastName
        self.message = message
    }

    init(_ lead: Components.Schemas.classifiedLead) {
        self.init(
            leadId: lead.metadata.leadId, classifiedId: lead.property.classifiedId, email: lead.contactRequest.email,
            firstName: lead.contactRequest.firstName, lastName: lead.contactRequest.lastName,
            message: lead.contactRequest.message)
    }
}

/// A listing of the API's leads that did not complete; nothing about the leads is in it.
public struct ReadBackFailed: Error, CustomStringConvertible {
    public let description: String
}

/// An attempt whose write condition said no once the budget granted it: nothing was sent.
public struct SubmissionWithdrawn: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the attempt was withdrawn before it was sent" }
}

/// The configuration cannot produce a working client.
public struct SeekerLeadsConfigurationError: Error, CustomStringConvertible {
    public let description: String
}

/// `SeekerLeadsClient.status()`.
public struct SeekerLeadsClientStatus: Sendable {
    public var budget: BudgetSnapshot
    /// `static-token` or `client-credentials`.
    public var authentication: String
    /// The held client-credentials token's expiry; nil before the first token and for a static one.
    public var tokenExpiresAt: Date?
    public var answersByCode: [String: APIAnswerTally]
}
