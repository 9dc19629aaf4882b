import Foundation

extension Duration {
    /// Seconds as a `TimeInterval`, for Foundation and Dispatch APIs.
    public var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
