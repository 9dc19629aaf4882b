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

/// Which outcomes of a request leave open whether the API acted on it: the one place that decides it.
///
/// The API has no idempotency key, so a request that may have been stored is looked up before it is sent again.
public enum InDoubt {
    /// An HTTP answer. 500, 502 and 504 (and every other 5xx but 503) say nothing definite: the API, or a gateway
    /// in front of it, may have stored the lead before failing. 503 and 429 say it was not processed; 408 that
    /// the request was not read in time; other 4xx are rejections and 2xx acceptances.
    public static func isInDoubt(httpStatus status: Int) -> Bool {
        (500..<600).contains(status) && status != 503
    }

    /// No HTTP answer. Once the request head was written, a timeout or a dropped or reset connection may have come
    /// after the API read the request; before the write (no connection, a refused connect), nothing reached it.
    public static func isInDoubt(noAnswerAfterHeadWritten headWritten: Bool) -> Bool {
        headWritten
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
