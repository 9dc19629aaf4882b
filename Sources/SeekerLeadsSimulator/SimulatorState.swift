import Foundation
import RelayPrimitives
import Synchronization

/// The simulator's figures, as `GET /_sim/stats` returns them.
public struct SimulatorStats: Sendable, Codable, Equatable {
    /// API answers by HTTP status ("200", "429", ...; "dropped" for closed connections).
    public var requestsByStatus: [String: Int]
    public var requestsTotal: Int
    public var leadsStored: Int
    /// Leads whose body was identical to one already stored (each extra copy counts once).
    public var duplicateLeadsReceived: Int
    /// The most API requests in flight at once.
    public var maxConcurrency: Int
    /// The most API request starts (arrivals) seen in any window.
    public var maxStartsPerWindow: Int
    /// Requests that went over the budget (each answered 429).
    public var violations: Int
    /// `concurrency` and `rate` violations.
    public var violationsByKind: [String: Int]
    /// Hits on the token endpoint.
    public var tokenRequests: Int
    public var tokensIssued: Int
}

/// One API request as the simulator saw it, for tests that check timing.
public struct SimulatorRequestRecord: Sendable, Codable, Equatable {
    public var method: String
    public var path: String
    /// When the request head was read from the connection, since the simulator started.
    public var arrivedAtNanos: Int64
    /// When the answer was handed to the server, since the simulator started.
    public var answeredAtNanos: Int64
    /// The HTTP status, or 0 when the connection was dropped.
    public var status: Int
}

/// A lead as the simulator stored it.
struct StoredLead: Sendable {
    let leadId: String
    let ingestedAtUnixSeconds: Int64
    let ingestedAt: Date
    let canonicalBody: Data
    let request: Components.Schemas.createLeadRequest
}

/// Everything the simulator remembers, behind one lock: handlers are short and never await inside it.
final class SimulatorState: Sendable {
    /// How the budget counted one request head.
    struct Arrival {
        let nanosecondsSinceStart: Int64
        /// `concurrency` or `rate` when the request broke the budget.
        let violation: String?
    }

    private struct Counters {
        var faults: SimulatorFaults
        var stormUntil: ContinuousClock.Instant?
        var storm429Remaining = 0
        var issuedTokens: [String: ContinuousClock.Instant] = [:]
        var tokenRequests = 0
        var tokensIssued = 0
        var inFlight = 0
        var maxConcurrency = 0
        var recentArrivals: [ContinuousClock.Instant] = []
        var recentArrivalsHead = 0
        var maxStartsPerWindow = 0
        var violationsByKind: [String: Int] = [:]
        var requestsByStatus: [String: Int] = [:]
        var leads: [StoredLead] = []
        var leadIndexByID: [String: Int] = [:]
        var storedBodies: Set<Data> = []
        var duplicateLeadsReceived = 0
        var requestLog: [SimulatorRequestRecord] = []
        var webhookSubscriptions: [Components.Schemas.webhookSubscriptionResponse] = []
    }

    /// Keeps the request log bounded in long runs (benchmarks).
    static let maxRequestLogEntries = 500_000

    let options: SimulatorOptions
    let startedAt = ContinuousClock.now
    private let window: Duration
    private let counters: Mutex<Counters>

    init(options: SimulatorOptions) {
        self.options = options
        self.window = .milliseconds(options.windowMs)
        self.counters = Mutex(Counters(faults: options.faults))
        applyFaultTimers(options.faults)
    }

    // MARK: - Budget

    /// Counts the start when its head is read; over the budget means a violation. The request stays
    /// in flight until `requestEnded()`.
    func admit(at now: ContinuousClock.Instant) -> Arrival {
        let sinceStart = (now - startedAt).nanosecondsValue
        return counters.withLock { state in
            state.inFlight += 1
            state.maxConcurrency = max(state.maxConcurrency, state.inFlight)
            state.recentArrivals.append(now)
            while state.recentArrivals[state.recentArrivalsHead] <= now - window {
                state.recentArrivalsHead += 1
            }
            if state.recentArrivalsHead > 4096 {
                state.recentArrivals.removeFirst(state.recentArrivalsHead)
                state.recentArrivalsHead = 0
            }
            let startsInWindow = state.recentArrivals.count - state.recentArrivalsHead
            state.maxStartsPerWindow = max(state.maxStartsPerWindow, startsInWindow)
            let kind: String?
            if state.inFlight > options.maxInFlight {
                kind = "concurrency"
            } else if startsInWindow > options.rateLimit {
                kind = "rate"
            } else {
                kind = nil
            }
            if let kind { state.violationsByKind[kind, default: 0] += 1 }
            return Arrival(nanosecondsSinceStart: sinceStart, violation: kind)
        }
    }

    /// Ends a request counted by `admit(at:)`: its response's head was written (the API answered) or its
    /// connection closed.
    func requestEnded() {
        counters.withLock { $0.inFlight -= 1 }
    }

    /// Records the answer to a budgeted request.
    func recordAnswer(method: String, path: String, arrivedAtNanos: Int64, status: Int?) {
        let answeredAt = ContinuousClock.now
        counters.withLock { state in
            state.requestsByStatus[status.map(String.init) ?? "dropped", default: 0] += 1
            if state.requestLog.count < Self.maxRequestLogEntries {
                state.requestLog.append(
                    SimulatorRequestRecord(
                        method: method,
                        path: path,
                        arrivedAtNanos: arrivedAtNanos,
                        answeredAtNanos: (answeredAt - startedAt).nanosecondsValue,
                        status: status ?? 0
                    )
                )
            }
        }
    }

