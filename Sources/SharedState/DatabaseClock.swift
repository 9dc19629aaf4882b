import Foundation

/// What this process knows of the database's clock against its own monotonic clock: bounds on the offset between
/// them, from the database's clock readings.
///
/// A query's readings were taken after the query was sent and before its answer arrived, so the offset (database
/// time minus local time) was at most `first reading - sent` and at least `last reading - answered` then. Between
/// readings the two clocks may drift apart by up to `driftRate` (seconds per second); every bound widens by that
/// much as it ages, and the tightest of all the readings' aged bounds is kept. Since every bound ages at the same
/// rate, each side's tightest bound is one number.
///
/// The bounds hold as long as neither clock is stepped; a reading that contradicts them (a stepped clock) starts
/// them over from that reading.
struct DatabaseClock: Sendable {
    /// Twice the most that NTP slews a clock (500 ppm), since each side may be slewed the other way.
    static let driftRate = 1e-3

    /// The origin of the local times, in seconds, that the bounds are kept in.
    private let origin: ContinuousClock.Instant
    /// The lower bound of the offset at local time `u` is `lowerKey - driftRate * u`.
    private var lowerKey: Double?
    /// The upper bound of the offset at local time `u` is `upperKey + driftRate * u`.
    private var upperKey: Double?

    init(origin: ContinuousClock.Instant = .now) {
        self.origin = origin
    }

    /// Takes in the database clock's readings `first` and `last` (the same one, when the query read it once), made
    /// by a query sent at `sent` whose answer arrived at `answered`.
    mutating func record(
        _ first: Date, _ last: Date? = nil, sent: ContinuousClock.Instant, answered: ContinuousClock.Instant
    ) {
        let (sentAt, answeredAt) = (local(sent), local(answered))
        let lower = (last ?? first).timeIntervalSince1970 - answeredAt + Self.driftRate * answeredAt
        let upper = first.timeIntervalSince1970 - sentAt - Self.driftRate * sentAt
        let merged = (lower: max(lower, lowerKey ?? lower), upper: min(upper, upperKey ?? upper))
        if merged.lower - Self.driftRate * answeredAt > merged.upper + Self.driftRate * answeredAt {
            (lowerKey, upperKey) = (lower, upper)
        } else {
            (lowerKey, upperKey) = merged
        }
    }

    /// The earliest local instant at which the database's clock is surely at or past `instant`.
    func localInstant(whenDatabaseReaches instant: Date) -> ContinuousClock.Instant? {
        guard let lowerKey else { return nil }
        // u + lowerKey - driftRate * u >= instant
        let seconds = (instant.timeIntervalSince1970 - lowerKey) / (1 - Self.driftRate)
        return origin + .seconds(seconds)
    }

    /// The latest the database's clock can read at the local instant `instant`.
    func latestDatabaseTime(at instant: ContinuousClock.Instant) -> Date? {
        guard let upperKey else { return nil }
        let u = local(instant)
        return Date(timeIntervalSince1970: u + upperKey + Self.driftRate * u)
    }

    /// How far apart the bounds are at the local instant `instant`: how much a start's report can overstate its
    /// write plus how late `localInstant(whenDatabaseReaches:)` can make a write, together.
    func uncertainty(at instant: ContinuousClock.Instant) -> Duration? {
        guard let lowerKey, let upperKey else { return nil }
        return .seconds(upperKey - lowerKey + 2 * Self.driftRate * local(instant))
    }

    private func local(_ instant: ContinuousClock.Instant) -> Double {
        (instant - origin).seconds
    }
}
