import Synchronization

/// Returns `operation`'s result, or nil when `timeout` passes first. The operation is left running past the timeout:
/// this bounds waits on blocking librdkafka calls, which cannot be cancelled (a task group would wait for them).
func withTimeout<Result: Sendable>(
    _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result? {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result?, any Error>) in
        let pending = Mutex<CheckedContinuation<Result?, any Error>?>(continuation)
        let resume: @Sendable (Swift.Result<Result?, any Error>) -> Void = { result in
            pending.withLock { pending in
                defer { pending = nil }
                return pending
            }?.resume(with: result)
        }
        Task {
            do { resume(.success(try await operation())) } catch { resume(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: timeout)
            resume(.success(nil))
        }
    }
}
