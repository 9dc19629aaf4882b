import Testing

@testable import Kafka

/// The consumer's lifecycle and fetch control, as a value: no broker, no threads.
@Suite struct ConsumerStateMachineTests {
    let p0 = TopicPartition(topic: "t", partition: 0)
    let p1 = TopicPartition(topic: "t", partition: 1)

    @Test func aFullReaderBufferPausesEveryAssignedPartitionAndDemandResumesThem() {
        var machine = ConsumerStateMachine(pauseGrace: .zero)
        let answer1 = machine.assigned([p0, p1])
        #expect(answer1.isEmpty, "fetching while the reader wants more")
        let answer2 = machine.nextPollStep()
        #expect(answer2 == .poll(pause: [], resume: [], rewound: []))

        machine.readerBufferFull(since: machine.currentDemandGeneration)
        guard case .poll(let pause, let resume, _) = machine.nextPollStep() else {
            Issue.record("a full buffer must not stop polling")
            return
        }
        #expect(Set(pause) == [p0, p1])
        #expect(resume.isEmpty)
        let answer3 = machine.nextPollStep()
        #expect(answer3 == .poll(pause: [], resume: [], rewound: []), "each pause is applied once")

        let answer4 = machine.readerWantsMore()
        #expect(answer4, "resuming needs the poll thread awake")
        guard case .poll(let pauseAgain, let resumed, _) = machine.nextPollStep() else { return }
        #expect(pauseAgain.isEmpty)
        #expect(Set(resumed) == [p0, p1])
    }

    @Test func demandThatArrivedWhileTheBufferFilledWins() {
        var machine = ConsumerStateMachine(pauseGrace: .zero)
        _ = machine.assigned([p0])
        let generation = machine.currentDemandGeneration
        _ = machine.readerWantsMore()
        machine.readerBufferFull(since: generation)
        let answer5 = machine.nextPollStep()
        #expect(answer5 == .poll(pause: [], resume: [], rewound: []))
    }

    @Test func partitionsAssignedWhileFetchingIsHeldArePausedBeforeTheirFirstFetch() {
        var machine = ConsumerStateMachine(pauseGrace: .zero)
        let answer6 = machine.holdFetching(true)
        #expect(answer6)
        let answer7 = machine.holdFetching(true)
        #expect(!answer7, "no change, no wake-up")
        _ = machine.nextPollStep()
        let answer8 = machine.assigned([p0])
        #expect(answer8 == [p0])
        let answer9 = machine.nextPollStep()
        #expect(answer9 == .poll(pause: [], resume: [], rewound: []))
        let answer10 = machine.holdFetching(false)
        #expect(answer10)
        let answer11 = machine.nextPollStep()
        #expect(answer11 == .poll(pause: [], resume: [p0], rewound: []))
    }

    @Test func aCallersPauseOutlivesARevocationAndHoldsThePartitionWhenItComesBack() {
        var machine = ConsumerStateMachine(pauseGrace: .zero)
        _ = machine.assigned([p0, p1])
        machine.pause([p0])
        let answer12 = machine.nextPollStep()
        #expect(answer12 == .poll(pause: [p0], resume: [], rewound: []))
        let (resume, awaitAcknowledgement) = machine.revoking([p0], revocation: PartitionRevocation())
        #expect(resume == [p0], "released unpaused, so librdkafka keeps no pause of it")
        #expect(awaitAcknowledgement)
        machine.revoked([p0])
        #expect(machine.assignment == [p1])
        let answer13 = machine.assigned([p0])
        #expect(answer13 == [p0])
        machine.resume([p0])
        let answer14 = machine.nextPollStep()
        #expect(answer14 == .poll(pause: [], resume: [p0], rewound: []))
    }

    /// Between an eager revocation's release and the next assignment the consumer rejoins, and sends no commit.
    @Test(arguments: [true, false]) func anEagerConsumerRejoinsFromItsRevocationToItsNextAssignment(eager: Bool) {
        var machine = ConsumerStateMachine(pauseGrace: .zero, rebalancesEagerly: eager)
        _ = machine.assigned([p0, p1])
        #expect(!machine.isRejoining)
        _ = machine.revoking([p0, p1], revocation: PartitionRevocation())
        #expect(!machine.isRejoining, "the reader may still commit what it finished before acknowledging")
        machine.revoked([p0, p1])
        #expect(machine.isRejoining == eager)
        _ = machine.assigned([])
        #expect(!machine.isRejoining, "an empty assignment ends the rejoin too")
    }

