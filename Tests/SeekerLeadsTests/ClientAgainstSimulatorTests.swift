import AsyncHTTPClient
import Foundation
import Logging
import RelayPrimitives
import SeekerLeadsSimulator
import Synchronization
import TestSupport
import Testing

@testable import SeekerLeads

/// Keeps every log line a logger emits, with its metadata, for assertions.
final class CapturedLogs: Sendable {
    private let lines = Locked<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func logger() -> Logger {
        var logger = Logger(label: "seeker-leads-test") { _ in CapturingLogHandler(sink: self) }
        logger.logLevel = .trace
        return logger
    }
}

struct CapturingLogHandler: LogHandler {
    let sink: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        sink.append("\(event.level) \(event.message) \(merged)")
    }
}

/// A lead body that satisfies the contract; `index` makes it unique.
func validLeadBody(_ index: Int) -> [UInt8] {
    Array(
        """
        {"lastName":"Doe","firstName":"Jane","email":"jane\(index)@example.com","phoneNumbers":[{"number":"+33511223344","type":"MOBILE"}],\
        "message":"Interested \(index)","classifiedId":"12ABCDEFGHJK","submittedDate":"2025-01-01T10:00:00.123+02:00"}
        """.utf8
    )
}

struct SimulatorFixture: Sendable {
    let simulator: RunningSimulator
    let client: SeekerLeadsClient
    let logs: CapturedLogs

    static let clientSecret = "test-client-secret-value"

    /// The simulator runs in the test process beside 200 client tasks, on a debug build and two cores: it reads a
    /// request up to several milliseconds after the client wrote it, and the margin is the budget's allowance for that.
    static let testMargin: Duration = .milliseconds(10)

    static func start(
        faults: SimulatorFaults = SimulatorFaults(),
        oauth: Bool = true,
        retry: Backoff = Backoff(base: .milliseconds(5), max: .milliseconds(50)),
        budget: (any RequestBudget)? = nil,
        simulatorWindowMs: Int = 200
    ) async throws -> SimulatorFixture {
        var options = SimulatorOptions()
        options.windowMs = simulatorWindowMs
        options.clientSecret = clientSecret
        options.staticToken = "test-static-token"
        options.faults = faults
        let simulator = try await SeekerLeadsSimulator.start(
            options: options, logger: Logger(label: "sim") { _ in SwiftLogNoOpLogHandler() })
        let logs = CapturedLogs()
        let authentication: SeekerLeadsAuthentication =
            oauth
            ? .clientCredentials(
                tokenURL: simulator.tokenURL, clientID: options.clientID, clientSecret: clientSecret,
                audience: simulator.baseURL)
            : .staticToken(options.staticToken)
        let client = try SeekerLeadsClient(
            configuration: .init(
                baseURL: simulator.baseURL, authentication: authentication,
                budget: RateBudgetConfiguration(margin: Self.testMargin), retry: retry),
            budget: budget, logger: logs.logger()
        )
        return SimulatorFixture(simulator: simulator, client: client, logs: logs)
    }

    func stop() async throws {
        try await client.shutdown()
        await simulator.shutdown()
    }
}

