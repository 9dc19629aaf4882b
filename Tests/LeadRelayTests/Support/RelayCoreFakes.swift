import Foundation
import LeadEvents
import LeadRelayDemo
import Logging
import Prometheus
import RelayPrimitives
import SeekerLeads
import ServiceLifecycle
import SharedState
import Synchronization
import TestSupport

@testable import Kafka
@testable import LeadRelay

/// A group member played by the test: it hands the relay the records, assignments and revocations the test gives it
/// and keeps every commit the relay makes.
final class InMemoryConsumer: RelayConsumer {
    private struct State {
        var committed: [TopicPartition: Int64] = [:]
        var commitsToRefuse = 0
        var refusedCommits = 0
        var assignment: Set<TopicPartition> = []
        var closed = false
    }

    let events: AsyncStream<KafkaConsumerEvent>
    private let continuation: AsyncStream<KafkaConsumerEvent>.Continuation
    private let state = Mutex(State())

    init() {
        (events, continuation) = AsyncStream.makeStream(of: KafkaConsumerEvent.self)
    }

    func subscribe(topics: [String]) throws {}

    /// Nothing is fetched ahead here: the test delivers each record itself.
    func holdFetching(_ hold: Bool) {}

    func commitAndWait(_ offsets: [TopicPartition: Int64], timeout: Duration) async throws -> Bool {
        state.withLock { state in
            if state.commitsToRefuse > 0 {
                state.commitsToRefuse -= 1
                state.refusedCommits += 1
                return false
            }
            state.committed.merge(offsets) { max($0, $1) }
            return true
        }
    }

    func close(timeout: Duration) async throws -> Bool {
        state.withLock { $0.closed = true }
        continuation.finish()
        return true
    }

    func assignment() -> Set<TopicPartition> { state.withLock { $0.assignment } }

    func positions() -> [TopicPartition: KafkaPartitionPosition] { [:] }

    func committedOffsets(timeout: Duration) async throws -> [TopicPartition: Int64]? { committed }

    // MARK: The test's side

    /// The next offset to read of each partition, as committed and acknowledged.
    var committed: [TopicPartition: Int64] { state.withLock { $0.committed } }
    var refusedCommits: Int { state.withLock { $0.refusedCommits } }
    var isClosed: Bool { state.withLock { $0.closed } }

    /// The group refuses the next `count` commits, as a broker does while the group rebalances.
    func refuseCommits(_ count: Int) {
        state.withLock { $0.commitsToRefuse = count }
    }

    func assign(_ partitions: [TopicPartition]) {
        state.withLock { $0.assignment.formUnion(partitions) }
        continuation.yield(.partitionsAssigned(partitions))
    }

    func deliver(_ records: [KafkaConsumerRecord]) {
        continuation.yield(.records(records))
    }

    /// Revokes `partitions` and returns once the relay acknowledged it, as librdkafka waits before it releases them.
    func revoke(_ partitions: [TopicPartition], lost: Bool = false) async throws {
        let revocation = PartitionRevocation()
        continuation.yield(.partitionsRevoked(partitions, revocation, lost: lost))
        try await waitUntil("the relay acknowledged the revocation of \(partitions)") { revocation.isAcknowledged }
        state.withLock { $0.assignment.subtract(partitions) }
    }
}

/// A broker that keeps every record written to it, by topic; it can fail the next writes.
final class InMemoryProducer: OutcomeProducer {
    struct Message: Sendable {
        var topic: String
        var key: [UInt8]?
        var value: [UInt8]?
        var headers: [KafkaHeader]

        func header(_ name: String) -> String? {
            headers.last { $0.key == name }?.value.map { String(decoding: $0, as: UTF8.self) }
        }
    }

    private struct State {
        var messages: [Message] = []
        var writesToFail = 0
        var failedWrites = 0
        var closed = false
    }

    private let state = Mutex(State())

    func send(topic: String, partition: Int32?, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader])
        async throws -> KafkaDeliveryReport
    {
        try write(Message(topic: topic, key: key, value: value, headers: headers)).get()
    }

    /// Answers later, on a task of its own, as librdkafka answers on its poll thread.
    func enqueue(
        topic: String, partition: Int32?, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader],
        onDelivery: @escaping @Sendable (Result<KafkaDeliveryReport, KafkaError>) -> Void
    ) throws {
        let result = write(Message(topic: topic, key: key, value: value, headers: headers))
        Task { onDelivery(result) }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    func flush(timeout: Duration) async throws {}

    func close(flushTimeout: Duration) async {
        state.withLock { $0.closed = true }
    }

    private func write(_ message: Message) -> Result<KafkaDeliveryReport, KafkaError> {
        state.withLock { state in
            if state.closed { return .failure(.state("producer is closed")) }
            if state.writesToFail > 0 {
                state.writesToFail -= 1
                state.failedWrites += 1
                return .failure(.state("write failed (test)"))
            }
            let offset = Int64(state.messages.filter { $0.topic == message.topic }.count)
            state.messages.append(message)
            return .success(KafkaDeliveryReport(topic: message.topic, partition: 0, offset: offset))
        }
    }

    // MARK: The test's side

    func messages(of topic: String) -> [Message] {
        state.withLock { $0.messages.filter { $0.topic == topic } }
    }

    var failedWrites: Int { state.withLock { $0.failedWrites } }

    func failWrites(_ count: Int) {
        state.withLock { $0.writesToFail = count }
    }
}

