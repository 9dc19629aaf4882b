import Synchronization

/// Returns `operation`'s result, or nil when `timeout` passes or the task is cancelled first. The operation is left
/// running past that, not cancelled: this bounds waits on blocking librdkafka calls, which cannot be cancelled, and
/// on a database client that may not answer a cancellation (a task group would wait for either).
public func withTimeout<Result: Sendable>(
    _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result? {
    let pending = Mutex<CheckedContinuation<Result?, any Error>?>(nil)
    let resume: @Sendable (Swift.Result<Result?, any Error>) -> Void = { result in
        pending.withLock { pending in
            defer { pending = nil }
            return pending
        }?.resume(with: result)
    }
    let timer = Mutex<Task<Void, Never>?>(nil)
    defer { timer.withLock { $0?.cancel() } }
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result?, any Error>) in
            pending.withLock { $0 = continuation }
            if Task.isCancelled { resume(.success(nil)) }
            Task {
                do { resume(.success(try await operation())) } catch { resume(.failure(error)) }
            }
            timer.withLock {
                $0 = Task {
                    try? await Task.sleep(for: timeout)
                    resume(.success(nil))
                }
            }
        }
    } onCancel: {
        resume(.success(nil))
    }
}
