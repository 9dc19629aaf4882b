import Synchronization

/// Outcomes counted in process, for the demo's progress line and summary.
public final class OutcomeTally: Sendable {
    private let counts = Mutex([RelayMetrics.Outcome: Int]())

    public init() {}

    func add(_ outcome: RelayMetrics.Outcome) {
        counts.withLock { $0[outcome, default: 0] += 1 }
    }

    public func count(of outcome: RelayMetrics.Outcome) -> Int {
        counts.withLock { $0[outcome, default: 0] }
    }

    public var total: Int { counts.withLock { $0.values.reduce(0, +) } }
}