/// The API as the test scripts it: each request's answer is chosen by its lead's classifiedId. Keeps every request
/// it received, in order.
final class ScriptedSubmitter: LeadSubmitter, LeadListing {
    enum Answer: Sendable {
        case accept
        case reject(httpStatus: Int)
        /// No answer until the test releases the lead (or the relay cancels it).
        case holdUntilReleased
        /// The first post is stored (and listed) but answered with a 502; later posts are accepted.
        case storeThenAnswer502
        /// The first post is answered with a 502 and not stored; later posts are accepted.
        case answer502WithoutStoring
    }

    private struct State {
        var answers: [String: Answer] = [:]
        var received: [String] = []
        var released: Set<String> = []
        var heldRequests: [String: CheckedContinuation<Void, any Error>] = [:]
        var stored: [ListedLead] = []
        var listings = 0
    }

    private let state = Mutex(State())
    private let defaultAnswer: Answer

    init(defaultAnswer: Answer = .accept) {
        self.defaultAnswer = defaultAnswer
    }

    func submitLeadRetrying(
        requestBody: [UInt8], traceparent: String?, deadline: ContinuousClock.Instant?,
        beforeAttempt: @Sendable () async throws -> Void,
        mayWrite: @escaping @Sendable () -> Bool,
        afterAttempt: @Sendable (SubmissionAttemptOutcome) async -> Void
    ) async throws -> (outcome: SubmissionAttemptOutcome, attempts: Int) {
        var attempts = 0
        while true {
            let outcome = try await attempt(
                requestBody: requestBody, beforeAttempt: beforeAttempt, mayWrite: mayWrite, afterAttempt: afterAttempt)
            attempts += 1
            // As the real client retries transient outcomes (here at once).
            guard outcome.isTransient else { return (outcome, attempts) }
        }
    }

    private func attempt(
        requestBody: [UInt8], beforeAttempt: @Sendable () async throws -> Void,
        mayWrite: @escaping @Sendable () -> Bool, afterAttempt: @Sendable (SubmissionAttemptOutcome) async -> Void
    ) async throws -> SubmissionAttemptOutcome {
        try await beforeAttempt()
        guard mayWrite() else { throw SubmissionWithdrawn() }
        let classifiedID = Self.classifiedID(of: requestBody)
        let (answer, sequence) = state.withLock { state in
            state.received.append(classifiedID)
            let answer = state.answers[classifiedID] ?? defaultAnswer
            switch answer {
            case .storeThenAnswer502:
                state.answers[classifiedID] = .accept
                state.stored.append(Self.listed(requestBody, leadId: Self.leadID(of: classifiedID)))
            case .answer502WithoutStoring:
                state.answers[classifiedID] = .accept
            case .accept:
                state.stored.append(Self.listed(requestBody, leadId: Self.leadID(of: classifiedID)))
            case .reject, .holdUntilReleased: break
            }
            return (answer, state.received.count)
        }
        let outcome: SubmissionAttemptOutcome
        switch answer {
        case .storeThenAnswer502, .answer502WithoutStoring:
            outcome = .transient(httpStatus: 502, description: "HTTP 502", retryAfter: nil, inDoubt: true)
        case .accept:
            outcome = .accepted(requestId: "request-\(sequence)", title: "Lead \(classifiedID)", httpStatus: 201)
        case .reject(let httpStatus):
            outcome = .rejected(
                httpStatus: httpStatus, problem: nil, rawBody: "", detailsJSON: #"[{"field":"email"}]"#)
        case .holdUntilReleased:
            do {
                try await waitForRelease(of: classifiedID)
            } catch {
                // As the real client: a request cut short is a transient attempt, observed, and the cancellation
                // then ends the retries.
                await afterAttempt(
                    .transient(httpStatus: nil, description: "cancelled", retryAfter: nil, inDoubt: false))
                throw error
            }
            outcome = .accepted(requestId: "request-\(sequence)", title: "Lead \(classifiedID)", httpStatus: 201)
        }
        await afterAttempt(outcome)
        return outcome
    }

    func checkCredentials() async -> Bool { true }

    func listLeads(ingestedFrom from: Date, to: Date) async throws -> [ListedLead] {
        state.withLock { state in
            state.listings += 1
            return state.stored
        }
    }

    private static func listed(_ body: [UInt8], leadId: String) -> ListedLead {
        let object = (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]) ?? [:]
        return ListedLead(
            leadId: leadId, classifiedId: object["classifiedId"] as? String, email: object["email"] as? String,
            firstName: object["firstName"] as? String, lastName: object["lastName"] as? String,
            message: object["message"] as? String)
    }

