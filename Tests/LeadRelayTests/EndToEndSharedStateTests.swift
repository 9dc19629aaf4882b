import Foundation
import Kafka
import LeadRelayDemo
import SeekerLeadsSimulator
import TestSupport
import Testing

/// Relays sharing their dedupe store and API budget through PostgreSQL (`LEAD_RELAY_DATABASE_URL`), as separate
/// processes on `kafka-dev`, `seeker-leads-sim` and a real PostgreSQL server, each test with its own of all three.
/// The budget the simulator enforces (10 in flight, 10 starts per 200 ms) is the relays' default, and with a
/// database each relay is given the whole of it: only sharing keeps them within it. Serialized: each test runs up
/// to seven processes on few cores.
@Suite(.serialized) struct EndToEndSharedStateTests {
    /// Three relays with the full default budget each, one database, a 12-partition input and a 1,000-lead
    /// backlog of which a fifth re-send earlier leads under other Kafka keys.
    @Test func threeRelaysPostEachUniqueLeadOnceAndStayWithinOneBudget() async throws {
        try await SharedWorld.with { world in
            let relays = try await world.startStableGroup(3)
            let backlog = SharedBacklog(count: 1000, namespace: uniqueName("three"), seed: 81)
            let produced = try await world.producer.produce(backlog.records)

            try await world.waitForAnOutcomeOfEach(produced, relays: relays)
            var metrics: [PrometheusText] = []
            for relay in relays { metrics.append(try await relay.metrics()) }
            for relay in relays { #expect(try await relay.terminate() == .exited(0)) }

            let stats = try await world.simulator.stats()
            try await world.expectNoBudgetViolation()
            #expect(stats.duplicateLeadsReceived == 0)
            #expect(try await extraPosts(of: backlog.uniqueLeads, by: world.simulator) == 0)
            let summary = expectOutcomes(try await world.writtenOutcomes(), of: produced)
            for (index, relayMetrics) in metrics.enumerated() {
                #expect(relayMetrics.value("lead_relay_outcomes_total") > 0, "relay \(index) relayed nothing")
            }
            let grants = metrics.map { $0.value("lead_relay_shared_budget_grants_total") }.reduce(0, +)
            #expect(grants >= Double(stats.requestsTotal), "\(grants) grants for \(stats.requestsTotal) requests")
            // Every reported start's lag is observed; a report still on its way at the scrape is not yet.
            let lags = metrics.map { $0.value("lead_relay_shared_budget_start_lag_seconds_count") }.reduce(0, +)
            #expect(lags > 0 && lags <= grants, "\(lags) start lags observed for \(grants) grants")
            try await world.expectInputCommittedToEnd(by: relays)

            let rate = apiStartRate(try await world.simulator.requestLog())
            let roundTrips = metrics.map { $0.value("lead_relay_database_round_trips_total") }.reduce(0, +)
            let claimsWaited = metrics.map { $0.value("lead_relay_claims_waited_total") }.reduce(0, +)
            record(
                """
                three relays, \(produced.count) records (\(backlog.resendCount) re-sends, \
                \(summary.resendsAnsweredDuplicate) of them answered DUPLICATE themselves, the others' first copy): \
                \(rate.starts) API starts in \(format(rate.seconds)) s = \(format(rate.perSecond)) starts/s, \
                \(format(rate.perSecond / 50)) of the 50/s ceiling; \(Int(grants)) grants, \
                \(format(roundTrips / Double(produced.count))) database round trips per record, \
                \(Int(claimsWaited)) claims waited on
                """)
        }
    }

    /// One of three relays SIGKILLed midway and a fourth started: the dead relay's claims are taken over once
    /// they expire (SEEKER_LEADS_TIMEOUT_MS + 2 s), counted as in doubt, and looked up in the API's listing before
    /// they are posted again: no lead is stored twice, nothing is lost, and the budget holds throughout.
    @Test func aRelaySIGKILLedMidwayLosesNothingAndPostsNothingTwice() async throws {
        try await SharedWorld.with(simulatorArguments: ["--latency-ms", "100"]) { world in
            let maxInFlight = 10
            let changes = ["SEEKER_LEADS_TIMEOUT_MS": "2000", "LEAD_RELAY_MAX_IN_FLIGHT": "\(maxInFlight)"]
            var relays = try await world.startStableGroup(3, changes)
            let backlog = SharedBacklog(count: 600, namespace: uniqueName("sigkill"), seed: 82)
            let produced = try await world.producer.produce(backlog.records)

            try await world.waitForOutcomes(atLeast: 200)
            let victim = relays.remove(at: 1)
            let victimOutcomes = try await victim.metrics().value("lead_relay_outcomes_total")
            victim.process.signal(SIGKILL)
            let lastArrivalAtKill = try await world.lastArrival()
            #expect(try await victim.process.waitForExit() == .killed(SIGKILL))
            let outcomesAtKill = Set(world.outcomePositionsSoFar()).count
            try #require(victimOutcomes > 0, "the relay killed had relayed nothing")
            try #require(outcomesAtKill < produced.count, "the backlog was gone at the kill")
            relays.append(try await world.startRelay("relay-3", changes))

            try await world.waitForAnOutcomeOfEach(produced, relays: relays, timeout: .seconds(240))
            var inDoubt = 0.0
            var takenOver = 0.0
            for relay in relays {
                let metrics = try await relay.metrics()
                inDoubt += metrics.value("lead_relay_in_doubt_total", ["cause": "claim_taken_over"])
                takenOver += metrics.value("lead_relay_claims_taken_over_total")
            }
            for relay in relays { #expect(try await relay.terminate() == .exited(0)) }

            try await world.expectNoBudgetViolation(marks: ["SIGKILL": lastArrivalAtKill])
            let postedAgain = try await extraPosts(of: backlog.uniqueLeads, by: world.simulator)
            #expect(postedAgain == 0, "\(postedAgain) leads posted twice")
            let summary = expectOutcomes(try await world.writtenOutcomes(), of: produced, rereadsAllowed: true)
            #expect(summary.leadsWithSeveralRequestIDs <= postedAgain, "leads submitted under several requestIds")
            try await world.expectInputCommittedToEnd(by: relays)
            record(
                """
                SIGKILL at \(outcomesAtKill) of \(produced.count) records with outcomes: \(postedAgain) leads \
                posted twice, \(Int(inDoubt)) in doubt, \(Int(takenOver)) claims taken over, \
                \(summary.recordsWithSeveralOutcomes) records re-read with a second outcome
                """)
        }
    }

    /// One of three relays SIGSTOPped for 3 s (far longer than a grant is valid) during a backlog, then
    /// SIGCONT: the others go on meanwhile, the paused relay uses no grant late, and nothing repeats.
    @Test func aRelaySIGSTOPpedLongerThanItsGrantsAreValidBreaksNoBudgetAndPostsNothingTwice() async throws {
        try await SharedWorld.with(simulatorArguments: ["--latency-ms", "50"]) { world in
            let relays = try await world.startStableGroup(3)
            let backlog = SharedBacklog(count: 600, namespace: uniqueName("sigstop"), seed: 83)
            let produced = try await world.producer.produce(backlog.records)

            try await world.waitForOutcomes(atLeast: 150)
            let victim = relays[0]
            let victimOutcomesBefore = try await victim.metrics().value("lead_relay_outcomes_total")
            victim.process.signal(SIGSTOP)
            let stoppedAt = ContinuousClock.now
            let requestsAtStop = try await world.simulator.stats().requestsTotal
            let lastArrivalAtStop = try await world.lastArrival()
            // The pause itself must last: 3 s, within the relay's 6 s Kafka session so that it keeps its partitions.
            try await waitUntil("3 s of pause", timeout: .seconds(10)) {
                ContinuousClock.now - stoppedAt >= .seconds(3)
            }
            let requestsBeforeContinue = try await world.simulator.stats().requestsTotal
            let lastArrivalAtContinue = try await world.lastArrival()
            victim.process.signal(SIGCONT)
            #expect(requestsBeforeContinue > requestsAtStop, "the other relays posted nothing while one was paused")
            try #require(Set(world.outcomePositionsSoFar()).count < produced.count, "the backlog was gone at SIGCONT")

            try await world.waitForAnOutcomeOfEach(produced, relays: relays)
            let victimOutcomesAfter = try await victim.metrics().value("lead_relay_outcomes_total")
            #expect(victimOutcomesAfter > victimOutcomesBefore, "the paused relay relayed nothing after SIGCONT")
            for relay in relays { #expect(try await relay.terminate() == .exited(0)) }

            let stats = try await world.simulator.stats()
            try await world.expectNoBudgetViolation(marks: [
                "SIGSTOP": lastArrivalAtStop, "SIGCONT": lastArrivalAtContinue,
            ])
            #expect(stats.duplicateLeadsReceived == 0)
            #expect(try await extraPosts(of: backlog.uniqueLeads, by: world.simulator) == 0)
            expectOutcomes(try await world.writtenOutcomes(), of: produced)
            try await world.expectInputCommittedToEnd(by: relays)
        }
    }

    /// The dedupe memory is the database's: a relay started with a fresh working directory (a dedupe file that
    /// never existed) answers DUPLICATE for a lead its predecessor submitted, re-sent under another Kafka key.
    @Test func aRelayWithAFreshWorkingDirectoryAnswersDuplicateForALeadSubmittedBefore() async throws {
        try await SharedWorld.with { world in
            let namespace = uniqueName("fresh")
            let leads = (0..<24).map { index in
                SampleLeads.valid(
                    index: index, shape: SampleLeads.Shape.allCases[index % 3], namespace: namespace, seed: 84)
            }
            let first = try await world.startRelay("first")
            let producedFirst = try await world.producer.produce(Array(leads[0..<20]))
            try await world.waitForAnOutcomeOfEach(producedFirst, relays: [first])
            #expect(try await first.terminate() == .exited(0))
            #expect(try await world.simulator.stats().leadsStored == 20)

            let fresh = try ScratchDirectory()
            let second = try await world.startRelay("second", in: fresh)
            try await second.waitUntilReady()
            let resends = leads[0..<8].enumerated().map { index, lead in
                var resend = lead
                resend.key = Array("resend-\(index)-\(lead.classifiedID ?? "")".utf8)
                resend.expectation = .duplicate
                return resend
            }
            let producedSecond = try await world.producer.produce(resends + Array(leads[20..<24]))
            try await world.waitForAnOutcomeOfEach(producedSecond, relays: [second])
            let metrics = try await second.metrics()
            #expect(try await second.terminate() == .exited(0))

            #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "duplicate"]) == Double(resends.count))
            #expect(metrics.value("lead_relay_outcomes_total", ["outcome": "submitted"]) == 4)
            let stats = try await world.simulator.stats()
            #expect(stats.duplicateLeadsReceived == 0)
            #expect(try await extraPosts(of: leads, by: world.simulator) == 0)
            let outcomes = try await world.writtenOutcomes()
            expectOutcomes(outcomes, of: producedFirst + producedSecond)
            let byPosition = Dictionary(grouping: outcomes, by: { $0.position })
            for resend in producedSecond.prefix(resends.count) {
                let answer = byPosition[InputPosition(resend.partition, resend.offset)]?.first
                let original = producedFirst.first { $0.sample.classifiedID == resend.sample.classifiedID }
                let submission = original.flatMap { byPosition[InputPosition($0.partition, $0.offset)]?.first }
                #expect(
                    answer?.kind == .duplicate,
                    "re-send of \(resend.sample.classifiedID ?? ""): \(String(describing: answer?.kind))")
                #expect(answer?.requestID != nil && answer?.requestID == submission?.requestID)
            }
            try await world.expectInputCommittedToEnd(by: [first, second])
        }
    }

    /// Three relays scaled in to one during a backlog, SIGTERM after SIGTERM: each leave makes the group refuse
    /// commits while it rebalances, and the next relay is stopped in the middle of that rebalance, holding outcomes
    /// its commits could not record yet. Each commits them before it leaves, the last relay finishes the backlog,
    /// and nothing is lost, posted twice or left uncommitted.
    @Test func relaysStoppedOneAfterAnotherDuringABacklogCommitWhatTheyFinished() async throws {
        try await SharedWorld.with(simulatorArguments: ["--latency-ms", "20"]) { world in
            // 25 s, the relay's default shutdown timeout, rather than these tests' 10 s: a relay stopped during a
            // rebalance commits once its group has rejoined, and on a loaded machine that has taken over 8.6 s.
            let relays = try await world.startStableGroup(3, ["LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS": "25"])
            let backlog = SharedBacklog(count: 300, namespace: uniqueName("scale-in"), seed: 86)
            let produced = try await world.producer.produce(backlog.records)

            try await world.waitForOutcomes(atLeast: 60)
            #expect(try await relays[0].terminate() == .exited(0))
            #expect(try await relays[1].terminate() == .exited(0))
            try #require(
                Set(world.outcomePositionsSoFar()).count < produced.count, "the backlog was gone at the scale-in")
            try await world.waitForAnOutcomeOfEach(produced, relays: [relays[2]])
            #expect(try await relays[2].terminate() == .exited(0))

            try await world.expectNoBudgetViolation()
            #expect(try await extraPosts(of: backlog.uniqueLeads, by: world.simulator) == 0)
            expectOutcomes(try await world.writtenOutcomes(), of: produced, rereadsAllowed: true)
            try await world.expectInputCommittedToEnd(by: relays)
            for (index, relay) in relays.enumerated() {
                #expect(
                    !relay.process.stderr.contains("final commit did not succeed in time"),
                    "relay \(index) left without committing what it had finished")
            }
        }
    }

