import AsyncHTTPClient
import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import OpenAPIRuntime
import RelayPrimitives
import Synchronization

/// An OpenAPI transport over AsyncHTTPClient's delegate API.
///
/// It exists because the rate budget must count a start when the API does, at the moment the
/// request's bytes leave, and the stock `AsyncHTTPClientTransport` (over the async `execute`)
/// cannot say when that is: a new connection, the hop onto the event loop and scheduling put
/// milliseconds between handing the request over and the write, far more than the budget's margin.
/// The delegate's `didSendRequestHead` runs on the event loop right after the head is flushed. A request
/// written on a new connection is counted when its answer's head arrives instead (`ProvenConnections`).
///
/// Bodies are small JSON documents both ways: the request body is collected before sending and the
/// response body is collected in full (up to `maxResponseBodyBytes`) before returning.
struct HeadWriteReportingTransport: ClientTransport {
    static let maxRequestBodyBytes = 1 << 20
    static let maxResponseBodyBytes = 4 << 20

    let client: HTTPClient
    /// The deadline of one exchange, from the call to the last response byte.
    let timeout: Duration
    /// The connections of `client`'s pool that have carried an exchange; no other code may use that pool.
    let connections = ProvenConnections()

    struct InvalidRequestURL: Error, CustomStringConvertible {
        var description: String { "the request path does not form a valid URL with the base URL" }
    }

    struct ResponseBodyTooLarge: Error, CustomStringConvertible {
        var description: String {
            "the response body exceeds \(HeadWriteReportingTransport.maxResponseBodyBytes) bytes"
        }
    }

    func send(_ request: HTTPRequest, body: HTTPBody?, baseURL: URL, operationID: String) async throws -> (
        HTTPResponse, HTTPBody?
    ) {
        let clientRequest = try await Self.clientRequest(request, body: body, baseURL: baseURL)
        let exchange = ExchangeRecord.current
        let delegate = CollectingDelegate(exchange: exchange, onProvenConnection: connections.take())
        let deadline = NIODeadline.now() + .nanoseconds(timeout.nanosecondsValue)
        let client = client
        let start = DueStart(on: client.eventLoopGroup.next(), notBefore: exchange?.grantedAt ?? .now) {
            client.execute(request: clientRequest, delegate: delegate, eventLoop: .indifferent, deadline: deadline)
        }
        let collected = try await withTaskCancellationHandler {
            try await start.started().futureResult.get()
        } onCancel: {
            start.cancel()
        }
        if collected.head.isKeepAlive { connections.giveBack() }
        var headerFields = HTTPFields()
        for header in collected.head.headers {
            guard let name = HTTPField.Name(header.name) else { continue }
            headerFields.append(HTTPField(name: name, value: header.value))
        }
        let response = HTTPResponse(status: .init(code: Int(collected.head.status.code)), headerFields: headerFields)
        let responseBody: HTTPBody? = request.method == .head ? nil : HTTPBody(Array(collected.body.readableBytesView))
        return (response, responseBody)
    }

    private static func clientRequest(_ request: HTTPRequest, body: HTTPBody?, baseURL: URL) async throws
        -> HTTPClient.Request
    {
        guard var components = URLComponents(string: baseURL.absoluteString),
            let requestComponents = URLComponents(string: request.path ?? "")
        else { throw InvalidRequestURL() }
        components.percentEncodedPath += requestComponents.percentEncodedPath
        components.percentEncodedQuery = requestComponents.percentEncodedQuery
        guard let url = components.url else { throw InvalidRequestURL() }
        var headers = HTTPHeaders()
        for field in request.headerFields {
            headers.add(name: field.name.canonicalName, value: field.value)
        }
        let requestBody: HTTPClient.Body?
        if let body {
            requestBody = .bytes(try await [UInt8](collecting: body, upTo: maxRequestBodyBytes))
        } else {
            requestBody = nil
        }
        return try HTTPClient.Request(
            url: url, method: HTTPMethod(rawValue: request.method.rawValue), headers: headers, body: requestBody)
    }
}

/// An exchange `DueStart` starts, and cancels when its caller is cancelled after the start.
protocol CancellableExchange: Sendable {
    func cancel()
}

extension HTTPClient.Task: CancellableExchange {}

/// Starts an exchange on an event loop once the budget's instant for it has come.
///
/// The budget may hand a permit over a little before its instant (`BudgetPermit.handOverAhead`), so that the request
/// is built meanwhile; the last wait is the event loop's timer, and the exchange starts on the loop that writes it.
/// A task's sleep and its hops onto the loop would put a millisecond or so between the instant and the write, and
/// every window of the budget would be that much longer.
///
/// The caller is resumed directly, not through a future of the loop: a loop that shuts down while the start waits
/// fails the timer's task, and the caller learns of it even though the loop runs nothing more. The loop must not
/// have shut down when the start is made.
final class DueStart<Exchange: CancellableExchange>: Sendable {
    private typealias Caller = CheckedContinuation<Exchange, any Error>

    private enum State {
        /// Before the instant; `caller` is the one awaiting `started()`, once it does.
        case waiting(caller: Caller?)
        /// `start` runs on the event loop.
        case starting(caller: Caller?, cancelRequested: Bool)
        case ended(Result<Exchange, any Error>)
    }

