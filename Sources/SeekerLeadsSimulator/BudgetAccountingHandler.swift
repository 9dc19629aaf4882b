import HTTPTypes
import HummingbirdCore
import NIOCore

/// The request part Hummingbird's HTTP/1 pipeline carries where additional handlers sit (after
/// HTTP decoding and the conversion to HTTP types).
typealias PipelineRequestPart = HTTPConnectionStateHandler.InboundIn
typealias PipelineResponsePart = HTTPConnectionStateHandler.OutboundIn

extension HTTPField.Name {
    /// When the request head was read, in nanoseconds since the simulator started; set by
    /// `BudgetAccountingHandler` on budgeted API requests only.
    static let simulatorArrival = HTTPField.Name("x-sim-arrival-ns")!
    /// Which part of the budget the request broke (`rate` or `concurrency`), when it did.
    static let simulatorBudgetViolation = HTTPField.Name("x-sim-budget-violation")!
}

/// Counts the API's budget on the server's event loop, at the moment the request head is read:
/// the same physical event the client's budget counts (its head leaving the socket), with no hop
/// onto a task pool in between. A request is in flight from its head being read to its response's
/// head being written: the API has answered it then. Counting on to the response's end part would race
/// the client, which has a Content-Length response in full once the body is flushed, before the end
/// part passes here, and may rightly send its next request meanwhile. The verdict travels to `APIGateMiddleware` in internal request headers, so an
/// over-budget request is still answered 429 by the route layer.
final class BudgetAccountingHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = PipelineRequestPart
    typealias InboundOut = PipelineRequestPart
    typealias OutboundIn = PipelineResponsePart
    typealias OutboundOut = PipelineResponsePart

    private let state: SimulatorState
    /// Bounds how late the counting event loop reads, when this handler's channel is on it.
    private let readDelay: ReadDelayBound?
    /// For each request of this connection not yet answered, in order (HTTP/1 answers in order):
    /// whether it was counted against the budget.
    private var unanswered: [Bool] = []

    init(state: SimulatorState, readDelay: ReadDelayBound?) {
        self.state = state
        self.readDelay = readDelay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var request) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        // Only this handler may say how a request was counted.
        request.headerFields[.simulatorArrival] = nil
        request.headerFields[.simulatorBudgetViolation] = nil
        let budgeted = Self.isBudgeted(request)
        if budgeted {
            let now = ContinuousClock.now
            let arrival = state.admit(readAt: now, earliestArrival: readDelay?.earliestArrival(ofReadAt: now) ?? now)
            request.headerFields[.simulatorArrival] = String(arrival.nanosecondsSinceStart)
            if let violation = arrival.violation {
                request.headerFields[.simulatorBudgetViolation] = violation
            }
        }
        unanswered.append(budgeted)
        context.fireChannelRead(wrapInboundOut(.head(request)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .head(let response) = unwrapOutboundIn(data), response.status.kind != .informational,
            !unanswered.isEmpty, unanswered.removeFirst()
        {
            state.requestEnded()
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        for _ in unanswered.filter({ $0 }) {
            state.requestEnded()
        }
        unanswered.removeAll()
        context.fireChannelInactive()
    }

    /// The API's own routes; the token endpoint and the admin routes are not part of the budget.
    static func isBudgeted(_ request: HTTPRequest) -> Bool {
        let path = request.path.map { $0.prefix { $0 != "?" } } ?? ""
        return path == "/leads" || path.hasPrefix("/leads/") || path == "/webhook/subscriptions"
    }
}
