import Testing

@testable import SeekerLeadsSimulator

/// The simulator's rate count, against how early each request can have arrived rather than when it was read.
@Suite struct BudgetCountingTests {
    /// Ten requests that arrived 21 ms apart but were read together, 250 ms after the first, by a stalled simulator:
    /// with an eleventh they are not surely within one window, so none breaks the rate. Read instants alone would
    /// count eleven within a millisecond.
    @Test func readsBunchedByAStalledSimulatorBreakTheRateOnlyWhereTheirArrivalsMust() {
        let state = SimulatorState(options: SimulatorOptions())
        let origin = ContinuousClock.now
        func admit(readAtMs: Int, earliestMs: Int) -> String? {
            let arrival = state.admit(
                readAt: origin + .milliseconds(readAtMs), earliestArrival: origin + .milliseconds(earliestMs))
            state.requestEnded()
            return arrival.violation
        }
        for index in 0..<10 {
            #expect(admit(readAtMs: 250, earliestMs: 21 * index) == nil)
        }
        // Within 200 ms of 251: the seven that arrived from 63 ms on, and this one.
        #expect(admit(readAtMs: 251, earliestMs: 250) == nil)
        #expect(admit(readAtMs: 252, earliestMs: 252) == nil)
        #expect(admit(readAtMs: 252, earliestMs: 252) == nil)
        #expect(admit(readAtMs: 252, earliestMs: 252) == "rate", "eleven arrived within (52, 252] ms")
        #expect(state.stats.maxStartsPerWindow == 11)
    }
}
