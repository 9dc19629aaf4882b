import Foundation

/// A directory for one test's files (databases, secrets, child processes' standard error), removed with the value.
public final class ScratchDirectory: Sendable {
    public let url: URL

    public init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("lead-relay-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `contents` to the file `name` in the directory; returns its path.
    @discardableResult
    public func write(_ contents: String, named name: String) throws -> String {
        let path = path(name)
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}
