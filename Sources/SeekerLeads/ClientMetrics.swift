import Foundation
import Metrics
import Synchronization

/// The client's metrics, created once. Label values are bounded: the route (`create_lead`, `list_leads`), HTTP
/// status codes, `timeout`, `connection_error`.
final class ClientMetrics: Sendable {
    /// The routes the client calls, as the `route` label names them.
    enum Route: String, CaseIterable {
        case createLead = "create_lead"
        case listLeads = "list_leads"
    }

    private struct SeriesKey: Hashable {
        var route: Route
        var code: String
    }

    private let requestsByCode = Mutex<[SeriesKey: Counter]>([:])
    /// Per answer code of `POST /leads`: how many, and the last one's time, for the status page.
    private let createLeadAnswers = Mutex<[String: APIAnswerTally]>([:])
    let requestDuration = Timer(label: "lead_relay_api_request_duration_seconds")
    let retries = Counter(label: "lead_relay_retries_total")
    private let inFlightGauge = Gauge(label: "lead_relay_api_in_flight")
    private let inFlightCount = Mutex(0)

    /// The answers a dashboard or an alert watches, present from the first scrape at zero; other codes appear with
    /// their first request.
    static let usualCodes = [
        "201", "400", "401", "403", "422", "429", "500", "502", "503", "504", "timeout", "connection_error",
    ]

    init() {
        requestsByCode.withLock { counters in
            for code in Self.usualCodes {
                let key = SeriesKey(route: .createLead, code: code)
                let counter = Self.counter(key)
                counter.increment(by: 0)
                counters[key] = counter
            }
        }
    }

    func countRequest(_ route: Route, code: String) {
        if route == .createLead {
            let now = Date()
            createLeadAnswers.withLock { answers in
                answers[code, default: APIAnswerTally(count: 0, lastAt: now)].count += 1
                answers[code]?.lastAt = now
            }
        }
        let key = SeriesKey(route: route, code: code)
        let counter = requestsByCode.withLock { counters -> Counter in
            if let existing = counters[key] { return existing }
            let created = Self.counter(key)
            counters[key] = created
            return created
        }
        counter.increment()
    }

    var answersByCode: [String: APIAnswerTally] { createLeadAnswers.withLock { $0 } }

    private static func counter(_ key: SeriesKey) -> Counter {
        Counter(
            label: "lead_relay_api_requests_total", dimensions: [("route", key.route.rawValue), ("code", key.code)])
    }

    func requestStarted() {
        let value = inFlightCount.withLock { count -> Int in
            count += 1
            return count
        }
        inFlightGauge.record(value)
    }

    func requestEnded() {
        let value = inFlightCount.withLock { count -> Int in
            count -= 1
            return count
        }
        inFlightGauge.record(value)
    }
}

/// How often the API gave one answer (an HTTP status, `timeout` or `connection_error`), and when it last did.
public struct APIAnswerTally: Sendable, Equatable {
    public var count: Int
    public var lastAt: Date
}
