import RelayPrimitives
import TestSupport
import Testing

@testable import LeadRelay

@Suite struct CircuitBreakerTests {
    private func tinyBreaker(threshold: Int = 3) -> CircuitBreaker {
        CircuitBreaker(threshold: threshold, backoff: Backoff(base: .milliseconds(1), max: .milliseconds(2)))
    }

    @Test func opensAfterThresholdConsecutiveFailuresOnly() async throws {
        let breaker = tinyBreaker()
        var changes = breaker.stateChanges.makeAsyncIterator()
        breaker.recordTransientFailure(.normal)
        breaker.recordTransientFailure(.normal)
        breaker.recordSuccess()
        breaker.recordTransientFailure(.normal)
        breaker.recordTransientFailure(.normal)
        #expect(!breaker.isOpen)
        #expect(try await breaker.waitForPermission() == .normal)
        breaker.recordTransientFailure(.normal)
        #expect(breaker.isOpen)
        #expect(await changes.next() == .open)
    }

    @Test func onlyOneProbeAtATimeAndSuccessCloses() async throws {
        let breaker = tinyBreaker(threshold: 1)
        var changes = breaker.stateChanges.makeAsyncIterator()
        breaker.recordTransientFailure(.normal)
        #expect(await changes.next() == .open)

        let probe = try await breaker.waitForPermission()
        #expect(probe == .probe)
        let waiters = (0..<3).map { _ in Task { try await breaker.waitForPermission() } }
        try await waitUntil { breaker.waitingCount == 3 }

        // A failed probe lets exactly one waiter probe next, after the back-off.
        breaker.recordTransientFailure(.probe)
        #expect(breaker.isOpen)
        try await waitUntil { breaker.waitingCount == 2 }
        #expect(breaker.isOpen)

        breaker.recordSuccess()
        #expect(!breaker.isOpen)
        #expect(await changes.next() == .closed)
        var permissions: [CircuitBreaker.Permission] = []
        for waiter in waiters { permissions.append(try await waiter.value) }
        #expect(permissions.filter { $0 == .probe }.count == 1)
        #expect(permissions.filter { $0 == .normal }.count == 2)
        #expect(breaker.waitingCount == 0)
    }

    @Test func failuresOfRequestsStartedBeforeOpeningDoNotDelayProbes() async throws {
        let breaker = CircuitBreaker(threshold: 1, backoff: Backoff(base: .milliseconds(1), max: .seconds(3600)))
        breaker.recordTransientFailure(.normal)
        for _ in 0..<20 { breaker.recordTransientFailure(.normal) }
        // Had those counted as probe failures, the next probe would be an hour away.
        #expect(try await breaker.waitForPermission() == .probe)
    }

    @Test func abandonedProbeHandsOverAtOnce() async throws {
        let breaker = tinyBreaker(threshold: 1)
        breaker.recordTransientFailure(.normal)
        #expect(try await breaker.waitForPermission() == .probe)
        let next = Task { try await breaker.waitForPermission() }
        try await waitUntil { breaker.waitingCount == 1 }
        breaker.probeAbandoned()
        #expect(try await next.value == .probe)
    }

    @Test func cancelledWaiterThrowsAndLeavesNoTrace() async throws {
        let breaker = tinyBreaker(threshold: 1)
        breaker.recordTransientFailure(.normal)
        #expect(try await breaker.waitForPermission() == .probe)
        let waiter = Task { try await breaker.waitForPermission() }
        try await waitUntil { breaker.waitingCount == 1 }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(breaker.waitingCount == 0)
        let alreadyCancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await breaker.waitForPermission()
        }
        await #expect(throws: CancellationError.self) { try await alreadyCancelled.value }
    }

    @Test func backoffDoublesUpToTheCap() {
        let breaker = CircuitBreaker(threshold: 5, backoff: Backoff(base: .milliseconds(100), max: .seconds(1)))
        #expect(breaker.probeDelay(afterFailedProbes: 0) == .milliseconds(100))
        #expect(breaker.probeDelay(afterFailedProbes: 1) == .milliseconds(200))
        #expect(breaker.probeDelay(afterFailedProbes: 3) == .milliseconds(800))
        #expect(breaker.probeDelay(afterFailedProbes: 4) == .seconds(1))
        #expect(breaker.probeDelay(afterFailedProbes: 500) == .seconds(1))
    }
}
