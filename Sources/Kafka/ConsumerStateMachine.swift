/// The consumer's lifecycle and fetch control as one value: the poll thread, the reader and callers of
/// `KafkaConsumer` each report events to it under one lock, and it answers with what to do next.
///
/// ```
///            close()                  poll thread left the group
/// running ───────────> closing ─────────────────────────────────> closed
///    │  ▲                                                          ▲
///    │  └ assigned / revoking / revoked / reader demand / holds    │
///    └──────────────── fatal error (poll thread stops) ────────────┘
/// ```
///
/// Polling stops only briefly: while the reader's buffer is full or a caller holds fetching, the poll thread first
/// waits (up to `pauseGrace`) without polling, which costs nothing and is over in milliseconds on a fast path; once
/// the grace has passed it pauses the partitions in librdkafka and polls on, so rebalances are answered and
/// `max.poll.interval.ms` never passes however far behind the reader is. (Pausing at once would be simpler, but
/// librdkafka 2.0.2 discards its prefetched records on a pause and stalls up to a second before it fetches again.)
/// Partitions a caller paused are paused in librdkafka at once.
struct ConsumerStateMachine {
    enum Lifecycle {
        case running
        /// Close was requested; the poll thread leaves the group on its next turn.
        case closing
        case closed(Result<Void, KafkaError>)
    }

    /// What the poll thread does on its next turn.
    enum PollStep: Equatable {
        /// Poll, after pausing and resuming these partitions in librdkafka and forgetting the delivered positions of
        /// the `rewound` ones (a caller moved their fetch position).
        case poll(pause: [TopicPartition], resume: [TopicPartition], rewound: Set<TopicPartition>)
        /// Do not poll until woken or until `deadline`: fetching has just been stopped.
        case wait(until: ContinuousClock.Instant)
        case close
    }

    private(set) var lifecycle = Lifecycle.running
    private(set) var assignment: Set<TopicPartition> = []
    /// Whether the consumer received a first assignment (possibly empty) of its current membership.
    private(set) var hasJoined = false
    /// Whether the group took the assignment away (lost or a failed rebalance) and none came since.
    private(set) var hasLostAssignment = false
    /// A revocation delivered to the reader and not yet acknowledged.
    private(set) var pendingRevocation: PartitionRevocation?
    /// Whether the consumer is rejoining its group: an eager revocation released its partitions and no assignment
    /// has come since. A commit sent meanwhile waits behind the JoinGroup request and is answered with an illegal
    /// generation, on which librdkafka 2.0.2 forgets its generation: its next heartbeat then starts yet another
    /// rebalance (seen here: a relay stopping in a rebalance went through three of them, committing nothing).
    private(set) var isRejoining = false
    /// Whether the group's assignor is eager: every rebalance then revokes the whole assignment before the rejoin.
    let rebalancesEagerly: Bool
    private var readerHasDemand = true
    private var readerGone = false
    /// Counts demand signals, so that a full-buffer answer computed before one does not override it.
    private var demandGeneration = 0
    private var fetchHeld = false
    /// Since when the reader has had no demand or fetching has been held, while it lasts.
    private var stoppedSince: ContinuousClock.Instant?
    /// Whether that has lasted past the grace: partitions are then paused in librdkafka.
    private var fetchPaused = false
    let pauseGrace: Duration
    private var pausedByCaller: Set<TopicPartition> = []
    /// What librdkafka has paused now; changed only through `nextPollStep` and the rebalance events.
    private var pausedInLibrary: Set<TopicPartition> = []
    private var closeWaiters: [CheckedContinuation<Void, any Error>] = []
    private var rewound: Set<TopicPartition> = []

    var isReaderGone: Bool { readerGone }

    var isClosingOrClosed: Bool {
        if case .running = lifecycle { return false }
        return true
    }

    var isInGroup: Bool {
        guard case .running = lifecycle else { return false }
        return hasJoined
    }

    init(pauseGrace: Duration = .milliseconds(500), rebalancesEagerly: Bool = false) {
        self.pauseGrace = pauseGrace
        self.rebalancesEagerly = rebalancesEagerly
    }

    var membership: KafkaConsumerMembership {
        guard case .running = lifecycle else { return .left }
        if hasLostAssignment { return .assignmentLost }
        return hasJoined ? .member : .joining
    }

    private func shouldPause(_ partition: TopicPartition) -> Bool {
        fetchPaused || pausedByCaller.contains(partition)
    }

    // MARK: Reader

    var currentDemandGeneration: Int { demandGeneration }

    /// The reader asked for more events. Returns whether the poll thread must be woken (it waits, or fetching is
    /// paused).
    mutating func readerWantsMore() -> Bool {
        demandGeneration += 1
        readerHasDemand = true
        return stoppedSince != nil || !pausedInLibrary.isEmpty
    }

