import Synchronization

/// Which of a client's requests go out on a connection the API has already read a request from.
///
/// The API counts a start when it reads the request. On a connection it has only just accepted, that read comes
/// after the accept and the new channel's set-up: traced on a busy 2-core host, the first requests of a relay were
/// read up to 24 ms after their writes, while 59,280 requests on open connections were all read within 3.6 ms. The
/// budget's margin covers the second and not the first, so a start on a new connection is counted at its answer
/// instead (the API read it before answering).
///
/// AsyncHTTPClient's pool gives a request the idle connection that was returned most recently, and opens a new one
/// when none is idle (so the pool must not pre-warm: a connection it has just opened is the most recent idle one).
/// This keeps the instants at which this client's exchanges gave back a connection that stays open, most recent
/// last: a request takes the most recent one, and finds none when every connection it knows of is in use, was
/// closed, or has been idle for `idleLifetime`, long enough for either end to have closed it.
final class ProvenConnections: Sendable {
    /// Below common servers' keep-alive timeouts (5 s is Node.js's default) and the pool's own (60 s).
    static let defaultIdleLifetime: Duration = .seconds(4)

    let idleLifetime: Duration
    private let idleSince = Mutex<[ContinuousClock.Instant]>([])

    init(idleLifetime: Duration = defaultIdleLifetime) {
        self.idleLifetime = idleLifetime
    }

    /// Whether the request about to be handed to the pool goes out on a connection that has carried an exchange;
    /// if so, that connection is in use until `giveBack` or for good.
    func take(at now: ContinuousClock.Instant = .now) -> Bool {
        idleSince.withLock { idle in
            idle.removeAll { now - $0 >= idleLifetime }
            return idle.popLast() != nil
        }
    }

    /// An exchange ended with its connection open (answered in full, without `Connection: close`): the pool has
    /// it idle again.
    func giveBack(at now: ContinuousClock.Instant = .now) {
        idleSince.withLock { $0.append(now) }
    }
}
