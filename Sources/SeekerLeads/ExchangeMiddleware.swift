import Foundation
import HTTPTypes
import OpenAPIRuntime
import Synchronization

/// What one HTTP exchange sent and got back, filled in by `ExchangeMiddleware` for the code that
/// classifies the answer (the generated client decodes documented bodies only).
final class ExchangeRecord: Sendable {
    struct Response: Sendable {
        let status: Int
        let retryAfter: String?
        let body: [UInt8]
    }

    let bearerToken: String
    /// The request takes its permit in the middleware, after the body is encoded; the transport
    /// reports the instant the budget counts the start at.
    let budget: any RequestBudget
    /// Asked once the permit is granted, as the last thing before the request goes to the transport (which may wait
    /// up to `BudgetPermit.handOverAhead` for the permit's instant before writing it): false withdraws it.
    let mayWrite: @Sendable () -> Bool
    private let recordedResponse = Mutex<Response?>(nil)
    private let permit = Mutex<BudgetPermit?>(nil)
    private let isHeadWritten = Mutex(false)

    init(bearerToken: String, budget: any RequestBudget, mayWrite: @escaping @Sendable () -> Bool) {
        self.bearerToken = bearerToken
        self.budget = budget
        self.mayWrite = mayWrite
    }

    /// When the budget let the request go, once it did.
    var grantedAt: ContinuousClock.Instant? { permit.withLock { $0?.grantedAt } }

    func recordGrant(_ granted: BudgetPermit) { permit.withLock { $0 = granted } }

    /// Called by the transport on the event loop once the head is written.
    func headWritten() {
        isHeadWritten.withLock { $0 = true }
    }

    /// Called by the transport with the instant the budget counts the start at: the head's write on a connection
    /// the API has read from before, the answer's arrival on a new one (`ProvenConnections`).
    func startCounted(at instant: ContinuousClock.Instant) {
        guard let granted = permit.withLock({ $0 }) else { return }
        budget.markStarted(granted, at: instant)
    }

    /// Whether the request head reached the socket: from then on, the API may have read the request.
    var wasHeadWritten: Bool { isHeadWritten.withLock { $0 } }

    var response: Response? { recordedResponse.withLock { $0 } }

    func record(_ response: Response) { recordedResponse.withLock { $0 = response } }

    @TaskLocal static var current: ExchangeRecord?
}

/// Adds `Authorization` and `User-Agent` to every request, and keeps the raw answer (status,
/// `Retry-After`, body) in the task's `ExchangeRecord`.
struct ExchangeMiddleware: ClientMiddleware {
    /// Larger answers are cut: problem details are small, and an unbounded body is not worth memory.
    static let maxRecordedBodyBytes = 64 * 1024

    let userAgent: String

    func intercept(
        _ request: HTTPRequest,
        body: HTTPBody?,
        baseURL: URL,
        operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, URL) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        var request = request
        request.headerFields[.userAgent] = userAgent
        let record = ExchangeRecord.current
        if let record {
            request.headerFields[.authorization] = "Bearer \(record.bearerToken)"
        }
        guard let record else { return try await next(request, body, baseURL) }
        let budget = record.budget
        let permit = try await budget.acquire()
        defer { budget.release(permit) }
        guard record.mayWrite() else { throw SubmissionWithdrawn() }
        record.recordGrant(permit)
        let (response, responseBody) = try await next(request, body, baseURL)
        let retryAfter = response.headerFields[.retryAfter]
        if response.status.code == 429 || response.status.code == 503,
            let delay = retryAfter.flatMap({ RetryAfter.delay(fromHeaderValue: $0) })
        {
            // Before this request's permit goes back, so no waiter starts inside the hold.
            record.budget.hold(until: .now.advanced(by: delay))
        }
        var bytes: [UInt8] = []
        if let responseBody {
            for try await chunk in responseBody {
                let room = Self.maxRecordedBodyBytes - bytes.count
                guard room > 0 else { break }
                bytes.append(contentsOf: chunk.prefix(room))
            }
        }
        record.record(
            .init(status: response.status.code, retryAfter: retryAfter, body: bytes)
        )
        return (response, HTTPBody(bytes))
    }
}
