import Synchronization

/// Lets one log line per condition through, then at most one every `interval` with the number of repeats in between:
/// an unreachable broker would otherwise log each refused connection attempt, several a second, until it is back.
/// A condition is the line with its digits removed (librdkafka's lines vary in durations and counters only).
final class RepeatedLogLimiter: Sendable {
    private struct Seen {
        var lastLogged: ContinuousClock.Instant
        var suppressed: Int
    }

    private let interval: Duration
    private let seen = Mutex<[String: Seen]>([:])

    init(interval: Duration = .seconds(5)) {
        self.interval = interval
    }

    /// nil when this line is to be dropped; otherwise how many like it were dropped since the last one logged.
    func admit(_ line: String, facility: String, now: ContinuousClock.Instant = .now) -> Int? {
        let condition = facility + ":" + String(line.unicodeScalars.filter { !("0"..."9").contains($0) })
        return seen.withLock { seen in
            guard var entry = seen[condition] else {
                if seen.count > 1000 { seen.removeAll() }
                seen[condition] = Seen(lastLogged: now, suppressed: 0)
                return 0
            }
            guard now - entry.lastLogged >= interval else {
                entry.suppressed += 1
                seen[condition] = entry
                return nil
            }
            defer { seen[condition] = Seen(lastLogged: now, suppressed: 0) }
            return entry.suppressed
        }
    }
}