    /// Until `release(classifiedID)`, or throws when the relay cancels the submission.
    private func waitForRelease(of classifiedID: String) async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let answerNow = state.withLock { state -> Bool in
                    if state.released.contains(classifiedID) { return true }
                    state.heldRequests[classifiedID] = continuation
                    return false
                }
                if answerNow { continuation.resume() }
                // A cancellation that came before the continuation was stored found nothing to resume.
                if Task.isCancelled { cancelHeldRequest(classifiedID) }
            }
        } onCancel: {
            cancelHeldRequest(classifiedID)
        }
    }

    private func cancelHeldRequest(_ classifiedID: String) {
        state.withLock { $0.heldRequests.removeValue(forKey: classifiedID) }?.resume(throwing: CancellationError())
    }

    /// The id the API gives a lead it stores: one per classifiedId, whatever order the requests come in.
    static func leadID(of classifiedID: String) -> String { "lead-\(classifiedID)" }

    private static func classifiedID(of body: [UInt8]) -> String {
        let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
        return object?["classifiedId"] as? String ?? ""
    }

    // MARK: The test's side

    /// The classifiedId of every request, in the order they arrived.
    var received: [String] { state.withLock { $0.received } }

    /// How many times the relay listed the API's leads.
    var listings: Int { state.withLock { $0.listings } }

    func answer(_ classifiedID: String, with answer: Answer) {
        state.withLock { $0.answers[classifiedID] = answer }
    }

    func release(_ classifiedID: String) {
        state.withLock { state in
            state.released.insert(classifiedID)
            return state.heldRequests.removeValue(forKey: classifiedID)
        }?.resume()
    }

    /// Whether a request for this lead is being held now.
    func isHolding(_ classifiedID: String) -> Bool {
        state.withLock { $0.heldRequests[classifiedID] != nil }
    }
}

/// The dedupe memory in a dictionary.
final class InMemorySubmissionStore: SubmissionStore {
    private let leads = Mutex<[String: SubmittedLead]>([:])
    /// Keys another relay holds, and the waits for them to end.
    private let heldElsewhere = Mutex<(keys: Set<String>, waiters: [CheckedContinuation<Void, Never>])>(([], []))

    /// Until `finishElsewhere`, `key` is another relay's: reserving it finds it held.
    func holdElsewhere(_ key: String) {
        heldElsewhere.withLock { _ = $0.keys.insert(key) }
    }

