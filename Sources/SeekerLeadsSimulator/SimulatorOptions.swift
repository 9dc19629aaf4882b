/// Faults the simulator injects; set by flags at start and replaced at run time by
/// `POST /_sim/faults` (a JSON object of these fields; absent fields take their defaults).
public struct SimulatorFaults: Sendable, Codable, Equatable {
    /// Added to every API request's handling time.
    public var latencyMs: Int = 0
    /// A uniformly random extra latency in `0...latencyJitterMs`.
    public var latencyJitterMs: Int = 0
    /// The probability of answering with each status code instead of handling, e.g. `{"500": 0.2}`.
    public var errorRates: [String: Double] = [:]
    /// The next this many API requests get 429 with `Retry-After`.
    public var storm429Requests: Int = 0
    /// API requests get 429 for this many seconds after the faults are set.
    public var storm429Seconds: Double = 0
    /// `Retry-After` seconds on injected 429 and 503 answers (0: no header).
    public var retryAfterSeconds: Int = 1
    /// Send `Retry-After` as an HTTP-date rather than delay-seconds.
    public var retryAfterAsHTTPDate: Bool = false
    /// The probability of closing the connection without answering.
    public var dropConnectionRate: Double = 0
    /// The token endpoint answers 503.
    public var tokenEndpointOutage: Bool = false
    /// Forget every issued OAuth2 token now (the static token stays valid); one-shot.
    public var revokeIssuedTokens: Bool = false
    /// The probability that `POST /leads` stores the lead and then loses the answer: a 502, or the connection
    /// closed without a response after the body was read (see `storeThenFailDropShare`).
    public var storeThenFailRate: Double = 0
    /// The share of those lost answers that are dropped connections; the rest are 502s. Not random: the lost
    /// answers alternate so that, of the first `n`, `floor(n × share)` are drops (0.5: 502, drop, 502, drop...).
    public var storeThenFailDropShare: Double = 0.5
    /// A stored lead is listed by `GET /leads` and found by `GET /leads/{leadId}` only this long after it was
    /// stored; its ingestion time stays the moment it was stored. Duplicates are counted at once.
    public var ingestionDelayMs: Int = 0
    /// The probability that a lead is GDPR-erased as it is stored: `GET` answers null contact fields and no
    /// phone numbers (`POST /_sim/erase` erases stored leads by id).
    public var erasedLeadRate: Double = 0

    public init() {}

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = SimulatorFaults()
        latencyMs = try container.decodeIfPresent(Int.self, forKey: .latencyMs) ?? defaults.latencyMs
        latencyJitterMs = try container.decodeIfPresent(Int.self, forKey: .latencyJitterMs) ?? defaults.latencyJitterMs
        errorRates = try container.decodeIfPresent([String: Double].self, forKey: .errorRates) ?? defaults.errorRates
        storm429Requests =
            try container.decodeIfPresent(Int.self, forKey: .storm429Requests) ?? defaults.storm429Requests
        storm429Seconds =
            try container.decodeIfPresent(Double.self, forKey: .storm429Seconds) ?? defaults.storm429Seconds
        retryAfterSeconds =
            try container.decodeIfPresent(Int.self, forKey: .retryAfterSeconds) ?? defaults.retryAfterSeconds
        retryAfterAsHTTPDate =
            try container.decodeIfPresent(Bool.self, forKey: .retryAfterAsHTTPDate) ?? defaults.retryAfterAsHTTPDate
        dropConnectionRate =
            try container.decodeIfPresent(Double.self, forKey: .dropConnectionRate) ?? defaults.dropConnectionRate
        tokenEndpointOutage =
            try container.decodeIfPresent(Bool.self, forKey: .tokenEndpointOutage) ?? defaults.tokenEndpointOutage
        revokeIssuedTokens =
            try container.decodeIfPresent(Bool.self, forKey: .revokeIssuedTokens) ?? defaults.revokeIssuedTokens
        storeThenFailRate =
            try container.decodeIfPresent(Double.self, forKey: .storeThenFailRate) ?? defaults.storeThenFailRate
        storeThenFailDropShare =
            try container.decodeIfPresent(Double.self, forKey: .storeThenFailDropShare)
            ?? defaults.storeThenFailDropShare
        ingestionDelayMs =
            try container.decodeIfPresent(Int.self, forKey: .ingestionDelayMs) ?? defaults.ingestionDelayMs
        erasedLeadRate =
            try container.decodeIfPresent(Double.self, forKey: .erasedLeadRate) ?? defaults.erasedLeadRate
    }
}

/// How the simulator runs.
public struct SimulatorOptions: Sendable {
    public var host: String = "127.0.0.1"
    /// 0: the OS picks a free port.
    public var port: Int = 0
    public var clientID: String = "lead-relay"
    public var clientSecret: String = "dev-secret"
    /// A bearer token always accepted besides the issued ones.
    public var staticToken: String = "dev-token"
    /// `expires_in` of issued tokens, in seconds.
    public var tokenTTLSeconds: Int = 86_400
    /// The budget the API enforces: more in flight, or more starts in one window, is a violation.
    public var maxInFlight: Int = 10
    public var rateLimit: Int = 10
    public var windowMs: Int = 200
    /// Request bodies larger than this are refused.
    public var maxBodyBytes: Int = 65_536
    public var faults = SimulatorFaults()

    public init() {}
}
