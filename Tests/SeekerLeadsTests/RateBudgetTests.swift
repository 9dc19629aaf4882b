import Foundation
import RelayPrimitives
import Synchronization
import TestSupport
import Testing

@testable import SeekerLeads

@Suite struct RateBudgetTests {
    /// No `rateLimit + 1` starts within `window`: start k+limit is at least window after start k.
    static func startsRespectWindow(_ starts: [ContinuousClock.Instant], limit: Int, window: Duration) -> Bool {
        let sorted = starts.sorted()
        guard sorted.count > limit else { return true }
        return (limit..<sorted.count).allSatisfy { sorted[$0] - sorted[$0 - limit] >= window }
    }

    @Test func slidingWindowNeverExceeded() async throws {
        let configuration = RateBudgetConfiguration(
            maxInFlight: 100, rateLimit: 5, window: .milliseconds(50), margin: .zero)
        let budget = RateBudget(configuration: configuration)
        let starts = Locked<[ContinuousClock.Instant]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<40 {
                group.addTask {
                    let permit = try await budget.acquire()
                    starts.withLock { $0.append(permit.grantedAt) }
                    budget.release(permit)
                }
            }
            try await group.waitForAll()
        }
        let recorded = starts.withLock { $0 }
        #expect(recorded.count == 40)
        #expect(Self.startsRespectWindow(recorded, limit: 5, window: .milliseconds(50)))
    }

    @Test func startsAreSpreadEvenlyOverTheWindow() async throws {
        let budget = RateBudget(
            configuration: .init(maxInFlight: 100, rateLimit: 5, window: .milliseconds(50), margin: .zero))
        var starts: [ContinuousClock.Instant] = []
        for _ in 0..<6 {
            let permit = try await budget.acquire()
            budget.markStarted(permit, at: permit.grantedAt)
            starts.append(permit.grantedAt)
            budget.release(permit)
        }
        // One start per 10 ms on average; a start may make up for a late timer by at most half a step.
        for (earlier, later) in zip(starts, starts.dropFirst()) {
            #expect(later - earlier >= .milliseconds(5), "two starts came together")
        }
        #expect(starts[5] - starts[0] >= .milliseconds(50))
    }

    @Test func inFlightLimitHoldsUntilRelease() async throws {
        let budget = RateBudget(
            configuration: .init(maxInFlight: 2, rateLimit: 1000, window: .milliseconds(1), margin: .zero))
        let first = try await budget.acquire()
        _ = try await budget.acquire()
        let third = Task { try await budget.acquire() }
        try await waitUntil { budget.waiting == 1 }
        #expect(budget.inFlight == 2)
        budget.release(first)
        _ = try await third.value
        #expect(budget.inFlight == 2)
        #expect(budget.waiting == 0)
    }

    @Test func waitersAreServedInArrivalOrder() async throws {
        let budget = RateBudget(
            configuration: .init(maxInFlight: 1, rateLimit: 1000, window: .milliseconds(1), margin: .zero))
        let holder = try await budget.acquire()
        let order = Locked<[Int]>([])
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<20 {
            tasks.append(
                Task {
                    let permit = try await budget.acquire()
                    order.withLock { $0.append(index) }
                    budget.release(permit)
                }
            )
            // Enqueue one at a time so arrival order is known.
            try await waitUntil { budget.waiting == index + 1 }
        }
        budget.release(holder)
        for task in tasks { try await task.value }
        #expect(order.withLock { $0 } == Array(0..<20))
    }

    @Test func cancelledWaiterLeavesTheQueue() async throws {
        let budget = RateBudget(
            configuration: .init(maxInFlight: 1, rateLimit: 1000, window: .milliseconds(1), margin: .zero))
        let holder = try await budget.acquire()
        let cancelled = Task { try await budget.acquire() }
        try await waitUntil { budget.waiting == 1 }
        let next = Task { try await budget.acquire() }
        try await waitUntil { budget.waiting == 2 }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(budget.waiting == 1)
        budget.release(holder)
        _ = try await next.value
        #expect(budget.inFlight == 1)
    }

    @Test func holdDelaysEveryStart() async throws {
        let budget = RateBudget(configuration: .init())
        let holdUntil = ContinuousClock.now.advanced(by: .milliseconds(150))
        budget.hold(until: holdUntil)
        let permit = try await budget.acquire()
        #expect(permit.grantedAt >= holdUntil)
        budget.release(permit)
    }

    @Test func windowRunsFromTheReportedWrite() async throws {
        let window = Duration.milliseconds(20)
        let margin = Duration.milliseconds(1)
        let budget = RateBudget(configuration: .init(maxInFlight: 10, rateLimit: 1, window: window, margin: margin))
        let first = try await budget.acquire()
        let second = Task { try await budget.acquire() }
        try await waitUntil { budget.waiting == 1 }
        // The first request's head leaves well after the grant's window would have ended: until the
        // write is reported, its slot must keep the second one waiting.
        try await waitUntil { ContinuousClock.now > first.grantedAt.advanced(by: window * 3) }
        #expect(budget.waiting == 1)
        let writtenAt = ContinuousClock.now
        budget.markStarted(first, at: writtenAt)
        let secondPermit = try await second.value
        #expect(secondPermit.grantedAt >= writtenAt.advanced(by: window + margin))
        budget.release(first)
        budget.release(secondPermit)
    }

    @Test func anUnreportedStartCountsAtRelease() async throws {
        let window = Duration.milliseconds(20)
        let budget = RateBudget(configuration: .init(maxInFlight: 10, rateLimit: 1, window: window, margin: .zero))
        let first = try await budget.acquire()
        try await waitUntil { ContinuousClock.now > first.grantedAt.advanced(by: window * 2) }
        let releasedAt = ContinuousClock.now
        budget.release(first)
        let second = try await budget.acquire()
        #expect(second.grantedAt >= releasedAt.advanced(by: window))
        budget.release(second)
    }

    @Test func retryDelaysStayUnderTheCeiling() {
        let backoff = Backoff(base: .milliseconds(200), max: .seconds(30))
        #expect(backoff.delay(afterAttempt: 0) == .milliseconds(200))
        #expect(backoff.delay(afterAttempt: 1) == .milliseconds(200))
        #expect(backoff.delay(afterAttempt: 3) == .milliseconds(800))
        #expect(backoff.delay(afterAttempt: 40) == .seconds(30))
        #expect(backoff.delay(afterAttempt: Int.max) == .seconds(30))
        for attempt in 1...20 {
            let delay = backoff.jitteredDelay(afterAttempt: attempt)
            #expect(delay >= .zero && delay <= backoff.delay(afterAttempt: attempt))
        }
    }

    @Test func retryAfterParsesSecondsAndHTTPDate() throws {
        #expect(RetryAfter.delay(fromHeaderValue: "3") == .seconds(3))
        let now = Date(timeIntervalSince1970: 784_111_777)  // Sun, 06 Nov 1994 08:49:37 GMT
        let delay = try #require(RetryAfter.delay(fromHeaderValue: "Sun, 06 Nov 1994 08:49:47 GMT", now: now))
        #expect(delay == .seconds(10))
        #expect(RetryAfter.delay(fromHeaderValue: "soon") == nil)
    }

    @Test func authenticationDescriptionRedactsSecrets() {
        let auth = SeekerLeadsAuthentication.clientCredentials(
            tokenURL: "http://t", clientID: "id", clientSecret: "s3cr3t", audience: "a")
        #expect(!"\(auth)".contains("s3cr3t"))
        #expect(!String(reflecting: auth).contains("s3cr3t"))
        var dumped = ""
        dump(auth, to: &dumped)
        #expect(!dumped.contains("s3cr3t"))
        #expect(!"\(SeekerLeadsAuthentication.staticToken("tok3n"))".contains("tok3n"))
    }
}
