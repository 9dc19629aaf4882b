import Foundation

/// JSON string escaping as RFC 8259 requires, nothing more.
enum JSONText {
    static func appendString(_ string: String, to output: inout String) {
        output += "\""
        var needsEscaping = false
        for byte in string.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            needsEscaping = true
            break
        }
        guard needsEscaping else {
            output += string
            output += "\""
            return
        }
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20: output += String(format: "\\u%04x", scalar.value)
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }
}

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

/// Writes one flat JSON object field by field. The per-record path publishes a result for every
/// record, and this costs a fraction of what `JSONEncoder` does for the same object.
struct JSONObjectWriter {
    private var text = "{"
    private var isEmpty = true

    mutating func field(_ name: String, string value: String?) {
        guard let value else { return field(name, rawJSON: "null") }
        appendName(name)
        JSONText.appendString(value, to: &text)
    }

    mutating func field(_ name: String, integer value: Int) {
        field(name, rawJSON: String(value))
    }

    mutating func field(_ name: String, rawJSON value: String) {
        appendName(name)
        text += value
    }

    mutating func finish() -> String {
        text += "}"
        return text
    }

    private mutating func appendName(_ name: String) {
        if !isEmpty { text += "," }
        isEmpty = false
        JSONText.appendString(name, to: &text)
        text += ":"
    }
}
