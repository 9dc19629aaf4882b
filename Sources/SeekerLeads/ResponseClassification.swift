import AsyncHTTPClient
import Foundation
import NIOCore
import OpenAPIRuntime

enum HTTPStatusClass {
    /// 408, 429 and 5xx are worth retrying; other 4xx are not.
    static func isTransient(_ status: Int) -> Bool {
        status == 408 || status == 429 || (500..<600).contains(status)
    }
}

/// A request that got no HTTP answer, described without anything the request carried.
struct TransportFailure: CustomStringConvertible {
    /// `timeout` or `connection_error`: the metric's code dimension.
    let code: String
    let description: String

    init(_ error: any Error) {
        var underlying: any Error = error
        while let clientError = underlying as? ClientError {
            underlying = clientError.underlyingError
        }
        if let httpError = underlying as? HTTPClientError {
            let timeouts: [HTTPClientError] = [.readTimeout, .connectTimeout, .deadlineExceeded, .writeTimeout]
            code = timeouts.contains(httpError) ? "timeout" : "connection_error"
            description = "\(httpError)"
        } else if let channelError = underlying as? ChannelError, case .connectTimeout = channelError {
            code = "timeout"
            description = "\(channelError)"
        } else {
            code = "connection_error"
            description = String(describing: type(of: underlying)) + ": " + Self.safeDescription(of: underlying)
        }
    }

    /// Errors from the transport describe sockets and states, not request contents; the length
    /// bound keeps an unexpected large description out of the logs.
    private static func safeDescription(of error: any Error) -> String {
        String("\(error)".prefix(300))
    }
}

/// Reads `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3).
enum RetryAfter {
    static func delay(fromHeaderValue value: String, now: Date = Date()) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(trimmed), seconds >= 0 {
            return .seconds(seconds)
        }
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: trimmed) {
                return .seconds(max(0, date.timeIntervalSince(now)))
            }
        }
        return nil
    }
}
