import Kafka

/// Replaces personal data that slipped into a log line.
enum LogScrubber {
    static let redacted = "[redacted]"

    /// Metadata keys are judged by the same test as the configuration's names, so `accessToken`, `client_secret`
    /// or `Authorization` hide their whole value.
    static func isCredentialKey(_ key: String) -> Bool { KafkaConfiguration.isSecret(key) }

    /// Emails (any word with `@` inside) and runs of 7 or more digits written with separators (`+`, space, `-`, `.`,
    /// `/`, parentheses), as phone numbers are. Plain digit strings (offsets, epochs), decimals and ISO dates stay.
    static func scrub(_ text: String) -> String {
        var digits = 0
        var hasAt = false
        for byte in text.utf8 {
            if byte == UInt8(ascii: "@") {
                hasAt = true
                break
            }
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") { digits += 1 }
        }
        guard hasAt || digits >= 7 else { return text }
        var bytes = Array(text.utf8)
        if hasAt { bytes = redactEmails(bytes) }
        bytes = redactPhoneNumbers(bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func isEmailByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "%"),
            UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "'"):
            true
        default: byte >= 0x80
        }
    }

    private static func redactEmails(_ bytes: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "@") else {
                output.append(bytes[index])
                index += 1
                continue
            }
            var start = output.count
            while start > 0, isEmailByte(output[start - 1]) { start -= 1 }
            var end = index + 1
            while end < bytes.count, isEmailByte(bytes[end]) || bytes[end] == UInt8(ascii: "@") { end += 1 }
            if start < output.count, end > index + 1 {
                output.removeSubrange(start...)
                output.append(contentsOf: redacted.utf8)
                index = end
            } else {
                output.append(bytes[index])
                index += 1
            }
        }
        return output
    }

    private static func isPhoneSeparator(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: " "), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "("),
            UInt8(ascii: ")"):
            true
        default: false
        }
    }

    private static func isWordByte(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte | 0x20 >= UInt8(ascii: "a") && byte | 0x20 <= UInt8(ascii: "z"))
            || byte == UInt8(ascii: "_")
            || byte >= 0x80
    }

    private static func redactPhoneNumbers(_ bytes: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            let startsRun = isDigit(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "(")
            let precededByWord = index > 0 && (isWordByte(bytes[index - 1]) || bytes[index - 1] == UInt8(ascii: "-"))
            guard startsRun, !precededByWord, let end = phoneRunEnd(bytes, from: index) else {
                output.append(byte)
                index += 1
                continue
            }
            output.append(contentsOf: redacted.utf8)
            index = end
        }
        return output
    }

    /// The end of a phone-like run starting at `start`, or nil when the text there is not one.
    private static func phoneRunEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        var index = start
        var digits = 0
        var lastDigitEnd = start
        if bytes[index] == UInt8(ascii: "+") { index += 1 }
        while index < bytes.count {
            let byte = bytes[index]
            if isDigit(byte) {
                digits += 1
                lastDigitEnd = index + 1
            } else if isPhoneSeparator(byte) {
                // Two separators in a row end the number ("1 - 2") except around parentheses.
                if index > start, isPhoneSeparator(bytes[index - 1]), byte != UInt8(ascii: "("),
                    bytes[index - 1] != UInt8(ascii: ")")
                {
                    break
                }
            } else {
                break
            }
            index += 1
        }
        guard digits >= 7, lastDigitEnd > start else { return nil }
        if lastDigitEnd < bytes.count, isWordByte(bytes[lastDigitEnd]) { return nil }
        let run = bytes[start..<lastDigitEnd]
        let leadingPlus = bytes[start] == UInt8(ascii: "+")
        let innerSeparators = run.filter { isPhoneSeparator($0) }.count
        guard leadingPlus || innerSeparators > 0 else { return nil }
        if !leadingPlus, innerSeparators == 1, run.contains(UInt8(ascii: ".")) { return nil }
        if !leadingPlus, isISODate(run) { return nil }
        return lastDigitEnd
    }

    private static func isISODate(_ run: ArraySlice<UInt8>) -> Bool {
        let text = Array(run)
        guard text.count == 10, text[4] == UInt8(ascii: "-"), text[7] == UInt8(ascii: "-") else { return false }
        return text.enumerated().allSatisfy { position, byte in position == 4 || position == 7 || isDigit(byte) }
    }
}
