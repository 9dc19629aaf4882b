import Foundation
import SeekerLeads
import Synchronization

/// The two reasons to hold every submission: an API that keeps failing transiently (the circuit)
/// and credentials that the API refuses. While either holds, one lead at a time probes with
/// back-off, and the relay pauses its partitions.
final class SubmissionGates: Sendable {
    private let circuit: CircuitBreaker
    private let credentials: CircuitBreaker
    private let metrics: RelayMetrics
    private let readiness: Readiness
    private let lastHolding = Mutex(false)
    /// Attempts between their permission and their outcome. The API client waits for its budget after
    /// the permission: without this bound every lead the relay holds could pass the gates while the
    /// circuit is closed and then, queued for the budget, go out after it opened.
    private let attemptSlots: AsyncSlots

    init(
        circuit: CircuitBreaker, credentials: CircuitBreaker, maxConcurrentAttempts: Int, metrics: RelayMetrics,
        readiness: Readiness
    ) {
        self.circuit = circuit
        self.credentials = credentials
        self.attemptSlots = AsyncSlots(capacity: maxConcurrentAttempts)
        self.metrics = metrics
        self.readiness = readiness
        readiness.set(Readiness.circuit, passing: !circuit.isOpen)
    }

    var isHoldingSubmissions: Bool { circuit.isOpen || credentials.isOpen }

    /// The API's circuit and the credentials' one, as they stand.
    func snapshot() -> (circuit: CircuitBreaker.Snapshot, credentials: CircuitBreaker.Snapshot) {
        (circuit.snapshot(), credentials.snapshot())
    }

    /// Gates for the attempts of one lead: each attempt's permissions are reported with its outcome.
    func attemptGate() -> AttemptGate { AttemptGate(gates: self) }

    /// Follows both breakers until cancelled: keeps the metrics and readiness true and tells
    /// `onHoldingChange` each time submissions start or stop being held.
    func followChanges(_ onHoldingChange: @escaping @Sendable (Bool) async -> Void) async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await state in self.circuit.stateChanges {
                    self.metrics.setCircuitOpen(state == .open)
                    self.readiness.set(
                        Readiness.circuit, passing: state == .closed,
                        reason: state == .open
                            ? Readiness.circuitOpenReason(since: self.circuit.openSince ?? Date()) : "")
                    await self.reportHolding(onHoldingChange)
                }
            }
            group.addTask {
                for await state in self.credentials.stateChanges {
                    self.metrics.setAuthFailing(state == .open)
                    self.readiness.set(
                        Readiness.credentials, passing: state == .closed,
                        reason: state == .open ? "the API refuses the credentials" : "")
                    await self.reportHolding(onHoldingChange)
                }
            }
        }
    }

    private func reportHolding(_ onHoldingChange: @Sendable (Bool) async -> Void) async {
        let holding = isHoldingSubmissions
        let changed = lastHolding.withLock { last in
            defer { last = holding }
            return last != holding
        }
        if changed { await onHoldingChange(holding) }
    }

    final class AttemptGate: Sendable {
        private let gates: SubmissionGates
        private let permissions = Mutex<(credentials: CircuitBreaker.Permission, circuit: CircuitBreaker.Permission)>(
            (.normal, .normal))

        fileprivate init(gates: SubmissionGates) { self.gates = gates }

        /// Every permission given is followed by exactly one `observe`, which gives the slot back.
        func waitForPermission() async throws {
            try await gates.attemptSlots.acquire()
            let credentialsPermission: CircuitBreaker.Permission
            let circuitPermission: CircuitBreaker.Permission
            do {
                credentialsPermission = try await gates.credentials.waitForPermission()
                do {
                    circuitPermission = try await gates.circuit.waitForPermission()
                } catch {
                    if credentialsPermission == .probe { gates.credentials.probeAbandoned() }
                    throw error
                }
            } catch {
                gates.attemptSlots.release()
                throw error
            }
            permissions.withLock { $0 = (credentialsPermission, circuitPermission) }
        }

        /// Gives a permission back unused (the lead was abandoned after it was let through).
        func withdraw() {
            defer { gates.attemptSlots.release() }
            let (credentialsPermission, circuitPermission) = permissions.withLock { $0 }
            if credentialsPermission == .probe { gates.credentials.probeAbandoned() }
            if circuitPermission == .probe { gates.circuit.probeAbandoned() }
        }

        func observe(_ outcome: SubmissionAttemptOutcome) {
            defer { gates.attemptSlots.release() }
            let (credentialsPermission, circuitPermission) = permissions.withLock { $0 }
            switch outcome {
            case .accepted, .rejected:
                gates.credentials.recordSuccess()
                gates.circuit.recordSuccess()
            case .authenticationFailed:
                gates.credentials.recordTransientFailure(credentialsPermission)
                gates.circuit.recordSuccess()
            case .transient:
                gates.circuit.recordTransientFailure(circuitPermission)
                if credentialsPermission == .probe { gates.credentials.probeAbandoned() }
            }
        }
    }
}
