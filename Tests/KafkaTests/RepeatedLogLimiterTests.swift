import Testing

@testable import Kafka

@Suite struct RepeatedLogLimiterTests {
    @Test func aRepeatingConditionIsLoggedOnceAnIntervalWithItsCount() {
        let limiter = RepeatedLogLimiter(interval: .seconds(5))
        let start = ContinuousClock.now
        let refused =
            "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
        let refusedLater =
            "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 12ms in state CONNECT)"
        #expect(limiter.admit(refused, facility: "FAIL", now: start) == 0, "the first is logged")
        #expect(
            limiter.admit(refusedLater, facility: "FAIL", now: start + .seconds(1)) == nil, "only a duration differs")
        #expect(limiter.admit(refused, facility: "FAIL", now: start + .seconds(2)) == nil)
        #expect(
            limiter.admit("3/3 brokers are down", facility: "FAIL", now: start + .seconds(2)) == 0, "another condition")
        #expect(limiter.admit(refused, facility: "FAIL", now: start + .seconds(6)) == 2, "with the two dropped")
        #expect(limiter.admit(refused, facility: "FAIL", now: start + .seconds(7)) == nil)
    }
}