    /// PostgreSQL stopped for 10 s while two relays work through a backlog, then started again: meanwhile the
    /// relays start no lead and report not ready (dedupe_store and budget failing); they resume by themselves, and
    /// nothing is lost, posted twice or dead-lettered.
    @Test func postgresDownForTenSecondsLosesNothingPostsNothingTwiceAndMakesTheRelaysNotReady() async throws {
        try await SharedWorld.with(simulatorArguments: ["--latency-ms", "20"]) { world in
            let relays = try await world.startStableGroup(2)
            let backlog = SharedBacklog(count: 500, namespace: uniqueName("outage"), seed: 85)
            let produced = try await world.producer.produce(backlog.records)

            try await world.waitForOutcomes(atLeast: 100)
            await world.database.stop()
            let lastArrivalAtStop = try await world.lastArrival()
            let stoppedAt = ContinuousClock.now
            try await waitUntil("both relays not ready, dedupe_store and budget failing", timeout: .seconds(60)) {
                for relay in relays {
                    let readiness = try await relay.readiness()
                    guard readiness.status == 503, readiness.checks["dedupe_store"] == "fail",
                        readiness.checks["budget"] == "fail"
                    else { return false }
                }
                return true
            }
            // The outage itself must last (10 s); requests granted before it began are answered within its first
            // second (20 ms latency), and none may start after.
            try await waitUntil("1 s of outage") { ContinuousClock.now - stoppedAt >= .seconds(1) }
            let requestsEarly = try await world.simulator.stats().requestsTotal
            try await waitUntil("10 s of outage", timeout: .seconds(30)) {
                ContinuousClock.now - stoppedAt >= .seconds(10)
            }
            let requestsLate = try await world.simulator.stats().requestsTotal
            var stillNotReady = true
            for relay in relays { stillNotReady = try await relay.readiness().status == 503 && stillNotReady }
            try await world.database.start()
            let lastArrivalAtStart = try await world.lastArrival()
            #expect(
                requestsLate == requestsEarly,
                "\(requestsLate - requestsEarly) API requests while the database was down")
            #expect(stillNotReady, "a relay reported ready while the database was down")
            try #require(
                Set(world.outcomePositionsSoFar()).count < produced.count, "the backlog was gone at the outage")

