import Foundation

/// A condition did not hold in time.
public struct TimedOut: Error, CustomStringConvertible {
    public var what: String
    public var description: String { "timed out waiting for \(what)" }

    public init(what: String) {
        self.what = what
    }
}

/// Polls `condition` until it yields a value; the deadline only bounds a failing test, it never
/// decides a passing one.
public func waitFor<T>(
    _ what: String, timeout: Duration = .seconds(60), every interval: Duration = .milliseconds(10),
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await condition() { return value }
        if ContinuousClock.now >= deadline { throw TimedOut(what: what) }
        try await Task.sleep(for: interval)
    }
}

/// `waitFor` for a plain condition.
public func waitUntil(
    _ what: String = "the condition", timeout: Duration = .seconds(60), every interval: Duration = .milliseconds(10),
    _ condition: () async throws -> Bool
) async throws {
    _ = try await waitFor(what, timeout: timeout, every: interval) { try await condition() ? true : nil }
}

/// A name no other test uses, for topics, groups and namespaces.
public func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}