    private let eventLoop: any EventLoop
    private let notBefore: ContinuousClock.Instant
    private let start: @Sendable () -> Exchange
    private let state = Mutex(State.waiting(caller: nil))

    init(on eventLoop: any EventLoop, notBefore: ContinuousClock.Instant, start: @escaping @Sendable () -> Exchange) {
        self.eventLoop = eventLoop
        self.notBefore = notBefore
        self.start = start
        eventLoop.execute { self.startWhenDue() }
    }

    /// The started exchange, once its instant has come; throws `CancellationError` when cancelled before, and the
    /// event loop's error when it shut down before.
    func started() async throws -> Exchange {
        try await withCheckedThrowingContinuation { (caller: Caller) in
            let ended = state.withLock { state -> Result<Exchange, any Error>? in
                switch state {
                case .waiting(nil):
                    state = .waiting(caller: caller)
                case .starting(nil, let cancelRequested):
                    state = .starting(caller: caller, cancelRequested: cancelRequested)
                case .ended(let result):
                    return result
                case .waiting(.some), .starting(.some, _):
                    preconditionFailure("a start has one caller")
                }
                return nil
            }
            if let ended { caller.resume(with: ended) }
        }
    }

    /// Before the start, it is never made; after it, the exchange is cancelled.
    func cancel() {
        end(with: CancellationError())?.cancel()
    }

    /// Ends a start still waiting with `error`, or has one that is being made cancelled once made; returns the
    /// exchange when it was made.
    @discardableResult
    private func end(with error: any Error) -> Exchange? {
        var caller: Caller?
        let exchange = state.withLock { state -> Exchange? in
            switch state {
            case .waiting(let waiting):
                caller = waiting
                state = .ended(.failure(error))
            case .starting(let starting, _):
                state = .starting(caller: starting, cancelRequested: true)
            case .ended(.success(let exchange)):
                return exchange
            case .ended(.failure):
                break
            }
            return nil
        }
        caller?.resume(throwing: error)
        return exchange
    }

    /// On the event loop: waits on its timer until `notBefore` has passed by this process's monotonic clock (the
    /// timer's clock is another, so it is read again rather than trusted), then starts.
    private func startWhenDue() {
        let remaining = notBefore - .now
        guard remaining <= .zero else {
            eventLoop.scheduleTask(in: .nanoseconds(max(remaining.nanosecondsValue, 1))) { self.startWhenDue() }
                .futureResult.whenFailure { self.end(with: $0) }
            return
        }
        let proceed = state.withLock { state -> Bool in
            guard case .waiting(let caller) = state else { return false }
            state = .starting(caller: caller, cancelRequested: false)
            return true
        }
        guard proceed else { return }
        let exchange = start()
        let (caller, cancelRequested) = state.withLock { state -> (Caller?, Bool) in
            guard case .starting(let caller, let cancelRequested) = state else {
                preconditionFailure("only the loop ends a start that is starting")
            }
            state = .ended(.success(exchange))
            return (caller, cancelRequested)
        }
        if cancelRequested { exchange.cancel() }
        caller?.resume(returning: exchange)
    }
}

/// Reports the head write and collects the answer. AsyncHTTPClient calls it on one event loop at a
/// time; the lock only makes that visible to the compiler.
private final class CollectingDelegate: HTTPClientResponseDelegate {
    struct Collected: Sendable {
        var head: HTTPResponseHead
        var body: ByteBuffer
    }

    private struct Progress {
        var head: HTTPResponseHead?
        var body = ByteBuffer()
    }

    /// Told when the head is written, and when the start the rate budget counts happened.
    private let exchange: ExchangeRecord?
    /// Whether the request goes out on a connection the API has read from before: its start counts at its write
    /// then, at its answer's arrival otherwise.
    private let onProvenConnection: Bool
    private let progress = Mutex(Progress())

    init(exchange: ExchangeRecord?, onProvenConnection: Bool) {
        self.exchange = exchange
        self.onProvenConnection = onProvenConnection
    }

    func didSendRequestHead(task: HTTPClient.Task<Collected>, _ head: HTTPRequestHead) {
        let now = ContinuousClock.now
        exchange?.headWritten()
        if onProvenConnection { exchange?.startCounted(at: now) }
    }

    func didReceiveHead(task: HTTPClient.Task<Collected>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        if !onProvenConnection { exchange?.startCounted(at: .now) }
        progress.withLock { $0.head = head }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Collected>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let fits = progress.withLock { progress -> Bool in
            guard progress.body.readableBytes + buffer.readableBytes <= HeadWriteReportingTransport.maxResponseBodyBytes
            else {
                return false
            }
            var buffer = buffer
            progress.body.writeBuffer(&buffer)
            return true
        }
        return fits
            ? task.eventLoop.makeSucceededVoidFuture()
            : task.eventLoop.makeFailedFuture(HeadWriteReportingTransport.ResponseBodyTooLarge())
    }

    func didFinishRequest(task: HTTPClient.Task<Collected>) throws -> Collected {
        try progress.withLock { progress in
            guard let head = progress.head else { throw HTTPClientError.remoteConnectionClosed }
            return Collected(head: head, body: progress.body)
        }
    }
}
