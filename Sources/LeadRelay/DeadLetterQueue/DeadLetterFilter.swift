import Foundation

/// Which dead letters a `lead-relay dlq` command selects: every condition given must hold; a list condition holds
/// when any of its values matches.
public struct DeadLetterFilter: Sendable, Equatable {
    public var reasons: [String] = []
    public var stages: [String] = []
    public var httpStatuses: [Int] = []
    /// Failed at or after.
    public var since: TimeBound?
    /// Failed at or before.
    public var until: TimeBound?
    public var sourcePartitions: [Int32] = []
    public var sourceOffsets: ClosedRange<Int64>?
    public var dedupeKeys: [String] = []

    public init() {}

    /// A point in time as an operator gives it: an RFC 3339 timestamp, or a duration before now (`90s`, `30m`,
    /// `24h`, `7d`, `1h30m`), resolved each time it is used.
    public enum TimeBound: Sendable, Equatable, CustomStringConvertible {
        case instant(Date)
        case ago(Duration)

        public init?(_ text: String) {
            if let date = RFC3339Timestamp.parse(text) {
                self = .instant(date)
            } else if let duration = Self.duration(text) {
                self = .ago(duration)
            } else {
                return nil
            }
        }

        func date(now: Date) -> Date {
            switch self {
            case .instant(let date): date
            case .ago(let duration): now.addingTimeInterval(-Double(duration.components.seconds))
            }
        }

        public var description: String {
            switch self {
            case .instant(let date): RFC3339Milliseconds.format(date)
            case .ago(let duration): "\(duration.components.seconds)s ago"
            }
        }

        private static func duration(_ text: String) -> Duration? {
            var seconds: Int64 = 0
            var number: Int64?
            for character in text {
                if let digit = character.wholeNumberValue {
                    let (times, overflow) = (number ?? 0).multipliedReportingOverflow(by: 10)
                    guard !overflow else { return nil }
                    number = times + Int64(digit)
                    continue
                }
                let unit: Int64
                switch character {
                case "s": unit = 1
                case "m": unit = 60
                case "h": unit = 3600
                case "d": unit = 86_400
                default: return nil
                }
                guard let value = number else { return nil }
                let (amount, overflow) = value.multipliedReportingOverflow(by: unit)
                guard !overflow else { return nil }
                seconds += amount
                number = nil
            }
            guard number == nil, !text.isEmpty else { return nil }
            return .seconds(seconds)
        }
    }

    public func matches(_ entry: DeadLetterEntry, now: Date) -> Bool {
        if !reasons.isEmpty, !reasons.contains(entry.reason ?? "") { return false }
        if !stages.isEmpty, !stages.contains(entry.stage ?? "") { return false }
        if !httpStatuses.isEmpty, !(entry.httpStatus.map { httpStatuses.contains($0) }).orFalse { return false }
        if let since, !(entry.failedAt.map { $0 >= since.date(now: now) }).orFalse { return false }
        if let until, !(entry.failedAt.map { $0 <= until.date(now: now) }).orFalse { return false }
        if !sourcePartitions.isEmpty, !(entry.source.map { sourcePartitions.contains($0.partition) }).orFalse {
            return false
        }
        if let sourceOffsets, !(entry.source.map { sourceOffsets.contains($0.offset) }).orFalse { return false }
        if !dedupeKeys.isEmpty, !(entry.dedupeKey.map { dedupeKeys.contains($0) }).orFalse { return false }
        return true
    }

    /// The conditions as text, the same for the same conditions however they were typed: names a replay's
    /// progress. A duration stays a duration, so that the same command run again is the same replay.
    var canonicalDescription: String {
        var parts: [String] = []
        func add(_ name: String, _ values: [String]) {
            if !values.isEmpty { parts.append("\(name)=\(values.sorted().joined(separator: ","))") }
        }
        add("reason", reasons)
        add("stage", stages)
        add("http-status", httpStatuses.map(String.init))
        add("since", since.map { [$0.canonicalText] } ?? [])
        add("until", until.map { [$0.canonicalText] } ?? [])
        add("source-partition", sourcePartitions.map(String.init))
        add("source-offset", sourceOffsets.map { ["\($0.lowerBound)-\($0.upperBound)"] } ?? [])
        add("key", dedupeKeys)
        return parts.joined(separator: ";")
    }
}

extension DeadLetterFilter.TimeBound {
    fileprivate var canonicalText: String {
        switch self {
        case .instant(let date): RFC3339Milliseconds.format(date)
        case .ago(let duration): "\(duration.components.seconds)s"
        }
    }
}

extension Optional<Bool> {
    fileprivate var orFalse: Bool { self ?? false }
}
