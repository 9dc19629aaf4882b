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
    /// The most API request starts (arrivals) surely within one window.
    public var maxStartsPerWindow: Int
    /// Requests that went over the budget (each answered 429).
    public var violations: Int
    /// `concurrency` and `rate` violations.
    public var violationsByKind: [String: Int]
    /// Hits on the token endpoint.
    public var tokenRequests: Int
    public var tokensIssued: Int
    /// `POST /leads` answers lost after the lead was stored (the `storeThenFailRate` fault), by kind: `502` and
    /// `dropped`. Each is a lead the client cannot know was stored.
    public var answersLostAfterStoring: [String: Int]
    /// Stored leads GDPR-erased (the `erasedLeadRate` fault and `POST /_sim/erase`).
    public var leadsErased: Int
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
    /// When `GET` starts to see it (the `ingestionDelayMs` fault).
    let visibleAt: ContinuousClock.Instant
    let canonicalBody: Data
    let request: Components.Schemas.createLeadRequest
    /// GDPR-erased: `GET` answers no contact data.
    var erased: Bool
}

/// How a `POST /leads` answer is lost after the lead was stored.
enum LostAnswer: String {
    case badGateway = "502"
    case dropped
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
        /// The earliest arrival of each recent start, in the order they were read.
        var recentArrivals: [ContinuousClock.Instant] = []
        var recentArrivalsHead = 0
        var maxStartsPerWindow = 0
        var violationsByKind: [String: Int] = [:]
        var requestsByStatus: [String: Int] = [:]
        /// In ingestion order, which is also `ingestedAt` order (`store` never lets the clock go back).
        var leads: [StoredLead] = []
        var lastIngestedAt = Date(timeIntervalSince1970: 0)
        var answersLostAfterStoring: [String: Int] = [:]
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

    /// Counts the start when its head is read at `readAt`, having arrived at `earliestArrival` at the earliest
    /// (`ReadDelayBound`); over the budget means a violation. The request stays in flight until `requestEnded()`.
    ///
    /// A start breaks the rate only when the window surely held more than `rateLimit` arrivals: it arrived by
    /// `readAt`, and the others counted are those that cannot have arrived a window or more before it. Counting
    /// read instants instead would blame the client for reads the simulator's own thread delayed and then made
    /// together (a stalled machine: 11 reads within 194 ms where the writes were 205 ms apart). `earliestArrival`
    /// must not go back from one call to the next.
    func admit(readAt now: ContinuousClock.Instant, earliestArrival: ContinuousClock.Instant) -> Arrival {
        let sinceStart = (now - startedAt).nanosecondsValue
        return counters.withLock { state in
            state.inFlight += 1
            state.maxConcurrency = max(state.maxConcurrency, state.inFlight)
            while state.recentArrivalsHead < state.recentArrivals.count,
                state.recentArrivals[state.recentArrivalsHead] <= now - window
            {
                state.recentArrivalsHead += 1
            }
            if state.recentArrivalsHead > 4096 {
                state.recentArrivals.removeFirst(state.recentArrivalsHead)
                state.recentArrivalsHead = 0
            }
            let startsInWindow = state.recentArrivals.count - state.recentArrivalsHead + 1
            state.recentArrivals.append(min(earliestArrival, now))
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

    /// Ends a request counted by `admit(readAt:earliestArrival:)`: its response's head was written (the API answered) or its
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

    func store(_ request: Components.Schemas.createLeadRequest, canonicalBody: Data) -> StoredLead {
        let now = ContinuousClock.now
        return counters.withLock { state in
            if !state.storedBodies.insert(canonicalBody).inserted { state.duplicateLeadsReceived += 1 }
            // Read in the lock, so that ingestion times grow with the leads' order and a cursor is a time too.
            let ingestedAt = max(Date(), state.lastIngestedAt)
            state.lastIngestedAt = ingestedAt
            let lead = StoredLead(
                leadId: String(format: "lead-%012d", state.leads.count + 1),
                ingestedAtUnixSeconds: Int64(ingestedAt.timeIntervalSince1970.rounded(.down)),
                ingestedAt: ingestedAt,
                visibleAt: now.advanced(by: .milliseconds(state.faults.ingestionDelayMs)),
                canonicalBody: canonicalBody,
                request: request,
                erased: state.faults.erasedLeadRate > 0 && Double.random(in: 0..<1) < state.faults.erasedLeadRate
            )
            state.leadIndexByID[lead.leadId] = state.leads.count
            state.leads.append(lead)
            return lead
        }
    }

    /// Whether the answer to a `POST /leads` that stored its lead is lost, and how (the `storeThenFail` faults).
    func takeLostAnswer() -> LostAnswer? {
        counters.withLock { state in
            let faults = state.faults
            guard faults.storeThenFailRate > 0, Double.random(in: 0..<1) < faults.storeThenFailRate else { return nil }
            let lostSoFar = Double(state.answersLostAfterStoring.values.reduce(0, +))
            let share = min(max(faults.storeThenFailDropShare, 0), 1)
            let lost: LostAnswer =
                ((lostSoFar + 1) * share).rounded(.down) > (lostSoFar * share).rounded(.down) ? .dropped : .badGateway
            state.answersLostAfterStoring[lost.rawValue, default: 0] += 1
            return lost
        }
    }

    /// The leads `GET` sees now, ingested in `minDate...maxDate` after the lead `start`, at most `limit`, and
    /// whether more follow; nil when `start` is no lead's id.
    func visibleLeads(minDate: Int64, maxDate: Int64, after start: String?, limit: Int)
        -> (page: [StoredLead], hasMore: Bool)?
    {
        let now = ContinuousClock.now
        return counters.withLock { state in
            var index = 0
            if let start {
                guard let cursor = state.leadIndexByID[start] else { return nil }
                index = cursor + 1
            }
            index = max(index, Self.firstIndex(in: state.leads, ingestedAtOrAfter: minDate))
            var page: [StoredLead] = []
            while index < state.leads.count, state.leads[index].ingestedAtUnixSeconds <= maxDate {
                let lead = state.leads[index]
                index += 1
                guard lead.visibleAt <= now else { continue }
                if page.count == limit { return (page, true) }
                page.append(lead)
            }
            return (page, false)
        }
    }

    /// Binary search: `leads` is in ingestion-time order.
    private static func firstIndex(in leads: [StoredLead], ingestedAtOrAfter minDate: Int64) -> Int {
        var low = 0
        var high = leads.count
        while low < high {
            let middle = (low + high) / 2
            if leads[middle].ingestedAtUnixSeconds < minDate { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The lead, if `GET` sees it now.
    func visibleLead(id: String) -> StoredLead? {
        let now = ContinuousClock.now
        return counters.withLock { state in
            state.leadIndexByID[id].map { state.leads[$0] }.flatMap { $0.visibleAt <= now ? $0 : nil }
        }
    }

    /// GDPR-erases the stored leads with these ids (all of them when nil); returns the ids erased now.
    func erase(leadIDs: [String]?) -> [String] {
        counters.withLock { state in
            let indices = leadIDs.map { $0.compactMap { state.leadIndexByID[$0] } } ?? Array(state.leads.indices)
            var erased: [String] = []
            for index in indices where !state.leads[index].erased {
                state.leads[index].erased = true
                erased.append(state.leads[index].leadId)
            }
            return erased
        }
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
                tokensIssued: state.tokensIssued,
                answersLostAfterStoring: state.answersLostAfterStoring,
                leadsErased: state.leads.filter(\.erased).count
            )
        }
    }

    var requestLog: [SimulatorRequestRecord] { counters.withLock { $0.requestLog } }
}
