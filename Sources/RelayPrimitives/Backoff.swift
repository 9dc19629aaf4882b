/// Exponential back-off: the pause after failed attempt number `n` (1-based) is `base × 2^(n − 1)`, at most `max`.
/// Every retry loop of the relay uses it, with or without jitter.
public struct Backoff: Sendable, Equatable {
    /// The pause after the first failure.
    public var base: Duration
    /// The longest pause.
    public var max: Duration

    public init(base: Duration, max: Duration) {
        self.base = base
        self.max = Swift.max(base, max)
    }

    /// `base × 2^(attempt − 1)`, at most `max`; `base` for an attempt below 1.
    public func delay(afterAttempt attempt: Int) -> Duration {
        let doublings = Swift.min(Swift.max(attempt - 1, 0), 62)
        // Compared in floating point first: the exact product would overflow long before 2^62.
        guard base.timeInterval * Double(UInt64(1) << UInt64(doublings)) < max.timeInterval else { return max }
        return base * (1 << doublings)
    }

    /// Uniformly random between zero and `delay(afterAttempt:)` ("full jitter"), so that clients failing together
    /// do not retry together.
    public func jitteredDelay(afterAttempt attempt: Int) -> Duration {
        delay(afterAttempt: attempt) * Double.random(in: 0...1)
    }
}
