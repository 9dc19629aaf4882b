import Synchronization

/// Whether a valid lead may still be left for the next run. Until it is let through to its first API attempt, or
/// found already submitted, nothing of it has left the relay: a shutdown or a revocation may abandon it (it stays
/// uncommitted and is delivered again) instead of waiting for the budget to reach it. Once committed it is
/// finished, because a lead that may have reached the API must get its outcome here.
final class LeadCommitment: Sendable {
    private enum State: UInt8 {
        case open = 0
        case committed = 1
        case abandoned = 2
    }

    private let state = Atomic<UInt8>(State.open.rawValue)

    /// True unless the lead was abandoned; from then on it cannot be.
    func commit() -> Bool {
        let (exchanged, original) = state.compareExchange(
            expected: State.open.rawValue, desired: State.committed.rawValue, ordering: .acquiringAndReleasing)
        return exchanged || original == State.committed.rawValue
    }

    /// Whether `abandon()` succeeded: nothing of the lead was sent.
    var isAbandoned: Bool { state.load(ordering: .acquiring) == State.abandoned.rawValue }

    /// True if the lead was still open: it will not be sent.
    func abandon() -> Bool {
        state.compareExchange(
            expected: State.open.rawValue, desired: State.abandoned.rawValue, ordering: .acquiringAndReleasing
        ).exchanged
    }
}
