/// Hand matchers for the contract's patterns and formats. Each one reads the UTF-8 bytes once and
/// anchors at both ends the way ECMA-262 does without the multiline flag: `$` is the end of the
/// string, so a trailing newline never matches (unlike Python's `re`, where `$` also matches before it).
enum LeadFormats {
    /// Unicode code points, as JSON Schema's minLength/maxLength count them (not grapheme clusters).
    static func codePointCount(_ text: String) -> Int {
        text.unicodeScalars.count
    }

    /// `^([0-9]{2})([1-9A-NP-Z]{10})$`
    static func isClassifiedId(_ text: String) -> Bool {
        withBytes(text) { bytes in
            guard bytes.count == 12, isDigit(bytes[0]), isDigit(bytes[1]) else { return false }
            for byte in bytes[2...] {
                switch byte {
                case UInt8(ascii: "1")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "N"),
                    UInt8(ascii: "P")...UInt8(ascii: "Z"):
                    continue
                default: return false
                }
            }
            return true
        }
    }

    /// `^[+]?[0-9() \/.\-]{6,21}[0-9]$`. `+` is outside the repeated class, so a leading `+` can only
    /// be the optional one; what follows is 6 to 21 class characters and a final digit.
    static func isPhoneNumber(_ text: String) -> Bool {
        withBytes(text) { bytes in
            let body = bytes.first == UInt8(ascii: "+") ? bytes.dropFirst() : bytes[...]
            guard (7...22).contains(body.count), let last = body.last, isDigit(last) else { return false }
            for byte in body {
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: " "),
                    UInt8(ascii: "/"), UInt8(ascii: "."), UInt8(ascii: "-"):
                    continue
                default: return false
                }
            }
            return true
        }
    }

    /// A practical RFC 5321 mailbox: an ASCII dot-atom local part of 1 to 64 bytes, exactly one `@`,
    /// and a host name of one or more LDH labels (1 to 63 bytes each, no leading or trailing hyphen);
    /// 254 bytes at most in all. Quoted local parts and address literals are refused.
    static func isEmail(_ text: String) -> Bool {
        withBytes(text) { bytes in
            guard bytes.count <= 254, let at = bytes.firstIndex(of: UInt8(ascii: "@")) else { return false }
            let local = bytes[..<at]
            let domain = bytes[(at + 1)...]
            return isDotAtom(local) && isHostName(domain)
        }
    }

    private static func isDotAtom(_ local: UnsafeBufferPointer<UInt8>.SubSequence) -> Bool {
        guard (1...64).contains(local.count), local.first != UInt8(ascii: "."), local.last != UInt8(ascii: ".")
        else { return false }
        var previous: UInt8 = 0
        for byte in local {
            if byte == UInt8(ascii: ".") {
                if previous == UInt8(ascii: ".") { return false }
            } else if !isAtext(byte) {
                return false
            }
            previous = byte
        }
        return true
    }

    private static func isAtext(_ byte: UInt8) -> Bool {
        if isAlphanumeric(byte) { return true }
        switch byte {
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"),
            UInt8(ascii: "="), UInt8(ascii: "?"), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
            UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func isHostName(_ domain: UnsafeBufferPointer<UInt8>.SubSequence) -> Bool {
        guard (1...253).contains(domain.count) else { return false }
        var labelLength = 0
        var previous: UInt8 = UInt8(ascii: ".")
        for byte in domain {
            if byte == UInt8(ascii: ".") {
                guard labelLength > 0, previous != UInt8(ascii: "-") else { return false }
                labelLength = 0
            } else {
                guard isAlphanumeric(byte) || (byte == UInt8(ascii: "-") && labelLength > 0) else { return false }
                labelLength += 1
                guard labelLength <= 63 else { return false }
            }
            previous = byte
        }
        return labelLength > 0 && previous != UInt8(ascii: "-")
    }

    /// RFC 3339 section 5.6 `date-time` as JSON Schema's format checker applies it (rfc3339-validator):
    /// `T`/`t` separator, `Z`/`z` or `±hh:mm` offset, a real calendar day (leap years included),
    /// year 0001 or later, seconds 00 to 59 (leap seconds are refused, as that validator does).
    static func isDateTime(_ text: String) -> Bool {
        withBytes(text) { bytes in
            guard bytes.count >= 20,
                let year = number(bytes, 0, 4), bytes[4] == UInt8(ascii: "-"),
                let month = number(bytes, 5, 2), bytes[7] == UInt8(ascii: "-"),
                let day = number(bytes, 8, 2),
                bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: "t"),
                let hour = number(bytes, 11, 2), bytes[13] == UInt8(ascii: ":"),
                let minute = number(bytes, 14, 2), bytes[16] == UInt8(ascii: ":"),
                let second = number(bytes, 17, 2)
            else { return false }
            guard year >= 1, (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
                hour <= 23, minute <= 59, second <= 59
            else { return false }
            var index = 19
            if bytes[index] == UInt8(ascii: ".") {
                index += 1
                let fractionStart = index
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
                guard index > fractionStart, index < bytes.count else { return false }
            }
            switch bytes[index] {
            case UInt8(ascii: "Z"), UInt8(ascii: "z"):
                return index + 1 == bytes.count
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                guard index + 6 == bytes.count, let offsetHour = number(bytes, index + 1, 2),
                    bytes[index + 3] == UInt8(ascii: ":"), let offsetMinute = number(bytes, index + 4, 2)
                else { return false }
                return offsetHour <= 23 && offsetMinute <= 59
            default:
                return false
            }
        }
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// W3C Trace Context `traceparent`: `vv-<32 hex>-<16 hex>-<2 hex>` in lower case, version not
    /// `ff`, trace id and parent id not all zeros. Only the version-00 layout is accepted.
    static func isTraceparent(_ text: String) -> Bool {
        withBytes(text) { bytes in
            guard bytes.count == 55, bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"),
                bytes[52] == UInt8(ascii: "-")
            else { return false }
            let fields = [0..<2, 3..<35, 36..<52, 53..<55]
            for field in fields where !bytes[field].allSatisfy(isLowerHex) { return false }
            let version = bytes[0..<2]
            let allZero: (UInt8) -> Bool = { $0 == UInt8(ascii: "0") }
            return !version.allSatisfy({ $0 == UInt8(ascii: "f") }) && !bytes[3..<35].allSatisfy(allZero)
                && !bytes[36..<52].allSatisfy(allZero)
        }
    }

    /// `application/json`, in any letter case, optionally followed by blanks and `;` parameters.
    static func isJSONMediaType(_ text: String) -> Bool {
        withBytes(text) { bytes in
            let expected = Array("application/json".utf8)
            guard bytes.count >= expected.count else { return false }
            for (offset, byte) in expected.enumerated() {
                // Letters match in either case; `/` must match exactly (its 0x20 bit is not a case bit).
                let actual = bytes[offset]
                guard byte == UInt8(ascii: "/") ? actual == byte : actual | 0x20 == byte else { return false }
            }
            var index = expected.count
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") {
                index += 1
            }
            guard index < bytes.count else { return true }
            guard bytes[index] == UInt8(ascii: ";") else { return false }
            return !bytes[index...].contains(where: { $0 == 0x0A || $0 == 0x0D })
        }
    }

    private static func withBytes(_ text: String, _ body: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        var text = text
        return text.withUTF8(body)
    }

    private static func number(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ length: Int) -> Int? {
        var value = 0
        for index in start..<(start + length) {
            guard isDigit(bytes[index]) else { return nil }
            value = value * 10 + Int(bytes[index] - UInt8(ascii: "0"))
        }
        return value
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private static func isLowerHex(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte | 0x20 >= UInt8(ascii: "a") && byte | 0x20 <= UInt8(ascii: "z"))
    }
}
