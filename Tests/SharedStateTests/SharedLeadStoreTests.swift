import Foundation
import PostgresNIO
import TestSupport
import Testing

@testable import SharedState

@Suite struct SharedLeadStoreTests {
    static func record(_ offset: Int64, partition: Int32 = 0) -> InputRecord {
        InputRecord(topic: "leads.submitted", partition: partition, offset: offset)
    }

    @Test func concurrentClaimsOfAKeyHaveOneWinnerAndTheOthersSeeItsSubmission() async throws {
        try await PostgresServer.with { server in
            try await withStores(3, of: server) { stores in
                let keys = (0..<20).map { "ce:urn:portal|lead-\($0)" }
                // How many relays found each key held: a winner records its submission only once both others
                // have, so that every loser goes through held, then submitted.
                let heldSeen = Locked<[String: Int]>([:])
                // Every relay claims every key at once; each key's winner posts, then records the submission.
                let outcomes = try await withThrowingTaskGroup(
                    of: (key: String, relay: Int, outcome: ClaimOutcome, timesHeld: Int).self
                ) { group in
                    for key in keys {
                        for (relay, store) in stores.enumerated() {
                            group.addTask {
                                var counted = false
                                let (outcome, timesHeld) = try await claimWaiting(
                                    store, key, owner: "relay-\(relay)", inputRecord: Self.record(Int64(relay)),
                                    claimTTL: .seconds(60)
                                ) { _ in
                                    if !counted { heldSeen.withLock { $0[key, default: 0] += 1 } }
                                    counted = true
                                }
                                if case .claimed(let claim) = outcome {
                                    try await waitUntil("both other relays to find \(key) held") {
                                        heldSeen.value[key] == stores.count - 1
                                    }
                                    let submission = try await store.recordSubmitted(
                                        claim, requestId: "request-\(key)", title: "Lead \(key)", httpStatus: 201)
                                    #expect(submission?.requestId == "request-\(key)")
                                }
                                return (key, relay, outcome, timesHeld)
                            }
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                for key in keys {
                    let ofKey = outcomes.filter { $0.key == key }
                    let winners = ofKey.compactMap { answer -> Int? in
                        if case .claimed = answer.outcome { return answer.relay }
                        return nil
                    }
                    try #require(winners.count == 1, "\(key): \(ofKey.map(\.outcome))")
                    for loser in ofKey where loser.relay != winners[0] {
                        #expect(loser.timesHeld > 0)
                        let submission = try loser.outcome.submitted()
                        #expect(submission.requestId == "request-\(key)")
                        #expect(submission.inputRecord == Self.record(Int64(winners[0])))
                        #expect(submission.attempts == 1)
                        #expect(submission.httpStatus == 201)
                    }
                }
                let found = try await stores[2].submissions(forKeys: keys + ["never-seen"])
                #expect(Set(found.keys) == Set(keys))
            }
        }
    }

    @Test func aWaiterIsWokenByTheOutcomeNotByThePollBound() async throws {
        try await PostgresServer.with { server in
            let configuration = SharedLeadStore.Configuration(claimPollInterval: .seconds(3600))
            try await withStores(2, of: server, configuration: configuration) { stores in
                let key = "sha256:woken"
                let claim = try await stores[0].claim(
                    key, owner: "relay-0", inputRecord: Self.record(1), claimTTL: .seconds(3600)
                ).claimed()
                let heldClaim = try await stores[1].claim(
                    key, owner: "relay-1", inputRecord: Self.record(2), claimTTL: .seconds(3600)
                ).held()
                #expect(heldClaim.owner == "relay-0")
                #expect(heldClaim.inputRecord == Self.record(1))
                // Neither the claim (an hour) nor the poll bound (an hour) ends the wait: only the notification.
                async let woken: Void = within(.seconds(30), "the waiter to be woken by the notification") {
                    try await stores[1].waitForClaimToEnd(heldClaim)
                }
                try await waitUntil("relay-1 to wait for the claim") { stores[1].claimWaiters == 1 }
                _ = try await stores[0].recordSubmitted(claim, requestId: "r-1", title: "t", httpStatus: 200)
                try await woken
                let submission = try await stores[1].claim(
                    key, owner: "relay-1", inputRecord: Self.record(2), claimTTL: .seconds(3600)
                ).submitted()
                #expect(submission.requestId == "r-1")
            }
        }
    }

    @Test func aReleasedKeyIsFreeForTheNextClaim() async throws {
        try await PostgresServer.with { server in
            try await withStores(2, of: server) { stores in
                let key = "ce:urn:portal|rejected"
                let first = try await stores[0].claim(
                    key, owner: "relay-0", inputRecord: Self.record(7), claimTTL: .seconds(60)
                ).claimed()
                #expect(try await stores[0].release(first))
                #expect(try await stores[0].release(first) == false)
                #expect(try await stores[0].recordSubmitted(first, requestId: "r", title: "t", httpStatus: 201) == nil)
                let second = try await stores[1].claim(
                    key, owner: "relay-1", inputRecord: InputRecord(topic: "leads.dlq", partition: 0, offset: 3),
                    claimTTL: .seconds(60)
                ).claimed()
                #expect(second.attempts == 1)
                #expect(try await stores[0].submissions(forKeys: [key]).isEmpty)
            }
        }
    }

    /// A submission found in the API's listing keeps the listing's lead id for every relay's lookups, and a retry
    /// of its record (the same token) keeps the first.
    @Test func aReconciledSubmissionKeepsTheAPIsLeadId() async throws {
        try await PostgresServer.with { server in
            try await withStores(2, of: server) { stores in
                let key = "ce:urn:portal|reconciled"
                let claim = try await stores[0].claim(
                    key, owner: "relay-0", inputRecord: Self.record(4), claimTTL: .seconds(60)
                ).claimed()
                let recorded = try await stores[0].recordSubmitted(
                    claim, requestId: "", title: "", httpStatus: 0, leadId: "lead-000000000042")
                #expect(recorded?.leadId == "lead-000000000042")
                _ = try await stores[0].recordSubmitted(
                    claim, requestId: "", title: "", httpStatus: 0, leadId: "lead-000000000099")
                let seen = try #require(try await stores[1].submissions(forKeys: [key])[key])
                #expect(seen.leadId == "lead-000000000042" && seen.httpStatus == 0)
            }
        }
    }

    @Test func anExpiredClaimIsTakenOverAsInDoubtAndItsOwnerLosesIt() async throws {
        try await PostgresServer.with { server in
            try await withStores(2, of: server) { stores in
                let key = "sha256:in-doubt"
                let abandoned = try await stores[0].claim(
                    key, owner: "relay-0", inputRecord: Self.record(10), claimTTL: .seconds(1)
                ).claimed()
                // relay-0 stops working on it (killed): the claim expires, and relay-1 takes it over.
                let (outcome, timesHeld) = try await claimWaiting(
                    stores[1], key, owner: "relay-1", inputRecord: Self.record(10, partition: 1),
                    claimTTL: .seconds(60))
                #expect(timesHeld > 0)
                guard case .takenOver(let claim, let previousOwner, let previousInputRecord) = outcome else {
                    Issue.record("expected a take-over, got \(outcome)")
                    return
                }
                #expect(previousOwner == "relay-0")
                #expect(previousInputRecord == Self.record(10))
                #expect(claim.attempts == 2)
                #expect(claim.firstAttemptAt == abandoned.firstAttemptAt)
                // The previous owner, if it comes back, finds it no longer holds the claim.
                #expect(!abandoned.isLive)
                #expect(try await stores[0].renew(abandoned, claimTTL: .seconds(60)) == nil)
                #expect(
                    try await stores[0].recordSubmitted(abandoned, requestId: "late", title: "t", httpStatus: 201)
                        == nil)
                #expect(try await stores[0].release(abandoned) == false)
                let submission = try #require(
                    try await stores[1].recordSubmitted(claim, requestId: "r-2", title: "t", httpStatus: 201))
                #expect(submission.attempts == 2)
                #expect(submission.inputRecord == Self.record(10, partition: 1))
            }
        }
    }

    @Test func aRenewedClaimOutlivesItsFirstTTL() async throws {
        try await PostgresServer.with { server in
            try await withStores(2, of: server) { stores in
                let key = "sha256:renewed"
                let claim = try await stores[0].claim(
                    key, owner: "relay-0", inputRecord: Self.record(1), claimTTL: .seconds(1)
                ).claimed()
                let renewed = try #require(try await stores[0].renew(claim, claimTTL: .seconds(3600)))
                #expect(renewed.expiresBy > claim.expiresBy + .seconds(3000))
                #expect(renewed.isLive)
                let held = try await stores[1].claim(
                    key, owner: "relay-1", inputRecord: Self.record(2), claimTTL: .seconds(60)
                ).held()
                #expect(held.remaining > .seconds(3000))
            }
        }
    }

    @Test func aClaimOrARecordRetriedWithItsTokenIsTheSameOne() async throws {
        try await PostgresServer.with { server in
            try await withStores(1, of: server) { stores in
                let store = stores[0]
                let key = "sha256:retried"
                let token = ClaimToken()
                let claim = try await store.claim(
                    key, owner: "relay-0", inputRecord: Self.record(1), claimTTL: .seconds(60), token: token
                ).claimed()
                let sameClaim = try await store.claim(
                    key, owner: "relay-0", inputRecord: Self.record(1), claimTTL: .seconds(60), token: token
                ).claimed()
                #expect(claim.token == sameClaim.token)
                #expect(claim.attempts == 1 && sameClaim.attempts == 1)
                #expect(claim.firstAttemptAt == sameClaim.firstAttemptAt)
                let recorded = try await store.recordSubmitted(claim, requestId: "r", title: "t", httpStatus: 201)
                let recordedAgain = try await store.recordSubmitted(claim, requestId: "r", title: "t", httpStatus: 201)
                #expect(recorded != nil)
                #expect(recorded == recordedAgain)
            }
        }
    }

    /// A claim whose caller is cancelled while it waits for the key's row lock (another relay's insert of the key,
    /// not yet committed) lands once the lock is free; it is given back then, so that the key is not held until
    /// the claim expires. When the other relay's row was an expired claim, the cancelled claim took it over: given
    /// back, it expires at once, and the next claim takes it over, still in doubt.
    @Test(arguments: [false, true])
    func aClaimCancelledWhileItWaitsForTheKeysLockIsGivenBackOnceItLands(otherClaimCommits: Bool) async throws {
        try await PostgresServer.with { server in
            try await withClients(3, of: server) { clients in
                try await prepareAtOnce(clients)
                let store = SharedLeadStore(client: clients[0], logger: quietLogger)
                let key = "sha256:cancelled-while-out"
                let (inserted, insertedContinuation) = AsyncStream<Void>.makeStream()
                let (decided, decide) = AsyncStream<Void>.makeStream()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await clients[1].withConnection { connection in
                            try await connection.query("BEGIN", logger: quietLogger)
                            try await connection.query(
                                """
                                INSERT INTO lead_relay_dedupe (dedupe_key, state, claim_owner, claim_token,
                                    claim_expires_at, input_topic, input_partition, input_offset, attempts,
                                    first_attempt_at)
                                VALUES (\(key), 'claimed', 'relay-stopped', gen_random_uuid(),
                                    clock_timestamp() - interval '1 second', 'leads.submitted', 0, 0, 1,
                                    clock_timestamp())
                                """, logger: quietLogger)
                            insertedContinuation.yield()
                            for await _ in decided {}
                            try await connection.query(
                                PostgresQuery(unsafeSQL: otherClaimCommits ? "COMMIT" : "ROLLBACK"), logger: quietLogger
                            )
                        }
                    }
                    for await _ in inserted { break }
                    let claiming = Task {
                        try await store.claimBeforeAnyPost(
                            key, owner: "relay-cancelled", inputRecord: Self.record(1), claimTTL: .seconds(3600),
                            token: ClaimToken())
                    }
                    try await waitUntil("the claim to wait for the key's row lock") {
                        try await clients[2].query(
                            """
                            SELECT count(*) FROM pg_stat_activity
                            WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT * FROM lead_relay_claim(%'
                            """, logger: quietLogger
                        ).decode(Int.self).firstOfAll() == 1
                    }
                    claiming.cancel()
                    decide.finish()
                    await #expect(throws: CancellationError.self) { try await claiming.value }
                    try await group.waitForAll()
                }
                let next = try await store.claim(
                    key, owner: "relay-next", inputRecord: Self.record(2), claimTTL: .seconds(60))
                if otherClaimCommits {
                    guard case .takenOver(let claim, let previousOwner, let previousRecord) = next else {
                        throw UnexpectedOutcome(description: "expected taken over: \(next)")
                    }
                    #expect(previousOwner == "relay-cancelled")
                    #expect(previousRecord == Self.record(1))
                    #expect(claim.attempts == 3)
                } else {
                    #expect(try next.claimed().attempts == 1)
                }
            }
        }
    }

    @Test func submissionsExpireAfterTheTTLAndArePurged() async throws {
        try await PostgresServer.with { server in
            let configuration = SharedLeadStore.Configuration(submissionTTL: .seconds(1))
            try await withStores(1, of: server, configuration: configuration) { stores in
                let store = stores[0]
                let claim = try await store.claim(
                    "sha256:old", owner: "relay-0", inputRecord: Self.record(1), claimTTL: .seconds(60)
                ).claimed()
                _ = try await store.claim(
                    "sha256:working", owner: "relay-0", inputRecord: Self.record(2), claimTTL: .seconds(60))
                _ = try await store.recordSubmitted(claim, requestId: "r", title: "t", httpStatus: 201)
                // A claim is not a submission: a lookup returns only what the API accepted.
                #expect(
                    try await Set(store.submissions(forKeys: ["sha256:old", "sha256:working"]).keys) == ["sha256:old"])
                try await waitUntil("the submission to expire") {
                    try await store.submissions(forKeys: ["sha256:old"]).isEmpty
                }
                #expect(try await store.purgeExpired() == 1)
                let fresh = try await store.claim(
                    "sha256:old", owner: "relay-0", inputRecord: Self.record(3), claimTTL: .seconds(60)
                ).claimed()
                #expect(fresh.attempts == 1)
                try await store.checkHealth()
            }
        }
    }

    @Test func severalRelaysCreateTheSchemaAtOnce() async throws {
        try await PostgresServer.with { server in
            try await withClients(6, of: server) { clients in
                try await prepareAtOnce(clients)
                let versions = try await clients[0].query("SELECT version FROM lead_relay_schema_migrations")
                    .decode(Int32.self).reduce(into: []) { $0.append($1) }
                #expect(versions.sorted() == SharedStateSchema.migrations.map(\.version))
                for client in clients {
                    try await SharedLeadStore(client: client, logger: quietLogger).checkHealth()
                    try await SharedRateBudget(
                        client: client, configuration: .init(budgetKey: "schema"), holder: "relay", logger: quietLogger
                    ).checkHealth()
                }
                // And again, as a relay restarted on a database that has everything: nothing to do, no error.
                try await SharedStateSchema.prepare(client: clients[0], logger: quietLogger)
                #expect(
                    try await clients[0].query("SELECT count(*) FROM lead_relay_schema_migrations")
                        .decode(Int.self).reduce(0, +) == SharedStateSchema.migrations.count)
            }
        }
    }
}
