/// RFC 7807 problem details as the API returns them on 4xx and 5xx.
public struct ProblemDetails: Sendable, Codable, Equatable {
    public var type: String?
    public var title: String?
    public var status: Int?
    public var detail: String?
    public var instance: String?

    public init(
        type: String? = nil, title: String? = nil, status: Int? = nil, detail: String? = nil, instance: String? = nil
    ) {
        self.type = type
        self.title = title
        self.status = status
        self.detail = detail
        self.instance = instance
    }
}

/// What one attempt to submit a lead came to.
public enum SubmissionAttemptOutcome: Sendable {
    /// 2xx: the API took the lead.
    case accepted(requestId: String, title: String, httpStatus: Int)
    /// 401 or 403 after the one token refresh and retry, or the token endpoint refusing the
    /// credentials: a fault of the configuration, not of the lead.
    case authenticationFailed(httpStatus: Int)
    /// 408, 429, 5xx, a timeout, a refused or reset connection, an unreachable token endpoint:
    /// worth retrying. `retryAfter` is the API's `Retry-After`, when it sent one. `inDoubt`: the request may
    /// have reached the API and been stored (`InDoubt` decides), so it is looked up before it is posted again.
    case transient(httpStatus: Int?, description: String, retryAfter: Duration?, inDoubt: Bool)
    /// Any other 4xx: the lead itself is refused. `detailsJSON` is the problem JSON, or the raw body
    /// as a JSON string when the body is not problem details. `httpStatus` is 0 when the lead was
    /// refused before sending because the body does not decode as `createLeadRequest`.
    case rejected(httpStatus: Int, problem: ProblemDetails?, rawBody: String, detailsJSON: String)

    /// Whether another attempt may succeed.
    public var isTransient: Bool {
        if case .transient = self { return true }
        return false
    }

    /// Whether the attempt may have stored the lead although its answer does not say so.
    public var isInDoubt: Bool {
        if case .transient(_, _, _, let inDoubt) = self { return inDoubt }
        return false
    }
}
