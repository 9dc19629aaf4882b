import RelayPrimitives

/// How the client obtains the bearer token it sends on every request.
///
/// `description`, `debugDescription` and the mirror redact the secrets so that the value can be
/// logged or dumped safely.
public enum SeekerLeadsAuthentication: Sendable {
    /// A fixed bearer token (`SEEKER_LEADS_TOKEN`).
    case staticToken(String)
    /// OAuth2 client credentials: a JSON `POST` to `tokenURL`, the token cached for its lifetime.
    case clientCredentials(tokenURL: String, clientID: String, clientSecret: String, audience: String)
}

extension SeekerLeadsAuthentication: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private static let redacted = "<redacted>"

    public var description: String {
        switch self {
        case .staticToken:
            return "staticToken(\(Self.redacted))"
        case .clientCredentials(let tokenURL, let clientID, _, let audience):
            return "clientCredentials(tokenURL: \(tokenURL), clientID: \(clientID), "
                + "clientSecret: \(Self.redacted), audience: \(audience))"
        }
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}

/// The API's budget as the client enforces it.
public struct RateBudgetConfiguration: Sendable, Equatable {
    /// At most this many requests outstanding (`LEAD_RELAY_MAX_IN_FLIGHT`).
    public var maxInFlight: Int = 10
    /// At most this many starts in any sliding window of `window` (`LEAD_RELAY_RATE_LIMIT`).
    public var rateLimit: Int = 10
    /// The sliding window (`LEAD_RELAY_RATE_WINDOW_MS`).
    public var window: Duration = .milliseconds(200)
    /// Added to the window: the budget counts a start when the request head is written and the API
    /// when it reads it; the margin covers the difference between those two reads of the clock
    /// (`LEAD_RELAY_RATE_MARGIN_MS`).
    public var margin: Duration = .milliseconds(5)

    public init(
        maxInFlight: Int = 10,
        rateLimit: Int = 10,
        window: Duration = .milliseconds(200),
        margin: Duration = .milliseconds(5)
    ) {
        self.maxInFlight = max(1, maxInFlight)
        self.rateLimit = max(1, rateLimit)
        self.window = window
        self.margin = margin
    }
}

/// Everything the client needs to reach the API.
public struct SeekerLeadsClientConfiguration: Sendable {
    /// The API's base URL (`SEEKER_LEADS_BASE_URL`), paths are appended to it.
    public var baseURL: String
    public var authentication: SeekerLeadsAuthentication
    /// Connect timeout, read timeout and the deadline of one request (`SEEKER_LEADS_TIMEOUT_MS`).
    public var timeout: Duration = .seconds(10)
    /// Sent on every request, the API blocks requests without one.
    public var userAgent: String = "lead-relay/\(SeekerLeadsClientConfiguration.defaultVersion)"
    public var budget: RateBudgetConfiguration
    /// The ceilings of the jittered pauses between attempts (`LEAD_RELAY_RETRY_BASE_MS`, `LEAD_RELAY_RETRY_MAX_MS`).
    public var retry: Backoff

    /// The version in the default `User-Agent`.
    public static let defaultVersion = "0.1.0"

    public init(
        baseURL: String,
        authentication: SeekerLeadsAuthentication,
        timeout: Duration = .seconds(10),
        userAgent: String = "lead-relay/\(SeekerLeadsClientConfiguration.defaultVersion)",
        budget: RateBudgetConfiguration = RateBudgetConfiguration(),
        retry: Backoff = Backoff(base: .milliseconds(200), max: .seconds(30))
    ) {
        self.baseURL = baseURL
        self.authentication = authentication
        self.timeout = timeout
        self.userAgent = userAgent
        self.budget = budget
        self.retry = retry
    }
}
