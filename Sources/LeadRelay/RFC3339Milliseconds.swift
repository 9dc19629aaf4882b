import Foundation

/// RFC 3339 UTC timestamps with milliseconds, formatted without Foundation's slow date formatters.
enum RFC3339Milliseconds {
    /// Writes the digits itself: `String(format:)` was a tenth of the relay's CPU time on the no-API path,
    /// which stamps every result record.
    static func format(_ date: Date) -> String {
        let totalMilliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(totalMilliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var text: [UInt8] = Array("0000-00-00T00:00:00.000Z".utf8)
        func write(_ value: Int, digits: Int, endingAt end: Int) {
            var rest = value
            for position in stride(from: end, to: end - digits, by: -1) {
                text[position] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            }
        }
        write(Int(parts.tm_year) + 1900, digits: 4, endingAt: 3)
        write(Int(parts.tm_mon) + 1, digits: 2, endingAt: 6)
        write(Int(parts.tm_mday), digits: 2, endingAt: 9)
        write(Int(parts.tm_hour), digits: 2, endingAt: 12)
        write(Int(parts.tm_min), digits: 2, endingAt: 15)
        write(Int(parts.tm_sec), digits: 2, endingAt: 18)
        write(Int(totalMilliseconds % 1000), digits: 3, endingAt: 22)
        return String(decoding: text, as: UTF8.self)
    }
}
