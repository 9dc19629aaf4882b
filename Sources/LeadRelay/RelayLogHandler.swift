import Foundation
import Logging
import RelayPrimitives

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
            JSONString.append(timestamp, to: &line)
            line += ",\"level\":"
            JSONString.append(event.level.rawValue, to: &line)
            line += ",\"logger\":"
            JSONString.append(label, to: &line)
            line += ",\"msg\":"
            JSONString.append(message, to: &line)
            for (key, value) in fields {
                line += ","
                JSONString.append(Self.reservedFieldNames.contains(key) ? "meta." + key : key, to: &line)
                line += ":"
                JSONString.append(value, to: &line)
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
