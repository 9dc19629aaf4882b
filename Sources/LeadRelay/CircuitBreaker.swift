import Foundation
import RelayPrimitives
import Synchronization

/// Stops sending to an API that keeps failing, and finds out when it is back with one request at a time.
///
/// Closed, every caller may proceed. After `threshold` consecutive transient failures it opens: then one caller at a
/// time gets a `.probe` permission, the first after `backoff.base`, each next one after twice the previous pause (at
/// most `backoff.max`); the others wait. One success closes it. For credentials, an instance with threshold 1 opens on
/// the first authentication failure and stays open until a probe authenticates.
public final class CircuitBreaker: Sendable {
    public enum State: Sendable, Equatable {
        case closed
        case open
    }

    /// What a caller was allowed: report its outcome with the same value.
    public enum Permission: Sendable, Equatable {
        case normal
        case probe
    }

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct Status {
        var state = State.closed
        /// When it last opened; `nil` while closed.
        var openedAt: Date?
        var consecutiveFailures = 0
        var failedProbes = 0
        var probeInFlight = false
        var nextProbeAt = ContinuousClock.now
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        /// Callers between taking a waiter id and returning from `park`.
        var parking: Set<UInt64> = []
        /// Of those, the ones cancelled before they parked: they must not park.
        var cancelledBeforeParking: Set<UInt64> = []
        var wakeUp: Task<Void, Never>?

        mutating func takeWaiters() -> [Waiter] {
            defer { waiters = [] }
            return waiters
        }
    }

    public let threshold: Int
    public let backoff: Backoff
    /// Every change of state, in order. Meant for one consumer (the pipeline pauses and resumes partitions).
    public let stateChanges: AsyncStream<State>
    private let stateContinuation: AsyncStream<State>.Continuation
    private let status = Mutex(Status())

    public init(threshold: Int, backoff: Backoff) {
        self.threshold = max(1, threshold)
        self.backoff = backoff
        (stateChanges, stateContinuation) = AsyncStream.makeStream(of: State.self)
    }

    deinit {
        status.withLock { $0.wakeUp?.cancel() }
        stateContinuation.finish()
    }

    public var isOpen: Bool { status.withLock { $0.state == .open } }

    /// When the circuit opened, while it is open: readiness reports it.
    public var openSince: Date? { status.withLock { $0.openedAt } }

    /// Callers parked in `waitForPermission`.
    public var waitingCount: Int { status.withLock { $0.waiters.count } }

    /// The circuit as it stands, for the status page.
    public struct Snapshot: Sendable, Equatable {
        public var state: State
        /// When it opened, while open.
        public var openSince: Date?
        public var consecutiveFailures: Int
        /// Callers parked in `waitForPermission`.
        public var waiting: Int
        /// How long until the next probe may go, while open; zero when it may go now or one is out.
        public var nextProbeIn: Duration?
    }

    public func snapshot() -> Snapshot {
        let now = ContinuousClock.now
        return status.withLock { status in
            Snapshot(
                state: status.state, openSince: status.openedAt, consecutiveFailures: status.consecutiveFailures,
                waiting: status.waiters.count,
                nextProbeIn: status.state == .open ? max(.zero, status.nextProbeAt - now) : nil)
        }
    }

    /// Returns at once while closed; while open, waits until the circuit closes or this caller is the next probe.
    /// Throws `CancellationError` when the task is cancelled while waiting.
    public func waitForPermission() async throws -> Permission {
        while true {
            try Task.checkCancellation()
            let (permission, waiterID) = status.withLock { status -> (Permission?, UInt64) in
                if status.state == .closed { return (.normal, 0) }
                if !status.probeInFlight, ContinuousClock.now >= status.nextProbeAt {
                    status.probeInFlight = true
                    return (.probe, 0)
                }
                status.nextWaiterID += 1
                status.parking.insert(status.nextWaiterID)
                return (nil, status.nextWaiterID)
            }
            if let permission { return permission }
            try await park(waiterID)
        }
    }

    /// The API answered (any answer that is not a transient failure): closes the circuit.
    public func recordSuccess() {
        let (waiters, changed) = status.withLock { status -> ([Waiter], Bool) in
            status.consecutiveFailures = 0
            guard status.state == .open else { return ([], false) }
            status.state = .closed
            status.openedAt = nil
            status.failedProbes = 0
            status.probeInFlight = false
            status.wakeUp?.cancel()
            status.wakeUp = nil
            return (status.takeWaiters(), true)
        }
        for waiter in waiters { waiter.continuation.resume() }
        if changed { stateContinuation.yield(.closed) }
    }

    /// A transient failure. While open, only a probe's failure counts: it schedules the next probe further out.
    public func recordTransientFailure(_ permission: Permission) {
        let opened = status.withLock { status -> Bool in
            switch status.state {
            case .closed:
                status.consecutiveFailures += 1
                guard status.consecutiveFailures >= threshold else { return false }
                status.state = .open
                status.openedAt = Date()
                status.failedProbes = 0
                status.probeInFlight = false
                scheduleProbe(after: probeDelay(afterFailedProbes: 0), in: &status)
                return true
            case .open:
                guard permission == .probe, status.probeInFlight else { return false }
                status.probeInFlight = false
                status.failedProbes += 1
                scheduleProbe(after: probeDelay(afterFailedProbes: status.failedProbes), in: &status)
                return false
            }
        }
        if opened { stateContinuation.yield(.open) }
    }

    /// A probe ended without an answer (its task was cancelled): the next waiter may probe at once.
    public func probeAbandoned() {
        let waiters = status.withLock { status -> [Waiter] in
            guard status.state == .open, status.probeInFlight else { return [] }
            status.probeInFlight = false
            return status.takeWaiters()
        }
        for waiter in waiters { waiter.continuation.resume() }
    }

    /// The pause before the probe that follows `failedProbes` failed ones: base × 2^failedProbes, capped.
    func probeDelay(afterFailedProbes failedProbes: Int) -> Duration {
        backoff.delay(afterAttempt: failedProbes + 1)
    }

    private func scheduleProbe(after delay: Duration, in status: inout Status) {
        let deadline = ContinuousClock.now + delay
        status.nextProbeAt = deadline
        status.wakeUp?.cancel()
        status.wakeUp = Task { [weak self] in
            guard (try? await Task.sleep(until: deadline, clock: .continuous)) != nil else { return }
            self?.wakeWaiters()
        }
    }

    private func wakeWaiters() {
        let waiters = status.withLock { $0.takeWaiters() }
        for waiter in waiters { waiter.continuation.resume() }
    }

    /// Sleeps until woken by a change (probe due, probe ended, circuit closed) or cancelled.
    private func park(_ id: UInt64) async throws {
        defer {
            status.withLock { status in
                status.parking.remove(id)
                status.cancelledBeforeParking.remove(id)
            }
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = status.withLock { status -> Result<Void, any Error>? in
                    if status.cancelledBeforeParking.remove(id) != nil { return .failure(CancellationError()) }
                    // The situation may have changed since the caller looked: let it look again.
                    if status.state == .closed || (!status.probeInFlight && ContinuousClock.now >= status.nextProbeAt) {
                        return .success(())
                    }
                    status.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let parked = status.withLock { status -> Waiter? in
                guard let index = status.waiters.firstIndex(where: { $0.id == id }) else {
                    if status.parking.contains(id) { status.cancelledBeforeParking.insert(id) }
                    return nil
                }
                return status.waiters.remove(at: index)
            }
            parked?.continuation.resume(throwing: CancellationError())
        }
    }
}
