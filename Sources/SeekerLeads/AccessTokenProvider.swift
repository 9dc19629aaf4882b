import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import RelayPrimitives

/// Why no access token could be obtained. Never carries a secret or a response body.
enum AccessTokenError: Error, CustomStringConvertible {
    /// The token endpoint refused the credentials (4xx other than 408/429).
    case refused(httpStatus: Int)
    /// The token endpoint could not be reached or answered with a transient failure.
    case unavailable(httpStatus: Int?, reason: String)

    var description: String {
        switch self {
        case .refused(let status): return "token endpoint refused the client credentials (HTTP \(status))"
        case .unavailable(let status?, let reason): return "token endpoint unavailable (HTTP \(status)): \(reason)"
        case .unavailable(nil, let reason): return "token endpoint unavailable: \(reason)"
        }
    }
}

/// Hands out the bearer token: a fixed one, or an OAuth2 client-credentials token cached until
/// shortly before it expires. Concurrent callers share one fetch.
actor AccessTokenProvider {
    private struct CachedToken {
        let value: String
        let refreshAfter: ContinuousClock.Instant
        /// When the token endpoint said it expires; nil for the static token.
        var expiresAt: Date? = nil
    }

    private struct TokenResponse: Decodable {
        let access_token: String
        let expires_in: Double?
        let token_type: String?
    }

    private struct TokenRequest: Encodable {
        let client_id: String
        let client_secret: String
        let grant_type = "client_credentials"
        let audience: String
    }

    private let authentication: SeekerLeadsAuthentication
    private let httpClient: HTTPClient
    private let timeout: Duration
    private let userAgent: String
    private let logger: Logger
    private var cached: CachedToken?
    private var inFlightFetch: Task<CachedToken, any Error>?

    init(
        authentication: SeekerLeadsAuthentication, httpClient: HTTPClient, timeout: Duration, userAgent: String,
        logger: Logger
    ) {
        self.authentication = authentication
        self.httpClient = httpClient
        self.timeout = timeout
        self.userAgent = userAgent
        self.logger = logger
    }

    /// The token to send now.
    func token() async throws -> String {
        guard case .clientCredentials = authentication else { return staticToken }
        if let cached, ContinuousClock.now < cached.refreshAfter { return cached.value }
        return try await sharedFetch().value
    }

    /// The token to retry with after `rejected` was answered with 401. Only the first caller that
    /// reports a given token fetches a new one; the others get that new one.
    func token(replacing rejected: String) async throws -> String {
        guard case .clientCredentials = authentication else { return staticToken }
        if let cached, cached.value != rejected { return try await token() }
        cached = nil
        return try await sharedFetch().value
    }

    /// How the client authenticates (`static-token`, `client-credentials`) and when the token it holds expires.
    func status() -> (method: String, tokenExpiresAt: Date?) {
        guard case .clientCredentials = authentication else { return ("static-token", nil) }
        return ("client-credentials", cached?.expiresAt)
    }

    /// Whether the static token can be replaced: a 401 with a static token is final.
    nonisolated var canRefresh: Bool {
        if case .clientCredentials = authentication { return true }
        return false
    }

    private var staticToken: String {
        if case .staticToken(let token) = authentication { return token }
        return ""
    }

    private func sharedFetch() async throws -> CachedToken {
        if let inFlightFetch { return try await inFlightFetch.value }
        let fetch = Task { try await self.fetch() }
        inFlightFetch = fetch
        defer { inFlightFetch = nil }
        let fetched = try await fetch.value
        cached = fetched
        return fetched
    }

    private func fetch() async throws -> CachedToken {
        guard case .clientCredentials(let tokenURL, let clientID, let clientSecret, let audience) = authentication
        else {
            return CachedToken(value: staticToken, refreshAfter: .now.advanced(by: .seconds(86_400 * 365)))
        }
        var request = HTTPClientRequest(url: tokenURL)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: userAgent)
        let body = try JSONEncoder().encode(
            TokenRequest(client_id: clientID, client_secret: clientSecret, audience: audience)
        )
        request.body = .bytes(ByteBuffer(bytes: body))
        let requestedAt = ContinuousClock.now
        let requestedAtDate = Date()
        let response: HTTPClientResponse
        let responseBody: ByteBuffer
        do {
            response = try await httpClient.execute(request, timeout: .nanoseconds(timeout.nanosecondsValue))
            responseBody = try await response.body.collect(upTo: 1 << 20)
        } catch {
            logger.warning("token request failed", metadata: ["error": "\(TransportFailure(error).description)"])
            throw AccessTokenError.unavailable(httpStatus: nil, reason: TransportFailure(error).description)
        }
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            logger.warning("token endpoint answered an error", metadata: ["http_status": "\(status)"])
            if HTTPStatusClass.isTransient(status) {
                throw AccessTokenError.unavailable(httpStatus: status, reason: "HTTP \(status)")
            }
            throw AccessTokenError.refused(httpStatus: status)
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(responseBody.readableBytesView)),
            !decoded.access_token.isEmpty
        else {
            throw AccessTokenError.unavailable(
                httpStatus: status, reason: "token response is not {access_token, expires_in}")
        }
        let lifetime = Duration.seconds(max(0, decoded.expires_in ?? 3600))
        // Refresh before expiry: a tenth of the lifetime early, at most a minute, so a token is never
        // sent in its last moments.
        let earlyBy = min(lifetime / 10, .seconds(60))
        logger.debug("obtained an access token", metadata: ["expires_in_s": "\(decoded.expires_in ?? 3600)"])
        return CachedToken(
            value: decoded.access_token, refreshAfter: requestedAt.advanced(by: lifetime - earlyBy),
            expiresAt: requestedAtDate.addingTimeInterval(Double(lifetime.components.seconds)))
    }
}
