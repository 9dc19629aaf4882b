import Metrics
import Synchronization

/// The client's metrics, created once. Label values are bounded: HTTP status codes, `timeout`,
/// `connection_error`.
final class ClientMetrics: Sendable {
    private let requestsByCode = Mutex<[String: Counter]>([:])
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
                let counter = Counter(label: "lead_relay_api_requests_total", dimensions: [("code", code)])
                counter.increment(by: 0)
                counters[code] = counter
            }
        }
    }

    func countRequest(code: String) {
        let counter = requestsByCode.withLock { counters -> Counter in
            if let existing = counters[code] { return existing }
            let created = Counter(label: "lead_relay_api_requests_total", dimensions: [("code", code)])
            counters[code] = created
            return created
        }
        counter.increment()
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