    /// The reader's buffer is full, unless the reader asked for more since `generation`.
    mutating func readerBufferFull(since generation: Int) {
        if demandGeneration == generation { readerHasDemand = false }
    }

    /// The reader stopped reading: events are discarded from now on and no revocation waits for it.
    mutating func readerTerminated() -> PartitionRevocation? {
        readerGone = true
        readerHasDemand = true
        defer { pendingRevocation = nil }
        return pendingRevocation
    }

    // MARK: Callers

    /// Returns whether the poll thread must be woken to apply the change.
    mutating func holdFetching(_ hold: Bool) -> Bool {
        guard fetchHeld != hold else { return false }
        fetchHeld = hold
        return true
    }

    mutating func pause(_ partitions: [TopicPartition]) {
        pausedByCaller.formUnion(partitions)
    }

    mutating func resume(_ partitions: [TopicPartition]) {
        pausedByCaller.subtract(partitions)
    }

    /// A caller moved the fetch position of `partition`: its records may come again.
    mutating func rewind(_ partition: TopicPartition) {
        rewound.insert(partition)
    }

    enum CloseAction {
        case wakePollThread
        case alreadyClosed(Result<Void, KafkaError>)
        case waitForPollThread
    }

    mutating func close(_ waiter: CheckedContinuation<Void, any Error>) -> (CloseAction, PartitionRevocation?) {
        switch lifecycle {
        case .closed(let result):
            return (.alreadyClosed(result), nil)
        case .closing:
            closeWaiters.append(waiter)
            return (.waitForPollThread, nil)
        case .running:
            closeWaiters.append(waiter)
            lifecycle = .closing
            defer { pendingRevocation = nil }
            return (.wakePollThread, pendingRevocation)
        }
    }

    // MARK: Poll thread

    mutating func nextPollStep(now: ContinuousClock.Instant = .now) -> PollStep {
        if case .closing = lifecycle { return .close }
        if !readerHasDemand || fetchHeld {
            let since = stoppedSince ?? now
            stoppedSince = since
            if !fetchPaused {
                if now - since < pauseGrace { return .wait(until: since + pauseGrace) }
                fetchPaused = true
            }
        } else {
            stoppedSince = nil
            fetchPaused = false
        }
        var pause: [TopicPartition] = []
        var resume: [TopicPartition] = []
        for partition in assignment {
            let paused = pausedInLibrary.contains(partition)
            if shouldPause(partition), !paused {
                pause.append(partition)
            } else if !shouldPause(partition), paused {
                resume.append(partition)
            }
        }
        pausedInLibrary.formUnion(pause)
        pausedInLibrary.subtract(resume)
        defer { rewound.removeAll() }
        return .poll(pause: pause, resume: resume, rewound: rewound)
    }

    /// librdkafka took `partitions` over. Returns those to pause before their first fetch.
    mutating func assigned(_ partitions: [TopicPartition]) -> [TopicPartition] {
        assignment.formUnion(partitions)
        hasJoined = true
        hasLostAssignment = false
        isRejoining = false
        let pause = partitions.filter { shouldPause($0) }
        pausedInLibrary.formUnion(pause)
        return pause
    }

    /// librdkafka is about to release `partitions`. Returns those to resume first: a pause would otherwise outlive
    /// the assignment in librdkafka and hold the partition back when it is assigned again. `revocation` is what the
    /// reader acknowledges, unless no acknowledgement is needed (closing, or nobody reading).
    mutating func revoking(_ partitions: [TopicPartition], revocation: PartitionRevocation) -> (
        resume: [TopicPartition], awaitAcknowledgement: Bool
    ) {
        let resume = partitions.filter { pausedInLibrary.contains($0) }
        pausedInLibrary.subtract(resume)
        let awaitAcknowledgement = !readerGone && !isClosingOrClosed
        if awaitAcknowledgement { pendingRevocation = revocation }
        return (resume, awaitAcknowledgement)
    }

    mutating func revoked(_ partitions: [TopicPartition]) {
        assignment.subtract(partitions)
        pendingRevocation = nil
        if rebalancesEagerly, case .running = lifecycle { isRejoining = true }
    }

    /// The group took the assignment away without a handover (librdkafka reports the revocation as lost).
    mutating func assignmentLost() {
        hasLostAssignment = true
    }

    /// The group dropped the whole assignment after a failed rebalance.
    mutating func assignmentDropped() {
        hasLostAssignment = true
        assignment.removeAll()
        pausedInLibrary.removeAll()
    }

    /// The poll thread left the group (or stopped on a fatal error). Returns the close callers to resume.
    mutating func closed(_ result: Result<Void, KafkaError>) -> [CheckedContinuation<Void, any Error>] {
        lifecycle = .closed(result)
        assignment.removeAll()
        pausedInLibrary.removeAll()
        hasJoined = false
        isRejoining = false
        defer { closeWaiters.removeAll() }
        return closeWaiters
    }
}
