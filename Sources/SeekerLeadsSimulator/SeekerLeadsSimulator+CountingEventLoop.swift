import Logging
import NIOCore
import NIOPosix

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
    public static func makeCountingEventLoopGroup(realtime: Bool = true, logger: Logger) async
        -> MultiThreadedEventLoopGroup
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        guard realtime else { return group }
        let refusal = try? await group.next().submit { () -> Int32 in
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
