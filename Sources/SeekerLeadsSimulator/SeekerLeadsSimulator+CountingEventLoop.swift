import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension SeekerLeadsSimulator {
    /// The event loop group to serve on, whose one thread reads request heads, and so takes the instants the
    /// budget is counted at. Shut it down after the application stopped.
    ///
    /// On a machine shared with the relays under test (two cores in CI), an ordinary thread can wait several
    /// milliseconds to run once a request has arrived. The reads it delays bunch together, and the count then finds
    /// a window fuller (or emptier) than the arrivals were: in runs of three relays sharing one budget, 11 reads
    /// within 194–200 ms where the relays had spaced their writes by 205 ms. So with `realtime` the thread asks for
    /// the real-time FIFO policy at a low priority where the system allows it (root, or `CAP_SYS_NICE`), as an
    /// API's own servers are not loaded by its clients. It reads and answers requests only, so it cannot starve
    /// the machine; where the policy is refused, it stays an ordinary thread and says so.
    ///
    /// Even so, on a virtual machine the host may hold the whole processor for tens of milliseconds (steal). The
    /// budget is therefore counted against how early each request can have arrived (`ReadDelayBound`), not when it
    /// was read.
    public static func makeCountingEventLoopGroup(realtime: Bool = true, logger: Logger) async
        -> CountingEventLoopGroup
    {
        let readDelay = ReadDelayBound()
        let group = CountingEventLoopGroup(
            group: MultiThreadedEventLoopGroup(numberOfThreads: 1, metricsDelegate: readDelay), readDelay: readDelay)
        readDelay.beat(on: group.group.next())
        guard realtime else { return group }
        let refusal = try? await group.group.next().submit { () -> Int32 in
            var parameters = sched_param(sched_priority: 10)
            // On Linux, process id 0 names the calling thread.
            return sched_setscheduler(0, SCHED_FIFO, &parameters) == 0 ? 0 : errno
        }.get()
        if let refusal, refusal != 0 {
            logger.notice(
                "the budget is counted on an ordinary thread: real-time scheduling was refused",
                metadata: ["errno": "\(refusal)"])
        }
        return group
    }
}

/// The one-thread event loop group the simulator serves on and counts the budget on.
public struct CountingEventLoopGroup: Sendable {
    public let group: MultiThreadedEventLoopGroup
    let readDelay: ReadDelayBound

    /// After the application stopped.
    public func shutdownGracefully() async throws {
        try await group.shutdownGracefully()
    }
}

/// How early a request read on the counting event loop can have arrived, from the ends of the loop's turns.
///
/// A NIO event loop turn waits for its sockets' events, handles them, then runs the tasks due (a tick), and reports
/// the tick's end to this delegate. A request read in a turn was not read in the turn before, so it had not arrived
/// when that turn's wait gathered its events, which was after the tick before it ended: it arrived after the
/// second-to-last tick end before its read. A beat every `beatInterval` keeps the turns short on an idle loop, so
/// on a loop that is not held up the bound is about two beats before the read; when the machine stalls the loop,
/// the bound stays where the loop stopped, before whatever arrived meanwhile.
///
/// Only reads on the counting loop are bounded. The bound assumes the channel reads whenever its socket is
/// readable, as Hummingbird's HTTP/1 channels do between requests; a request on a connection accepted in the
/// same turn may have arrived a turn earlier than its bound, which only makes the count stricter.
final class ReadDelayBound: NIOEventLoopMetricsDelegate {
    static let beatInterval = TimeAmount.milliseconds(1)

    private struct TickEnds {
        var eventLoop: (any EventLoop)?
        var previous: ContinuousClock.Instant?
        var last: ContinuousClock.Instant?
    }

    private let tickEnds = Mutex(TickEnds())

    /// Starts the beat on `eventLoop`, the group's one loop; it beats until the loop shuts down.
    func beat(on eventLoop: any EventLoop) {
        tickEnds.withLock { $0.eventLoop = eventLoop }
        eventLoop.scheduleRepeatedTask(initialDelay: Self.beatInterval, delay: Self.beatInterval) { _ in }
    }

    func processedTick(info: NIOEventLoopTickInfo) {
        let now = ContinuousClock.now
        tickEnds.withLock { ($0.previous, $0.last) = ($0.last, now) }
    }

    /// The earliest a request read at `readAt`, on the calling thread, can have arrived.
    func earliestArrival(ofReadAt readAt: ContinuousClock.Instant) -> ContinuousClock.Instant {
        tickEnds.withLock { tickEnds in
            guard let eventLoop = tickEnds.eventLoop, eventLoop.inEventLoop, let previous = tickEnds.previous else {
                return readAt
            }
            return min(previous, readAt)
        }
    }
}
