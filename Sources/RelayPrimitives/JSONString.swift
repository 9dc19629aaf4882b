/// JSON string literals written the way RFC 8785 (and ECMAScript's `JSON.stringify`) writes them: `"` and `\`
/// escaped, control characters as short escapes or lower-case `\u00xx`, everything else as it is. The one JSON
/// escaper of the package: the API's canonical request bodies, result records, log lines and error lines.
public enum JSONString {
    /// Appends `value` as a quoted JSON string.
    public static func append(_ value: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0x08: appendShortEscape(UInt8(ascii: "b"), to: &bytes)
            case 0x09: appendShortEscape(UInt8(ascii: "t"), to: &bytes)
            case 0x0A: appendShortEscape(UInt8(ascii: "n"), to: &bytes)
            case 0x0C: appendShortEscape(UInt8(ascii: "f"), to: &bytes)
            case 0x0D: appendShortEscape(UInt8(ascii: "r"), to: &bytes)
            case 0..<0x20:
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                bytes.append(hexDigit(byte >> 4))
                bytes.append(hexDigit(byte & 0x0F))
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends `value` as a quoted JSON string; most strings need no escape and are appended as they are.
    public static func append(_ value: String, to text: inout String) {
        guard value.utf8.contains(where: needsEscaping) else {
            text += "\""
            text += value
            text += "\""
            return
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count + 8)
        append(value, to: &bytes)
        text += String(decoding: bytes, as: UTF8.self)
    }

    /// `value` as a quoted JSON string.
    public static func quoted(_ value: String) -> String {
        var text = ""
        append(value, to: &text)
        return text
    }

    private static func needsEscaping(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    private static func appendShortEscape(_ letter: UInt8, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\\"))
        bytes.append(letter)
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}