    /// The other relay's claim of the lead's key ends with its submission.
    func finishElsewhere(_ lead: SubmittedLead) {
        leads.withLock { $0[lead.dedupeKey] = lead }
        let waiters = heldElsewhere.withLock { held in
            held.keys.remove(lead.dedupeKey)
            defer { held.waiters = [] }
            return held.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    var waitsForOtherRelays: Int { heldElsewhere.withLock { $0.waiters.count } }

    /// The next `count` reservations fail after the store saw them, as a claim whose answer was lost does.
    func loseAnswers(ofNextReservations count: Int) {
        reservations.withLock { $0.answersToLose = count }
    }

    /// The token of every reservation asked for, by key, in order.
    var reservationTokens: [String: [ClaimToken]] { reservations.withLock { $0.tokens } }

    private let reservations = Mutex<(answersToLose: Int, tokens: [String: [ClaimToken]])>((0, [:]))

    private struct AnswerLost: Error {}

    func submissions(forKeys keys: Set<String>, now: Date) async throws -> [String: SubmittedLead] {
        leads.withLock { leads in leads.filter { keys.contains($0.key) } }
    }

    func reserve(_ key: String, for position: RecordPosition, token: ClaimToken, renewing: LeadReservation?)
        async throws -> LeadReservationOutcome
    {
        let answerLost = reservations.withLock { reservations in
            reservations.tokens[key, default: []].append(token)
            defer { reservations.answersToLose = max(0, reservations.answersToLose - 1) }
            return reservations.answersToLose > 0
        }
        if answerLost { throw AnswerLost() }
        if heldElsewhere.withLock({ $0.keys.contains(key) }) {
            return .heldElsewhere(
                HeldClaim(
                    dedupeKey: key, owner: "another-relay",
                    inputRecord: InputRecord(topic: position.topic, partition: 9, offset: 0), remaining: .seconds(5)))
        }
        if let earlier = leads.withLock({ $0[key] }) { return .submitted(earlier) }
        return .reserved(.local)
    }

    func recordSubmitted(_ lead: SubmittedLead, under reservation: LeadReservation) async throws {
        leads.withLock { $0[lead.dedupeKey] = lead }
    }

    func release(_ key: String, _ reservation: LeadReservation) async throws {}

    func abandon(_ key: String, _ reservation: LeadReservation) async throws {}

    func waitUntilReleased(_ held: HeldClaim) async throws {
        await withCheckedContinuation { waiter in
            let stillHeld = heldElsewhere.withLock { state in
                guard state.keys.contains(held.dedupeKey) else { return false }
                state.waiters.append(waiter)
                return true
            }
            if !stillHeld { waiter.resume() }
        }
    }

    func purgeExpired(now: Date) async throws -> Int { 0 }

    var all: [String: SubmittedLead] { leads.withLock { $0 } }
}

/// A `RelayService` over the in-memory parts, run in a service group as `lead-relay run` runs it.
struct InProcessRelay {
    static let inputTopic = "leads.in"
    static let resultsTopic = "leads.results"
    static let deadLetterTopic = "leads.dlq"

    let consumer = InMemoryConsumer()
    let producer = InMemoryProducer()
    let submitter: ScriptedSubmitter
    let store: InMemorySubmissionStore
    let registry = PrometheusCollectorRegistry()
    let relay: RelayService
    private let group: ServiceGroup

    init(
        submitter: ScriptedSubmitter = ScriptedSubmitter(), store: InMemorySubmissionStore = InMemorySubmissionStore(),
        maxInFlight: Int = 10, maxPendingRecords: Int = 100, shutdownTimeout: Duration = .seconds(10)
    ) {
        self.submitter = submitter
        self.store = store
        var logger = Logger(label: "relay-core-tests")
        logger.logLevel = .critical
        let metrics = RelayMetrics(factory: RelayMetricsFactory(registry: registry))
        let readiness = Readiness(flags: [Readiness.credentials])
        let backoff = Backoff(base: .milliseconds(10), max: .milliseconds(100))
        let gates = SubmissionGates(
            circuit: CircuitBreaker(threshold: 5, backoff: backoff),
            credentials: CircuitBreaker(threshold: 1, backoff: backoff),
            maxConcurrentAttempts: maxInFlight, metrics: metrics, readiness: readiness)
        let processor = RecordProcessor(
            decoder: LeadEventDecoder(), dedupeStore: store, exclusivity: KeyedExclusivity(), submitter: submitter,
            gates: gates,
            publisher: OutcomePublisher(
                producer: producer, resultsTopic: Self.resultsTopic, deadLetterTopic: Self.deadLetterTopic,
                logger: logger),
            metrics: metrics, tally: OutcomeTally(), retryDeadline: nil, requestTimeout: .seconds(10),
            reconciler: Reconciler(listing: submitter, logger: logger), reconcileAfter: .zero, logger: logger)
        relay = RelayService(
            settings: RelayService.Settings(
                inputTopic: Self.inputTopic, shutdownTimeout: shutdownTimeout, maxPendingRecords: maxPendingRecords),
            consumer: consumer, producer: producer, processor: processor, gates: gates, readiness: readiness,
            metrics: metrics, logger: logger)
        group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: relay)], logger: logger))
    }

    /// Runs the relay until `body` returns, then shuts it down gracefully and waits for it to stop.
    func run(_ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                try await body()
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    func metric(_ name: String, _ labels: [String: String] = [:]) -> Double {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return PrometheusText(String(decoding: buffer, as: UTF8.self)).value(name, labels)
    }

    /// `samples` as records of one partition of the input topic, from `offset` on.
    static func records(_ samples: [SampleLeads.Record], partition: Int32 = 0, from offset: Int64 = 0)
        -> [KafkaConsumerRecord]
    {
        samples.enumerated().map { index, sample in
            KafkaConsumerRecord(
                topic: inputTopic, partition: partition, offset: offset + Int64(index), key: sample.key,
                value: sample.value, headers: sample.headers, timestamp: Date())
        }
    }

    static func partition(_ partition: Int32) -> TopicPartition {
        TopicPartition(topic: inputTopic, partition: partition)
    }
}