@Suite(.serialized) struct ClientAgainstSimulatorTests {
    @Test func budgetHoldsUnderLoad() async throws {
        let fixture = try await SimulatorFixture.start()
        let accepted = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<200 {
                group.addTask {
                    for round in 0..<10 {
                        let outcome = try await fixture.client.submitLead(
                            requestBody: validLeadBody(worker * 10 + round), traceparent: nil)
                        if case .accepted = outcome { accepted.withLock { $0 += 1 } }
                    }
                }
            }
            try await group.waitForAll()
        }
        let stats = await fixture.simulator.stats()
        #expect(accepted.withLock { $0 } == 2000)
        #expect(stats.violations == 0)
        #expect(stats.maxStartsPerWindow <= 10)
        #expect(stats.maxConcurrency <= 10)
        #expect(stats.leadsStored == 2000)
        #expect(stats.duplicateLeadsReceived == 0)
        #expect(stats.tokenRequests == 1)
        try await fixture.stop()
    }

    @Test func exactlyTheGivenFieldsReachTheAPI() async throws {
        let fixture = try await SimulatorFixture.start(oauth: false)
        let body = Array(
            #"{"lastName":"Doe","email":"a@example.com","phoneNumbers":[{"number":"0511223344"}],"message":"m/x","classifiedId":"12ABCDEFGHJK","submittedDate":"2025-01-01T10:00:00.5Z","unknownField":1}"#
                .utf8
        )
        let outcome = try await fixture.client.submitLead(
            requestBody: body, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        guard case .accepted(let requestId, _, 200) = outcome else {
            Issue.record("expected accepted, got \(outcome)")
            return
        }
        #expect(!requestId.isEmpty)
        let stored = try #require(fixture.simulator.controller.storedLeadBodies().first)
        let object = try #require(try JSONSerialization.jsonObject(with: stored) as? [String: Any])
        #expect(Set(object.keys) == ["lastName", "email", "phoneNumbers", "message", "classifiedId", "submittedDate"])
        #expect(object["submittedDate"] as? String == "2025-01-01T10:00:00.5Z")
        #expect(object["language"] == nil)
        try await fixture.stop()
    }

    @Test func retryAfterHoldsTheWholeBudget() async throws {
        var faults = SimulatorFaults()
        faults.storm429Requests = 1
        faults.retryAfterSeconds = 1
        let fixture = try await SimulatorFixture.start(faults: faults)
        let followers = Locked<[Task<SubmissionAttemptOutcome, any Error>]>([])
        // The first attempt meets the storm's 429; only then do five more leads queue at the budget,
        // which must hold them all until the Retry-After instant.
        let (first, attempts) = try await fixture.client.submitLeadRetrying(
            requestBody: validLeadBody(0), traceparent: nil, deadline: nil,
            afterAttempt: { outcome in
                guard case .transient(429, _, _, _) = outcome else { return }
                let tasks = (1...5).map { index in
                    Task {
                        try await fixture.client.submitLeadRetrying(
                            requestBody: validLeadBody(index), traceparent: nil, deadline: nil
                        ).outcome
                    }
                }
                followers.withLock { $0 = tasks }
            }
        )
        #expect(attempts == 2)
        var outcomes = [first]
        for task in followers.withLock({ $0 }) { outcomes.append(try await task.value) }
        #expect(outcomes.count == 6)
        #expect(outcomes.allSatisfy { if case .accepted = $0 { true } else { false } })
        let log = fixture.simulator.controller.requestLog()
        let throttled = try #require(log.first { $0.status == 429 })
        let retryAllowedAt = throttled.answeredAtNanos + 1_000_000_000
        #expect(log.count == 7)
        #expect(log.filter { $0.status != 429 }.allSatisfy { $0.arrivedAtNanos >= retryAllowedAt })
        try await fixture.stop()
    }

    /// Which answers leave open whether the API stored the lead, each as the client meets it: the contract's
    /// in-doubt cases (500, 502, 504, an answer lost after the request was read), and the ones that say the lead
    /// was not processed (429, 503, no connection at all).
    @Test func eachOutcomeIsInDoubtOrNotAsTheContractSays() async throws {
        for status in [500, 502, 504] { #expect(InDoubt.isInDoubt(httpStatus: status), "\(status)") }
        for status in [200, 201, 400, 401, 403, 408, 422, 429, 503] {
            #expect(!InDoubt.isInDoubt(httpStatus: status), "\(status)")
        }
        var cases: [(String, SimulatorFaults, Bool)] = []
        for (status, inDoubt) in [("500", true), ("502", true), ("504", true), ("503", false), ("429", false)] {
            var faults = SimulatorFaults()
            faults.errorRates = [status: 1.0]
            faults.retryAfterSeconds = 0
            cases.append(("HTTP \(status)", faults, inDoubt))
        }
        for (name, dropShare) in [("502 after storing", 0.0), ("connection dropped after the body", 1.0)] {
            var faults = SimulatorFaults()
            faults.storeThenFailRate = 1
            faults.storeThenFailDropShare = dropShare
            cases.append((name, faults, true))
        }
        for (index, (name, faults, inDoubt)) in cases.enumerated() {
            let fixture = try await SimulatorFixture.start(faults: faults, oauth: false)
            let outcome = try await fixture.client.submitLead(requestBody: validLeadBody(index), traceparent: nil)
            #expect(outcome.isTransient, "\(name): \(outcome)")
            #expect(outcome.isInDoubt == inDoubt, "\(name): \(outcome)")
            try await fixture.stop()
        }
        // No connection: nothing was written, so nothing can have been stored.
        let closed = try await SimulatorFixture.start(oauth: false)
        let refused = try SeekerLeadsClient(
            configuration: .init(
                baseURL: "http://127.0.0.1:\(try freeLoopbackPort())", authentication: .staticToken("token"),
                budget: RateBudgetConfiguration(), retry: Backoff(base: .milliseconds(5), max: .milliseconds(50))),
            logger: closed.logs.logger())
        let outcome = try await refused.submitLead(requestBody: validLeadBody(99), traceparent: nil)
        #expect(outcome.isTransient && !outcome.isInDoubt, "\(outcome)")
        try await refused.shutdown()
        try await closed.stop()
    }

    @Test func transientErrorsAreRetriedPermanentOnesAreNot() async throws {
        var faults = SimulatorFaults()
        faults.errorRates = ["503": 1.0]
        faults.retryAfterSeconds = 0
        let fixture = try await SimulatorFixture.start(faults: faults)
        let attemptsSeen = Locked(0)
        let (outcome, attempts) = try await fixture.client.submitLeadRetrying(
            requestBody: validLeadBody(1), traceparent: nil, deadline: nil,
            afterAttempt: { _ in
                if attemptsSeen.withLock({ count -> Int in
                    count += 1; return count
                }) == 3 {
                    await fixture.simulator.setFaults(SimulatorFaults())
                }
            }
        )
        guard case .accepted = outcome else {
            Issue.record("expected accepted after retries, got \(outcome)")
            return
        }
        #expect(attempts == 4)
        #expect(await fixture.simulator.stats().requestsByStatus["503"] == 3)

        let invalid = Array(
            #"{"lastName":"","email":"a@example.com","phoneNumbers":[{"number":"0511223344"}],"message":"m","classifiedId":"12ABCDEFGHJO","submittedDate":"2025-01-01T10:00:00Z"}"#
                .utf8)
        let (rejected, rejectedAttempts) = try await fixture.client.submitLeadRetrying(
            requestBody: invalid, traceparent: nil, deadline: nil)
        #expect(rejectedAttempts == 1)
        guard case .rejected(400, let problem?, _, let detailsJSON) = rejected else {
            Issue.record("expected a 400 rejection, got \(rejected)")
            return
        }
        #expect(problem.status == 400)
        #expect(detailsJSON.contains("/lastName") && detailsJSON.contains("/classifiedId"))
        #expect(await fixture.simulator.stats().requestsByStatus["400"] == 1)
        try await fixture.stop()
    }

    @Test func oneTokenIsReusedAndA401RefreshesItOnce() async throws {
        let fixture = try await SimulatorFixture.start()
        for index in 0..<30 {
            _ = try await fixture.client.submitLead(requestBody: validLeadBody(index), traceparent: nil)
        }
        #expect(await fixture.simulator.stats().tokenRequests == 1)

        var revoke = SimulatorFaults()
        revoke.revokeIssuedTokens = true
        await fixture.simulator.setFaults(revoke)
        let accepted = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask {
                    if case .accepted = try await fixture.client.submitLead(
                        requestBody: validLeadBody(100 + index), traceparent: nil)
                    {
                        accepted.withLock { $0 += 1 }
                    }
                }
            }
            try await group.waitForAll()
        }
        let stats = await fixture.simulator.stats()
        #expect(accepted.withLock { $0 } == 50)
        #expect(stats.tokenRequests == 2)
        #expect((stats.requestsByStatus["401"] ?? 0) >= 1)
        try await fixture.stop()
    }

    @Test func secretsNeverReachTheLogs() async throws {
        let fixture = try await SimulatorFixture.start()
        _ = try await fixture.client.submitLead(requestBody: validLeadBody(1), traceparent: nil)
        var outage = SimulatorFaults()
        outage.revokeIssuedTokens = true
        outage.tokenEndpointOutage = true
        await fixture.simulator.setFaults(outage)
        let outcome = try await fixture.client.submitLead(requestBody: validLeadBody(2), traceparent: nil)
        #expect(outcome.isTransient)
        #expect(await fixture.client.checkCredentials() == false)
        let logs = fixture.logs.all
        #expect(logs.contains { $0.contains("token endpoint") })
        for line in logs {
            #expect(!line.contains(SimulatorFixture.clientSecret))
            #expect(!line.contains("sim-"))
            #expect(!line.contains("jane"))
        }
        try await fixture.stop()
    }

    /// Without this the budget tests above could pass against a simulator that never counts anything.
    @Test func simulatorCountsAnEleventhRequestInFlightAsAViolation() async throws {
        var faults = SimulatorFaults()
        faults.latencyMs = 3000
        let fixture = try await SimulatorFixture.start(faults: faults, oauth: false)
        let http = SimulatorHTTP(fixture.simulator, paced: false)
        let statuses = try await http.concurrentStatuses((0..<11).map { ("POST", "/leads", validLeadBody($0)) })
        let stats = await fixture.simulator.stats()
        #expect(stats.maxConcurrency == 11)
        #expect(stats.violationsByKind["concurrency", default: 0] == 1)
        #expect(statuses == Array(repeating: 200, count: 10) + [429])
        try await http.shutdown()
        try await fixture.stop()
    }

    /// The rate as the simulator counts it, against how early each request can have arrived: eleven requests one
    /// after another within its window (a minute here, so that a slow machine cannot spread them out of it) surely
    /// arrived within it, and the eleventh breaks it.
    @Test func simulatorCountsAnEleventhStartWithinAWindowAsAViolation() async throws {
        let fixture = try await SimulatorFixture.start(oauth: false, simulatorWindowMs: 60_000)
        let http = SimulatorHTTP(fixture.simulator, paced: false)
        var statuses: [Int] = []
        for index in 0..<11 {
            statuses.append(try await http.postLead(index).status)
        }
        let stats = await fixture.simulator.stats()
        try await http.shutdown()
        try await fixture.stop()
        #expect(stats.violationsByKind == ["rate": 1])
        #expect(statuses == Array(repeating: 200, count: 10) + [429])
        #expect(stats.maxStartsPerWindow == 11)
    }

    @Test func simulatorRejectsInvalidBodiesAndMissingTokens() async throws {
        let fixture = try await SimulatorFixture.start(oauth: false)
        let http = SimulatorHTTP(fixture.simulator)
        func post(_ body: String, token: String?) async throws -> (Int, String) {
            let answer = try await http.send("POST", "/leads", body: Array(body.utf8), token: token)
            return (answer.status, String(decoding: answer.body, as: UTF8.self))
        }
        let (unauthorized, _) = try await post(String(decoding: validLeadBody(1), as: UTF8.self), token: "wrong")
        #expect(unauthorized == 401)
        let (notJSON, notJSONBody) = try await post("not json", token: "test-static-token")
        #expect(notJSON == 400)
        #expect(notJSONBody.contains("\"status\":400"))
        let (missing, missingBody) = try await post(#"{"email":"a@example.com"}"#, token: "test-static-token")
        #expect(missing == 400)
        #expect(missingBody.contains("/lastName") && missingBody.contains("/submittedDate"))
        let (valid, _) = try await post(String(decoding: validLeadBody(1), as: UTF8.self), token: "test-static-token")
        #expect(valid == 200)
        #expect(await fixture.simulator.stats().leadsStored == 1)
        try await http.shutdown()
        try await fixture.stop()
    }
}
