/// The conversions the clients' APIs need: Foundation, NIO and librdkafka take seconds or nanoseconds.
extension Duration {
    /// `seconds` rounded to the nearest nanosecond, so that a decimal such as 0.005 is exactly 5 ms.
    public init(timeInterval seconds: Double) {
        self = .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    /// The duration in seconds, as Foundation's `TimeInterval` counts them.
    public var timeInterval: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The duration in whole nanoseconds, truncated; wraps beyond about 292 years, which no timeout reaches.
    public var nanosecondsValue: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}
