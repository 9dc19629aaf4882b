import Foundation
import NIOCore
import NIOPosix
import SeekerLeadsSimulator
import TestSupport
import Testing

@testable import SeekerLeads

/// Grants every request at once, dated `datedAhead` later, and keeps, for each permit, its instant and when its start
/// was counted.
final class RecordingBudget: RequestBudget {
    struct Start: Sendable {
        var grantedAt: ContinuousClock.Instant
        var countedAt: ContinuousClock.Instant?
    }

    private let state = Locked<(nextID: UInt64, starts: [UInt64: Start])>((0, [:]))
    private let datedAhead: Duration

    init(datedAhead: Duration = .zero) {
        self.datedAhead = datedAhead
    }

    /// The starts in the order they were granted.
    var starts: [Start] {
        state.withLock { state in state.starts.sorted { $0.key < $1.key }.map(\.value) }
    }

    func acquire() async throws -> BudgetPermit {
        let now = ContinuousClock.now + datedAhead
        let id = state.withLock { state in
            state.nextID += 1
            state.starts[state.nextID] = Start(grantedAt: now)
            return state.nextID
        }
        return BudgetPermit(waited: .zero, grantedAt: now, id: id)
    }

    func markStarted(_ permit: BudgetPermit, at instant: ContinuousClock.Instant) {
        state.withLock { $0.starts[permit.id]?.countedAt = instant }
    }

    func release(_ permit: BudgetPermit) {}

    func hold(until instant: ContinuousClock.Instant) {}

    func snapshot() -> BudgetSnapshot {
        BudgetSnapshot(
            scope: "test", inFlight: 0, groupInFlight: nil, startsInLastWindow: 0, waiting: 0, holdRemaining: nil)
    }
}

@Suite struct StartCountingTests {
    @Test func aConnectionIsProvenOnceItsExchangeGaveItBackAndUntilItHasIdledTooLong() {
        let connections = ProvenConnections(idleLifetime: .seconds(4))
        let start = ContinuousClock.now
        #expect(!connections.take(at: start), "a new pool has no connection that carried an exchange")

        connections.giveBack(at: start)
        connections.giveBack(at: start + .seconds(3))
        #expect(connections.take(at: start + .seconds(3.5)))
        #expect(connections.take(at: start + .seconds(3.5)))
        #expect(!connections.take(at: start + .seconds(3.5)), "both connections are in use")

        connections.giveBack(at: start + .seconds(10))
        connections.giveBack(at: start + .seconds(13))
        #expect(connections.take(at: start + .seconds(14)), "the one given back last has idled 1 s")
        #expect(!connections.take(at: start + .seconds(14)), "the other has idled 4 s: it may be closed")
    }

    /// Against the simulator answering after 1 s: a start on a connection the client has not used yet counts when
    /// its answer arrives (at least 1 s after its grant); one on a connection given back by an earlier exchange
    /// counts at its write (at least 1 s before its own answer).
    @Test func aStartOnANewConnectionCountsAtItsAnswerAndOnAnOpenOneAtItsWrite() async throws {
        let latency = Duration.seconds(1)
        var faults = SimulatorFaults()
        faults.latencyMs = 1000
        let budget = RecordingBudget()
        let fixture = try await SimulatorFixture.start(faults: faults, oauth: false, budget: budget)
        let client = fixture.client
        var answeredAt: [ContinuousClock.Instant] = []

        for index in 0..<2 {
            let outcome = try await client.submitLead(requestBody: validLeadBody(index), traceparent: nil)
            answeredAt.append(.now)
            guard case .accepted = outcome else { Issue.record("lead \(index): \(outcome)"); return }
        }
        let pair = try await withThrowingTaskGroup(of: ContinuousClock.Instant.self) { group in
            for index in 2..<4 {
                group.addTask {
                    _ = try await client.submitLead(requestBody: validLeadBody(index), traceparent: nil)
                    return .now
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        try await fixture.stop()

        let starts = budget.starts
        try #require(starts.count == 4 && starts.allSatisfy { $0.countedAt != nil }, "\(starts)")
        let counted = starts.map { $0.countedAt! }
        #expect(counted[0] >= starts[0].grantedAt + latency, "the first request opened the connection")
        #expect(counted[1] <= answeredAt[1] - latency, "the second reused it")
        let lastAnswer = pair.max()!
        let onNew = (2..<4).filter { counted[$0] >= starts[$0].grantedAt + latency }
        let onOpen = (2..<4).filter { counted[$0] <= lastAnswer - latency }
        #expect(onNew.count == 1 && onOpen.count == 1 && onNew != onOpen, "one connection was open, one was opened")
        let stats = await fixture.simulator.stats()
        #expect(stats.leadsStored == 4)
    }

    /// A permit handed over before its instant: the request is built at once, but its head is not written before
    /// the instant (the second lead goes on the connection the first opened, so its start counts at its write).
    @Test func aRequestIsNotWrittenBeforeItsPermitsInstant() async throws {
        let budget = RecordingBudget(datedAhead: .milliseconds(300))
        let fixture = try await SimulatorFixture.start(oauth: false, budget: budget)
        for index in 0..<2 {
            let outcome = try await fixture.client.submitLead(requestBody: validLeadBody(index), traceparent: nil)
            guard case .accepted = outcome else { Issue.record("lead \(index): \(outcome)"); break }
        }
        try await fixture.stop()
        let starts = budget.starts
        try #require(starts.count == 2 && starts.allSatisfy { $0.countedAt != nil }, "\(starts)")
        for start in starts {
            #expect(start.countedAt! >= start.grantedAt, "written \(start.grantedAt - start.countedAt!) early")
        }
    }

    /// Cancelled while its permit's instant is still to come, a request goes nowhere.
    @Test func aRequestCancelledBeforeItsPermitsInstantIsNotSent() async throws {
        let budget = RecordingBudget(datedAhead: .seconds(30))
        let fixture = try await SimulatorFixture.start(oauth: false, budget: budget)
        let client = fixture.client
        let submission = Task { try await client.submitLead(requestBody: validLeadBody(0), traceparent: nil) }
        try await waitUntil { budget.starts.count == 1 }
        submission.cancel()
        _ = try? await submission.value
        let stats = await fixture.simulator.stats()
        try await fixture.stop()
        #expect(stats.leadsStored == 0)
        #expect(budget.starts.allSatisfy { $0.countedAt == nil }, "no head was written")
    }

    /// An event loop shut down while a start waits for its instant: the caller is told, and nothing starts.
    @Test(.timeLimit(.minutes(1))) func aStartWaitingForItsInstantFailsWhenItsEventLoopShutsDown() async throws {
        let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let eventLoop = eventLoopGroup.next()
        let starts = Locked(0)
        let start = DueStart(on: eventLoop, notBefore: .now + .seconds(30)) {
            starts.withLock { $0 += 1 }
            return UnusedExchange()
        }
        // Tasks run on the loop in order: once this one has, the start waits on the loop's timer.
        try await eventLoop.submit {}.get()
        try await eventLoopGroup.shutdownGracefully()
        await #expect(throws: EventLoopError.self) { try await start.started() }
        #expect(starts.withLock { $0 } == 0)
    }
}

private struct UnusedExchange: CancellableExchange {
    func cancel() {}
}
