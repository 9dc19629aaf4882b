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
    static func format(_ date: Date) -> String {
        let totalMilliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(totalMilliseconds / 1000)
        let milliseconds = Int(totalMilliseconds % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), milliseconds)
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