            for relay in relays { try await relay.waitUntilReady() }
            for relay in relays {
                let readiness = try await relay.readiness()
                #expect(
                    readiness.checks["dedupe_store"] == "pass" && readiness.checks["budget"] == "pass", "\(readiness)")
            }
            try await world.waitForAnOutcomeOfEach(produced, relays: relays)
            for relay in relays {
                #expect(try await relay.metrics().value("lead_relay_dead_letters_total") == 0)
                #expect(try await relay.terminate() == .exited(0))
            }

            let stats = try await world.simulator.stats()
            try await world.expectNoBudgetViolation(marks: ["stop": lastArrivalAtStop, "start": lastArrivalAtStart])
            #expect(stats.duplicateLeadsReceived == 0)
            #expect(try await extraPosts(of: backlog.uniqueLeads, by: world.simulator) == 0)
            expectOutcomes(try await world.writtenOutcomes(), of: produced)
            try await world.expectInputCommittedToEnd(by: relays)
        }
    }

    // MARK: - Start-up

    static let malformedDatabaseURLs = [
        "postgres://lead_relay:\(secretMark)@127.0.0.1:99999/lead_relay",
        "mysql://lead_relay:\(secretMark)@127.0.0.1:5432/lead_relay",
        "postgres://lead_relay:\(secretMark)@127.0.0.1:5432/lead_relay?sslmode=sometimes",
        "postgres://lead_relay:\(secretMark)@127.0.0.1:5432",
    ]

    /// A password no log may show.
    static let secretMark = "e2e-database-password-\(UUID().uuidString.prefix(8).lowercased())"

    /// A malformed URL: exit status 2 and one line naming the variable, without the password.
    @Test(arguments: malformedDatabaseURLs)
    func malformedDatabaseURLStopsStartUpWithStatus2(_ url: String) async throws {
        let scratch = try ScratchDirectory()
        var environment = EndToEndConfigurationTests.validEnvironment(scratch)
        environment["LEAD_RELAY_DATABASE_URL"] = url
        let relay = try ChildProcess(
            product: "lead-relay", arguments: ["run"], environment: environment, logDirectory: scratch.url)
        #expect(try await relay.waitForExit(timeout: .seconds(60)) == .exited(2))
        let lines = relay.stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 1, "standard error: \(relay.stderr)")
        #expect(lines.first?.contains("LEAD_RELAY_DATABASE_URL") == true, "standard error: \(relay.stderr)")
        #expect(!relay.stderr.contains(Self.secretMark), "the password appears on standard error")
    }

    /// A database nobody answers for: the relay waits LEAD_RELAY_DATABASE_CONNECT_TIMEOUT_SECONDS, then exits 1
    /// saying so.
    @Test func unreachableDatabaseStopsStartUpWithStatus1AfterTheConnectTimeout() async throws {
        let scratch = try ScratchDirectory()
        let port = try freeLoopbackPort()
        var environment = EndToEndConfigurationTests.validEnvironment(scratch)
        environment["LEAD_RELAY_DATABASE_URL"] =
            "postgres://lead_relay:\(Self.secretMark)@127.0.0.1:\(port)/lead_relay?sslmode=disable"
        environment["LEAD_RELAY_DATABASE_CONNECT_TIMEOUT_SECONDS"] = "2"
        let startedAt = ContinuousClock.now
        let relay = try ChildProcess(
            product: "lead-relay", arguments: ["run"], environment: environment, logDirectory: scratch.url)
        #expect(try await relay.waitForExit(timeout: .seconds(60)) == .exited(1), "standard error: \(relay.stderr)")
        let elapsed = ContinuousClock.now - startedAt
        // It kept trying: a refused connection fails at once, and a relay that did not wait would exit within
        // a fraction of a second. It gives up once less than its retry pause (500 ms) is left of the wait.
        #expect(elapsed >= .seconds(1), "exited after \(elapsed), without waiting for the database")
        // Not the default 30 s: the variable was read.
        #expect(elapsed < .seconds(20), "exited after \(elapsed)")
        let lines = relay.stderr.split(separator: "\n").map(String.init)
        // The line says which variable and which database (the password redacted).
        #expect(
            lines.contains { $0.contains("LEAD_RELAY_DATABASE_URL") && $0.contains("127.0.0.1:\(port)/") },
            "standard error: \(relay.stderr)")
        #expect(!relay.stderr.contains(Self.secretMark), "the password appears on standard error")
    }

    /// LEAD_RELAY_DATABASE_URL_FILE: the URL read from a file (a secret's form, newline included) puts the relay
    /// on the shared store and budget.
    @Test func databaseURLFromAFileSharesTheStoreAndTheBudget() async throws {
        try await SharedWorld.with { world in
            var environment = world.relayEnvironment("relay")
            environment["LEAD_RELAY_DATABASE_URL"] = nil
            environment["LEAD_RELAY_DATABASE_URL_FILE"] = try world.scratch.write(
                world.database.url + "\n", named: "database-url")
            let relay = try await RelayProcess(environment: environment, scratch: world.scratch)
            try await relay.waitUntilReady()
            let readiness = try await relay.readiness()
            #expect(readiness.checks["dedupe_store"] == "pass" && readiness.checks["budget"] == "pass", "\(readiness)")

            let leads = distinctValidLeads(6, namespace: uniqueName("url-file"), seed: 86)
            let resend = {
                var copy = leads[0]
                copy.key = Array("resend-\(copy.classifiedID ?? "")".utf8)
                copy.expectation = .duplicate
                return copy
            }()
            let produced = try await world.producer.produce(leads)
            try await world.waitForAnOutcomeOfEach(produced, relays: [relay])
            let producedResend = try await world.producer.produce([resend])
            try await world.waitForAnOutcomeOfEach(producedResend, relays: [relay])
            let metrics = try await relay.metrics()
            #expect(try await relay.terminate() == .exited(0))

            #expect(metrics.value("lead_relay_shared_budget_grants_total") >= Double(leads.count))
            #expect(metrics.value("lead_relay_database_round_trips_total") > 0)
            #expect(try await extraPosts(of: leads, by: world.simulator) == 0)
            expectOutcomes(try await world.writtenOutcomes(), of: produced + producedResend)
            #expect(!relay.process.stderr.contains(world.database.password), "the password appears in the log")
        }
    }
}

private func format(_ value: Double) -> String {
    String(format: "%.3f", value)
}
