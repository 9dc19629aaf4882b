import Foundation
import HTTPTypes
import Hummingbird
import LeadEvents
import NIOCore

/// The request context: Hummingbird's, plus the channel so a fault can drop the connection.
public struct SimulatorRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// What the API does around a route: answer 429 to requests `BudgetAccountingHandler` found
/// over the budget, inject faults, check the bearer token, check the `POST /leads` body against
/// the contract, and lose the answer to a `POST /leads` that stored its lead (`storeThenFailRate`).
struct APIGateMiddleware: RouterMiddleware {
    typealias Context = SimulatorRequestContext

    let state: SimulatorState

    private struct ProblemBody: Encodable {
        var type = "about:blank"
        var title: String
        var status: Int
        var detail: String
        var instance: String?
        var errors: [Violation]?
    }

    private struct ConnectionDropped: Error {}

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let arrivedAtNanos = request.headers[.simulatorArrival].flatMap({ Int64($0) }) else {
            return try await next(request, context)
        }
        let violation = request.headers[.simulatorBudgetViolation]
        var status: Int?
        defer {
            state.recordAnswer(
                method: request.method.rawValue, path: request.uri.path, arrivedAtNanos: arrivedAtNanos, status: status)
        }
        do {
            let response = try await gate(request, context: context, violation: violation, next: next)
            status = response.status.code
            return response
        } catch is ConnectionDropped {
            throw HTTPError(.internalServerError)
        } catch let error as any HTTPResponseError {
            status = error.status.code
            throw error
        }
    }

    private func gate(
        _ request: Request,
        context: Context,
        violation: String?,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let traceparent = request.headers[.traceparent]
        let faults = state.faults
        if let kind = violation {
            return problem(
                429,
                "over the budget of \(state.options.maxInFlight) concurrent requests and \(state.options.rateLimit) starts per \(state.options.windowMs) ms (\(kind))",
                traceparent: traceparent, retryAfter: faults)
        }
        let latencyMs = faults.latencyMs + (faults.latencyJitterMs > 0 ? Int.random(in: 0...faults.latencyJitterMs) : 0)
        if latencyMs > 0 { try await Task.sleep(for: .milliseconds(latencyMs)) }
        if faults.dropConnectionRate > 0, Double.random(in: 0..<1) < faults.dropConnectionRate {
            try await context.channel.close()
            throw ConnectionDropped()
        }
        if state.takeStorm429(at: .now) {
            return problem(429, "too many requests (injected storm)", traceparent: traceparent, retryAfter: faults)
        }
        for (code, rate) in faults.errorRates.sorted(by: { $0.key < $1.key }) {
            guard let status = Int(code), (400..<600).contains(status), Double.random(in: 0..<1) < rate else {
                continue
            }
            return problem(status, "injected failure", traceparent: traceparent, retryAfter: faults)
        }
        guard request.headers[.userAgent] != nil else {
            return problem(403, "a User-Agent header is required", traceparent: traceparent)
        }
        guard let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer "),
            state.isAuthorized(bearerToken: String(authorization.dropFirst("Bearer ".count)))
        else {
            return problem(401, "missing, invalid or expired access token", traceparent: traceparent)
        }
        guard request.method == .post, request.uri.path == "/leads" else { return try await next(request, context) }
        var request = request
        let body = try await request.collectBody(upTo: state.options.maxBodyBytes + 1)
        let violations = LeadRequestValidator.violations(
            inRequestBody: Array(body.readableBytesView),
            maxBytes: state.options.maxBodyBytes
        )
        guard violations.isEmpty else {
            return problem(
                400, "the request body does not satisfy createLeadRequest", traceparent: traceparent, errors: violations
            )
        }
        let response = try await next(request, context)
        guard response.status == .ok, let lost = state.takeLostAnswer() else { return response }
        switch lost {
        case .badGateway:
            return problem(502, "the lead was stored, then the answer was lost (injected)", traceparent: traceparent)
        case .dropped:
            try await context.channel.close()
            throw ConnectionDropped()
        }
    }

    private func problem(
        _ status: Int,
        _ detail: String,
        traceparent: String?,
        retryAfter faults: SimulatorFaults? = nil,
        errors: [Violation]? = nil
    ) -> Response {
        let body = ProblemBody(
            title: HTTPStatusTitles.title(for: status),
            status: status,
            detail: detail,
            instance: traceparent,
            errors: errors
        )
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        if let faults, status == 429 || status == 503, faults.retryAfterSeconds > 0 {
            headers[.retryAfter] =
                faults.retryAfterAsHTTPDate
                ? HTTPDate.format(Date().addingTimeInterval(TimeInterval(faults.retryAfterSeconds)))
                : String(faults.retryAfterSeconds)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let encoded = (try? encoder.encode(body)) ?? Data()
        return Response(
            status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: encoded)))
    }
}

extension HTTPField.Name {
    static let traceparent = HTTPField.Name("traceparent")!
}

enum HTTPDate {
    /// An IMF-fixdate (RFC 9110), rounded up to the next whole second so it is never early.
    static func format(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.up)))
    }
}