    // MARK: - Faults

    var faults: SimulatorFaults { counters.withLock { $0.faults } }

    func setFaults(_ faults: SimulatorFaults) {
        var stored = faults
        stored.revokeIssuedTokens = false
        counters.withLock { state in
            state.faults = stored
            if faults.revokeIssuedTokens { state.issuedTokens.removeAll() }
        }
        applyFaultTimers(faults)
    }

    private func applyFaultTimers(_ faults: SimulatorFaults) {
        let now = ContinuousClock.now
        counters.withLock { state in
            state.storm429Remaining = faults.storm429Requests
            state.stormUntil = faults.storm429Seconds > 0 ? now.advanced(by: .seconds(faults.storm429Seconds)) : nil
        }
    }

    /// Whether this request falls in a 429 storm (and uses up one of the storm's requests).
    func takeStorm429(at now: ContinuousClock.Instant) -> Bool {
        counters.withLock { state in
            if state.storm429Remaining > 0 {
                state.storm429Remaining -= 1
                return true
            }
            if let until = state.stormUntil, now < until { return true }
            return false
        }
    }

    // MARK: - Tokens

    enum TokenGrant {
        case issued(token: String, expiresIn: Int)
        case outage
        case invalidClient
    }

    func grantToken(clientID: String?, clientSecret: String?) -> TokenGrant {
        counters.withLock { state in
            state.tokenRequests += 1
            if state.faults.tokenEndpointOutage { return .outage }
            guard clientID == options.clientID, clientSecret == options.clientSecret else { return .invalidClient }
            let token = "sim-" + UUID().uuidString.lowercased()
            state.issuedTokens[token] = ContinuousClock.now.advanced(by: .seconds(options.tokenTTLSeconds))
            state.tokensIssued += 1
            return .issued(token: token, expiresIn: options.tokenTTLSeconds)
        }
    }

    func isAuthorized(bearerToken: String) -> Bool {
        if bearerToken == options.staticToken { return true }
        return counters.withLock { state in
            guard let expiry = state.issuedTokens[bearerToken] else { return false }
            return ContinuousClock.now < expiry
        }
    }

    // MARK: - Leads

    func store(_ request: Components.Schemas.createLeadRequest, canonicalBody: Data, at now: Date) -> StoredLead {
        counters.withLock { state in
            if !state.storedBodies.insert(canonicalBody).inserted { state.duplicateLeadsReceived += 1 }
            let lead = StoredLead(
                leadId: String(format: "lead-%012d", state.leads.count + 1),
                ingestedAtUnixSeconds: Int64(now.timeIntervalSince1970),
                ingestedAt: now,
                canonicalBody: canonicalBody,
                request: request
            )
            state.leadIndexByID[lead.leadId] = state.leads.count
            state.leads.append(lead)
            return lead
        }
    }

    /// Leads ingested in `minDate...maxDate` after the lead `start`, at most `limit`, and whether more follow.
    func leads(minDate: Int64, maxDate: Int64, after start: String?, limit: Int) -> (page: [StoredLead], hasMore: Bool)
    {
        counters.withLock { state in
            let firstIndex = start.flatMap { state.leadIndexByID[$0].map { $0 + 1 } } ?? 0
            var page: [StoredLead] = []
            var index = firstIndex
            while index < state.leads.count {
                let lead = state.leads[index]
                index += 1
                guard (minDate...maxDate).contains(lead.ingestedAtUnixSeconds) else { continue }
                if page.count == limit { return (page, true) }
                page.append(lead)
            }
            return (page, false)
        }
    }

    func lead(id: String) -> StoredLead? {
        counters.withLock { state in state.leadIndexByID[id].map { state.leads[$0] } }
    }

    var storedLeadBodies: [Data] { counters.withLock { $0.leads.map(\.canonicalBody) } }

    // MARK: - Webhooks

    func addWebhookSubscription(_ subscription: Components.Schemas.webhookSubscriptionResponse) {
        counters.withLock { $0.webhookSubscriptions.append(subscription) }
    }

    var webhookSubscriptions: [Components.Schemas.webhookSubscriptionResponse] {
        counters.withLock { $0.webhookSubscriptions }
    }

    // MARK: - Reports

    var stats: SimulatorStats {
        counters.withLock { state in
            SimulatorStats(
                requestsByStatus: state.requestsByStatus,
                requestsTotal: state.requestsByStatus.values.reduce(0, +),
                leadsStored: state.leads.count,
                duplicateLeadsReceived: state.duplicateLeadsReceived,
                maxConcurrency: state.maxConcurrency,
                maxStartsPerWindow: state.maxStartsPerWindow,
                violations: state.violationsByKind.values.reduce(0, +),
                violationsByKind: state.violationsByKind,
                tokenRequests: state.tokenRequests,
                tokensIssued: state.tokensIssued
            )
        }
    }

    var requestLog: [SimulatorRequestRecord] { counters.withLock { $0.requestLog } }
}
