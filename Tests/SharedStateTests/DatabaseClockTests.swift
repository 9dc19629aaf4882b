import Foundation
import Testing

@testable import SharedState

@Suite struct DatabaseClockTests {
    let origin = ContinuousClock.now
    /// The database's clock runs this far ahead of the local one in every test.
    let offset = 1_800_000_000.0

    func at(_ milliseconds: Int) -> ContinuousClock.Instant {
        origin + .milliseconds(milliseconds)
    }

    func reading(at local: Duration) -> Date {
        Date(timeIntervalSince1970: offset + local.timeInterval)
    }

    @Test func oneReadingBoundsTheOffsetByItsRoundTrip() {
        var clock = DatabaseClock(origin: origin)
        // Read 1 ms after the query was sent; the answer arrived 3 ms after it was sent.
        clock.record(reading(at: .milliseconds(11)), sent: at(10), answered: at(13))
        let target = reading(at: .milliseconds(20))
        // The reading may have been taken as late as the answer: the clock surely reaches the target 2 ms later
        // than it really does, plus the drift allowed over the 7 ms since the answer.
        let writable = clock.localInstant(whenDatabaseReaches: target)!
        let late = (writable - (origin + .milliseconds(20))).timeInterval
        #expect(late >= 0.002 && late < 0.002 + 1e-4)
        // And as early as the sending: at local 20 ms the database may read up to 1 ms past the truth.
        let latest = clock.latestDatabaseTime(at: origin + .milliseconds(20))!
        let ahead = latest.timeIntervalSince(target)
        #expect(ahead >= 0.001 && ahead < 0.001 + 1e-4)
        // The two together are the width of the bounds: the round trip, which a start's lag includes.
        let width = clock.uncertainty(at: at(20))!.timeInterval
        #expect(abs(width - (late + ahead)) < 1e-5)
        #expect(width >= 0.003 && width < 0.003 + 1e-4)
    }

    @Test func aQueryReadingTwiceBoundsEachSideByItsOwnReading() {
        var clock = DatabaseClock(origin: origin)
        // Read 1 ms after the sending and 1 ms before the answer, of a query answered 4 ms after it was sent.
        clock.record(reading(at: .milliseconds(11)), reading(at: .milliseconds(13)), sent: at(10), answered: at(14))
        let target = reading(at: .milliseconds(20))
        let late = (clock.localInstant(whenDatabaseReaches: target)! - at(20)).timeInterval
        let ahead = clock.latestDatabaseTime(at: at(20))!.timeIntervalSince(target)
        #expect(late >= 0.001 && late < 0.001 + 1e-4)
        #expect(ahead >= 0.001 && ahead < 0.001 + 1e-4)
    }

    @Test func readingsTightenTheBoundsAndAgeingLoosensThem() {
        var clock = DatabaseClock(origin: origin)
        // One reading taken at once (it bounds the offset from above tightly), one just before its answer (below).
        clock.record(reading(at: .milliseconds(10)), sent: at(10), answered: at(15))
        clock.record(reading(at: .milliseconds(24)), sent: at(20), answered: at(24))
        let now = origin + .milliseconds(30)
        let ahead = clock.latestDatabaseTime(at: now)!.timeIntervalSince(reading(at: .milliseconds(30)))
        let behind = (clock.localInstant(whenDatabaseReaches: reading(at: .milliseconds(30)))! - now).timeInterval
        #expect(ahead >= 0 && ahead < 1e-4)
        #expect(behind >= 0 && behind < 1e-4)
        // Ten seconds later with no reading, each bound has widened by the drift the clocks may have had since.
        let later = origin + .milliseconds(10_030)
        let aged = clock.latestDatabaseTime(at: later)!.timeIntervalSince(reading(at: .milliseconds(10_030)))
        #expect(abs(aged - DatabaseClock.driftRate * 10.02) < 1e-4)
    }

    @Test func aReadingThatContradictsTheBoundsStartsThemOver() {
        var clock = DatabaseClock(origin: origin)
        clock.record(reading(at: .milliseconds(10)), sent: at(10), answered: at(11))
        // The database's clock was stepped back by a second.
        let stepped = Date(timeIntervalSince1970: offset - 1 + 0.020)
        clock.record(stepped, sent: at(20), answered: at(21))
        let latest = clock.latestDatabaseTime(at: origin + .milliseconds(21))!
        #expect(abs(latest.timeIntervalSince(stepped) - 0.001) < 1e-4)
    }

    @Test func noReadingNoBounds() {
        let clock = DatabaseClock(origin: origin)
        #expect(clock.localInstant(whenDatabaseReaches: Date()) == nil)
        #expect(clock.latestDatabaseTime(at: .now) == nil)
        #expect(clock.uncertainty(at: .now) == nil)
    }
}
