import Foundation
import Logging
import Synchronization

/// Where formatted log lines go. The default writes to standard error; tests collect lines in memory.
public protocol LogSink: Sendable {
    /// `line` carries no trailing newline.
    func write(line: String)
}

/// Standard error, one `write(2)` per line: lines from concurrent tasks do not interleave (pipes up to PIPE_BUF).
public struct StandardErrorSink: LogSink {
    public init() {}

    public func write(line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        bytes.withUnsafeBytes { buffer in
            guard let start = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let written = Foundation.write(2, start + offset, buffer.count - offset)
                if written < 0, errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

/// A swift-log handler printing one line per message: a JSON object (`ts`, `level`, `logger`, `msg`, then the
/// metadata flattened with dotted keys) or a human-readable text line.
///
/// As a defence in depth against a careless log call, email addresses and phone-number-like digit runs are replaced
/// by `[redacted]` in the message and metadata values, and metadata whose key names a credential is redacted whole.
public struct RelayLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: RelayConfiguration.LogFormat
    private let sink: any LogSink

    public init(
        label: String, level: Logger.Level, format: RelayConfiguration.LogFormat,
        sink: any LogSink = StandardErrorSink(),
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.sink = sink
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        var fields: [(String, String)] = []
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            Self.flatten(key: key, value: value, into: &fields)
        }
        let message = LogScrubber.scrub(event.message.description)
        let timestamp = RFC3339Milliseconds.format(Date())
        switch format {
        case .json:
            var line = "{\"ts\":"
            JSONText.appendString(timestamp, to: &line)
            line += ",\"level\":"
            JSONText.appendString(event.level.rawValue, to: &line)
            line += ",\"logger\":"
            JSONText.appendString(label, to: &line)
            line += ",\"msg\":"
            JSONText.appendString(message, to: &line)
            for (key, value) in fields {
                line += ","
                JSONText.appendString(Self.reservedFieldNames.contains(key) ? "meta." + key : key, to: &line)
                line += ":"
                JSONText.appendString(value, to: &line)
            }
            line += "}"
            sink.write(line: line)
        case .text:
            var line = "\(timestamp) \(event.level.rawValue.uppercased()) \(label): \(message)"
            for (key, value) in fields { line += " \(key)=\(value)" }
            sink.write(line: line)
        }
    }

    private static let reservedFieldNames: Set<String> = ["ts", "level", "logger", "msg"]

    private static func flatten(key: String, value: Logger.Metadata.Value, into fields: inout [(String, String)]) {
        if LogScrubber.isCredentialKey(key) {
            fields.append((key, LogScrubber.redacted))
            return
        }
        switch value {
        case .string(let string):
            fields.append((key, LogScrubber.scrub(string)))
        case .stringConvertible(let convertible):
            // Numbers are offsets, counts and durations: never personal data, and often long digit runs.
            if convertible is any BinaryInteger || convertible is any BinaryFloatingPoint {
                fields.append((key, convertible.description))
            } else {
                fields.append((key, LogScrubber.scrub(convertible.description)))
            }
        case .array(let values):
            let rendered = values.map { LogScrubber.scrub($0.description) }
            fields.append((key, "[" + rendered.joined(separator: ", ") + "]"))
        case .dictionary(let dictionary):
            for (innerKey, innerValue) in dictionary.sorted(by: { $0.key < $1.key }) {
                flatten(key: key + "." + innerKey, value: innerValue, into: &fields)
            }
        }
    }
}

/// Sets up swift-log for the process: call once, before anything logs.
public enum RelayLogging {
    public static func bootstrap(level: Logger.Level, format: RelayConfiguration.LogFormat) {
        LoggingSystem.bootstrap { label in RelayLogHandler(label: label, level: level, format: format) }
    }
}

/// Replaces personal data that slipped into a log line.
enum LogScrubber {
    static let redacted = "[redacted]"

    static func isCredentialKey(_ key: String) -> Bool {
        let lower = key.lowercased()
        return lower.contains("token") || lower.contains("secret") || lower.contains("password")
            || lower.contains("authorization")
    }

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