    @Test func aConsumerLeavingItsGroupIsNotRejoiningIt() async throws {
        var machine = ConsumerStateMachine(pauseGrace: .zero, rebalancesEagerly: true)
        _ = machine.assigned([p0])
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            _ = machine.close(continuation)
            machine.revoked([p0])
            #expect(!machine.isRejoining)
            for closer in machine.closed(.success(())) { closer.resume() }
        }
    }

    @Test func aRevocationWaitsForTheReaderOnlyWhileOneReadsAndTheConsumerRuns() {
        var machine = ConsumerStateMachine(pauseGrace: .zero)
        _ = machine.assigned([p0])
        let revocation = PartitionRevocation()
        let answer15 = machine.revoking([p0], revocation: revocation)
        #expect(answer15.awaitAcknowledgement)
        let answer16 = machine.readerTerminated()
        #expect(answer16 === revocation, "a reader that left releases the waiting revocation")
        let answer17 = machine.revoking([p0], revocation: PartitionRevocation())
        #expect(!answer17.awaitAcknowledgement)
    }

    @Test func closeTurnsTheNextStepIntoCloseAndALaterCloseGetsTheResult() async throws {
        var machine = ConsumerStateMachine(pauseGrace: .zero)
        _ = machine.assigned([])
        #expect(machine.isInGroup, "an empty assignment is membership too")
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let (action, revocation) = machine.close(continuation)
            #expect(revocation == nil)
            if case .wakePollThread = action {} else { Issue.record("the first close wakes the poll thread") }
            let answer18 = machine.nextPollStep()
            #expect(answer18 == .close)
            #expect(!machine.isInGroup)
            for closer in machine.closed(.success(())) { closer.resume() }
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            guard case (.alreadyClosed(let result), _) = machine.close(continuation) else {
                Issue.record("a closed consumer answers at once")
                continuation.resume()
                return
            }
            continuation.resume(with: result.mapError { $0 as any Error })
        }
    }

    @Test func aShortStopOnlyWaitsAndALongOnePausesInLibrdkafka() {
        var machine = ConsumerStateMachine(pauseGrace: .milliseconds(500))
        _ = machine.assigned([p0])
        let start = ContinuousClock.now
        _ = machine.holdFetching(true)
        let first = machine.nextPollStep(now: start)
        #expect(first == .wait(until: start + .milliseconds(500)), "no pause, no poll: the hold may end soon")
        _ = machine.holdFetching(false)
        let afterShortHold = machine.nextPollStep(now: start + .milliseconds(100))
        #expect(afterShortHold == .poll(pause: [], resume: [], rewound: []), "nothing was paused in librdkafka")

        _ = machine.holdFetching(true)
        let waiting = machine.nextPollStep(now: start + .seconds(1))
        #expect(waiting == .wait(until: start + .seconds(1) + .milliseconds(500)))
        let pausing = machine.nextPollStep(now: start + .seconds(2))
        #expect(pausing == .poll(pause: [p0], resume: [], rewound: []), "past the grace: pause, and poll on")
        let polling = machine.nextPollStep(now: start + .seconds(3))
        #expect(polling == .poll(pause: [], resume: [], rewound: []))
    }

    /// What readiness reports: joining until the first assignment, lost until the next one, left once closed.
    @Test func membershipFollowsAssignmentsAndTheirLoss() {
        var machine = ConsumerStateMachine()
        #expect(machine.membership == .joining)
        _ = machine.assigned([])
        #expect(machine.membership == .member, "an empty assignment is membership")
        machine.assignmentLost()
        #expect(machine.membership == .assignmentLost)
        _ = machine.assigned([p0])
        #expect(machine.membership == .member)
        machine.assignmentDropped()
        #expect(machine.membership == .assignmentLost)
        _ = machine.assigned([p0])
        _ = machine.closed(.success(()))
        #expect(machine.membership == .left)
    }
}
