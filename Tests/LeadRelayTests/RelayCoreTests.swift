import Foundation
import Kafka
import LeadEvents
import LeadRelayDemo
import SeekerLeads
import SharedState
import TestSupport
import Testing

@testable import LeadRelay

/// The relay core (`RelayService`, `RecordProcessor`, `OutcomePublisher`) over in-memory parts: what the API received,
/// what landed on each topic and which offsets were committed, without a broker, an API or a process.
@Suite struct RelayCoreTests {
    private static let p0 = InProcessRelay.partition(0)

    private static func results(_ relay: InProcessRelay) -> [[String: Any]] {
        relay.producer.messages(of: InProcessRelay.resultsTopic).compactMap { jsonObject($0.value) }
    }

    private static func distinctLeads(_ count: Int, namespace: String) -> [SampleLeads.Record] {
        distinctValidLeads(count, namespace: namespace, seed: 3)
    }

    /// Runs `relay` on `records` (of partition 0, from offset 0) until all of them are committed.
    private static func runUntilCommitted(_ relay: InProcessRelay, _ records: [KafkaConsumerRecord]) async throws {
        try await relay.run {
            relay.consumer.assign([p0])
            relay.consumer.deliver(records)
            try await waitUntil("every offset committed") { relay.consumer.committed[p0] == Int64(records.count) }
        }
    }

    @Test func eachRecordOfAMixGetsOneOutcomeEachLeadIsPostedOnceAndEveryOffsetIsCommitted() async throws {
        let samples = SampleLeads.mix(
            count: 80, duplicateFraction: 0.2, invalidFraction: 0.2, seed: 7, namespace: "core")
        let records = InProcessRelay.records(samples)
        let relay = InProcessRelay()
        try await relay.run {
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(Array(records[..<40]))
            relay.consumer.deliver(Array(records[40...]))
            try await waitUntil("every offset committed") { relay.consumer.committed[Self.p0] == 80 }
        }

        let validIDs = samples.compactMap(\.classifiedID)
        #expect(relay.submitter.received.sorted() == Set(validIDs).sorted())
        let results = Self.results(relay)
        #expect(results.count == validIDs.count)
        for id in Set(validIDs) {
            let ofLead = results.filter { $0["classifiedId"] as? String == id }
            #expect(ofLead.count == validIDs.filter { $0 == id }.count, "results of \(id)")
            #expect(ofLead.filter { $0["status"] as? String == "SUBMITTED" }.count == 1, "SUBMITTED of \(id)")
            #expect(Set(ofLead.compactMap { $0["requestId"] as? String }).count == 1, "requestIds of \(id)")
        }
        let deadLetters = relay.producer.messages(of: InProcessRelay.deadLetterTopic)
        let invalid = zip(records, samples).filter { $0.1.classifiedID == nil }
        #expect(deadLetters.count == invalid.count)
        for (letter, (record, sample)) in zip(deadLetters, invalid) {
            #expect(letter.key == record.key)
            #expect(letter.value == record.value)
            #expect(Array(letter.headers.prefix(record.headers.count)) == record.headers)
            #expect(
                SampleLeads.Expectation.deadLettered(reason: letter.header("lead-relay.error.reason") ?? "")
                    == sample.expectation)
            #expect(letter.header("lead-relay.source.offset") == String(record.offset))
        }
        let resultOffsets = results.compactMap { ($0["input"] as? [String: Any])?["offset"] as? Int }
        let deadLetterOffsets = deadLetters.compactMap { $0.header("lead-relay.source.offset").flatMap(Int.init) }
        #expect((resultOffsets + deadLetterOffsets).sorted() == Array(0..<80))
    }

    /// Another relay is posting the same lead (a re-send under another Kafka key): this relay gives its attempt slot
    /// back, so other leads go on (one slot only here), waits for that claim's outcome, and yields DUPLICATE.
    @Test func aLeadAnotherRelayIsPostingWaitsForItsOutcomeWithoutHoldingASlot() async throws {
        let leads = Self.distinctLeads(3, namespace: "held")
        let records = InProcessRelay.records(leads)
        let key = try #require(
            try? LeadEventDecoder().decode(key: leads[0].key, value: leads[0].value, headers: []).get()
        ).dedupeKey
        let store = InMemorySubmissionStore()
        store.holdElsewhere(key)
        let relay = InProcessRelay(store: store, maxInFlight: 1)
        try await relay.run {
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(records)
            try await waitUntil("the other two leads posted while the first waits") {
                relay.submitter.received.count == 2 && store.waitsForOtherRelays == 1
            }
            #expect(relay.consumer.committed[Self.p0] == nil)
            store.finishElsewhere(
                SubmittedLead(
                    dedupeKey: key, requestId: "posted-by-another-relay", title: "Lead", submittedAt: Date(),
                    httpStatus: 201, attempts: 1, firstAttemptAt: Date(),
                    inputRecord: RecordPosition(topic: InProcessRelay.inputTopic, partition: 9, offset: 0)))
            try await waitUntil("every offset committed") { relay.consumer.committed[Self.p0] == 3 }
        }
        #expect(relay.submitter.received.sorted() == leads[1...].compactMap(\.classifiedID).sorted())
        let first = try #require(Self.results(relay).first { ($0["input"] as? [String: Any])?["offset"] as? Int == 0 })
        #expect(first["status"] as? String == "DUPLICATE")
        #expect(first["requestId"] as? String == "posted-by-another-relay")
    }

    /// A 502 may come after the API stored the lead: the lead is looked up before it is posted again. Found, it is
    /// SUBMITTED as reconciled, with the listing's lead id and no answer's fields, and a later copy is its
    /// DUPLICATE with the same lead id; not found, it is posted again. Both lookups share listings.
    @Test func aLeadInDoubtIsLookedUpBeforeItIsPostedAgain() async throws {
        let leads = Self.distinctLeads(2, namespace: "doubt")
        let (stored, lost) = (try #require(leads[0].classifiedID), try #require(leads[1].classifiedID))
        let submitter = ScriptedSubmitter()
        submitter.answer(stored, with: .storeThenAnswer502)
        submitter.answer(lost, with: .answer502WithoutStoring)
        let relay = InProcessRelay(submitter: submitter)
        try await relay.run {
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(InProcessRelay.records(leads + [leads[0]]))
            try await waitUntil("every offset committed") { relay.consumer.committed[Self.p0] == 3 }
        }
        // The stored lead was posted once; the lost one twice, the second time after the listing had it not.
        #expect(submitter.received.sorted() == [stored, lost, lost].sorted())
        #expect(submitter.listings >= 1 && submitter.listings <= 2)
        let results = Self.results(relay).sorted {
            ($0["input"] as? [String: Any])?["offset"] as? Int ?? 0 < ($1["input"] as? [String: Any])?["offset"] as? Int
                ?? 0
        }
        #expect(results.count == 3)
        #expect(results[0]["status"] as? String == "SUBMITTED")
        #expect(results[0]["reconciled"] as? Bool == true)
        #expect(results[0]["leadId"] as? String == ScriptedSubmitter.leadID(of: stored))
        #expect(
            results[0]["requestId"] is NSNull && results[0]["httpStatus"] is NSNull && results[0]["title"] is NSNull)
        #expect(results[1]["status"] as? String == "SUBMITTED")
        #expect(results[1]["reconciled"] as? Bool == false)
        #expect(results[1]["httpStatus"] as? Int == 201)
        #expect(results[2]["status"] as? String == "DUPLICATE")
        #expect(results[2]["reconciled"] as? Bool == true)
        #expect(results[2]["leadId"] as? String == ScriptedSubmitter.leadID(of: stored))
    }

    /// A listed lead matches a lead in doubt only on every identifying field, and one whose contact data was erased
    /// (GDPR: null contact fields) matches nothing.
    @Test func aLeadInDoubtMatchesOnlyAListingWithAllItsIdentifyingFields() throws {
        let request = try JSONDecoder().decode(
            CreateLeadRequest.self,
            from: Data(
                #"{"firstName":"Ada","lastName":"Doe","email":"Ada@Example.com","phoneNumbers":[{"number":"+33511223344"}],"message":"Visit?","classifiedId":"12ABCDEFGHJK","submittedDate":"2026-12-01T10:00:00Z"}"#
                    .utf8))
        let fingerprint = LeadFingerprint(request)
        let listed = ListedLead(
            leadId: "lead-1", classifiedId: "12ABCDEFGHJK", email: "ada@example.com", firstName: "Ada",
            lastName: "Doe", message: "Visit?")
        #expect(fingerprint.matches(listed))
        var otherMessage = listed
        otherMessage.message = "Still available?"
        #expect(!fingerprint.matches(otherMessage))
        var otherClassified = listed
        otherClassified.classifiedId = "12ABCDEFGHJM"
        #expect(!fingerprint.matches(otherClassified))
        let erased = ListedLead(
            leadId: "lead-1", classifiedId: "12ABCDEFGHJK", email: nil, firstName: nil, lastName: nil, message: nil)
        #expect(!fingerprint.matches(erased))
    }

    @Test func aLeadTheStoreAlreadyHoldsIsNotPostedAgain() async throws {
        let lead = Self.distinctLeads(1, namespace: "stored")[0]
        let records = InProcessRelay.records([lead, lead])
        let key = try #require(try? LeadEventDecoder().decode(key: lead.key, value: lead.value, headers: []).get())
            .dedupeKey
        let store = InMemorySubmissionStore()
        // Submitted before a crash that came ahead of its result: its first record is delivered again.
        try await store.recordSubmitted(
            SubmittedLead(
                dedupeKey: key, requestId: "request-before-crash", title: "Lead", submittedAt: Date(), httpStatus: 201,
                attempts: 1, firstAttemptAt: Date(), inputRecord: records[0].position),
            under: .local)
        let relay = InProcessRelay(store: store)
        try await Self.runUntilCommitted(relay, records)

        #expect(relay.submitter.received.isEmpty)
        let results = Self.results(relay)
        #expect(results.compactMap { $0["status"] as? String } == ["SUBMITTED", "DUPLICATE"])
        #expect(results.allSatisfy { $0["requestId"] as? String == "request-before-crash" })
    }

    /// A reservation retried after its answer was lost names the same reservation, so that a shared store
    /// recognises its own claim instead of finding the key held (and waiting out its TTL, then posting in doubt).
    @Test func aReservationRetriedAfterALostAnswerIsTheSameReservation() async throws {
        let lead = Self.distinctLeads(1, namespace: "lost-answer")[0]
        let store = InMemorySubmissionStore()
        store.loseAnswers(ofNextReservations: 2)
        let relay = InProcessRelay(store: store)
        try await Self.runUntilCommitted(relay, InProcessRelay.records([lead]))

        #expect(relay.submitter.received == [lead.classifiedID])
        let tokens = try #require(store.reservationTokens.values.first)
        #expect(tokens.count == 3)
        #expect(Set(tokens).count == 1)
    }

    @Test func aRejectedLeadIsDeadLetteredWithTheAPIsAnswerAndARedrivenCopyIsPostedAgain() async throws {
        let lead = Self.distinctLeads(1, namespace: "rejected")[0]
        let id = try #require(lead.classifiedID)
        let submitter = ScriptedSubmitter()
        submitter.answer(id, with: .reject(httpStatus: 422))
        let relay = InProcessRelay(submitter: submitter)
        try await relay.run {
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(InProcessRelay.records([lead]))
            try await waitUntil("the rejection committed") { relay.consumer.committed[Self.p0] == 1 }
            submitter.answer(id, with: .accept)
            relay.consumer.deliver(InProcessRelay.records([lead], from: 1))
            try await waitUntil("the re-driven copy committed") { relay.consumer.committed[Self.p0] == 2 }
        }

        #expect(submitter.received == [id, id])
        let deadLetters = relay.producer.messages(of: InProcessRelay.deadLetterTopic)
        #expect(deadLetters.count == 1)
        #expect(deadLetters.first?.value == lead.value)
        #expect(deadLetters.first?.header("lead-relay.error.reason") == "rejected-by-api")
        #expect(deadLetters.first?.header("lead-relay.error.http-status") == "422")
        #expect(deadLetters.first?.header("lead-relay.error.details") == #"[{"field":"email"}]"#)
        #expect(Self.results(relay).compactMap { $0["status"] as? String } == ["SUBMITTED"])
        #expect(relay.store.all.count == 1)
    }

    @Test func aRevocationCommitsWhatFinishedAndLeavesUnsentLeadsToTheNextOwner() async throws {
        let leads = Self.distinctLeads(4, namespace: "revoked")
        let ids = leads.compactMap(\.classifiedID)
        let submitter = ScriptedSubmitter(defaultAnswer: .holdUntilReleased)
        // One lead at a time reaches the API: the others wait for their turn when the partition goes.
        let relay = InProcessRelay(submitter: submitter, maxInFlight: 1, shutdownTimeout: .seconds(2))
        let records = InProcessRelay.records(leads)
        var abandonedInFlight = 0
        try await relay.run {
            relay.consumer.assign([Self.p0])
            // The first lead alone, then the others: each lead has a task of its own, and tasks started together
            // may reach the one attempt slot in any order.
            relay.consumer.deliver(Array(records[..<1]))
            try await waitUntil("the first lead at the API") { submitter.isHolding(ids[0]) }
            relay.consumer.deliver(Array(records[1...]))
            try await waitUntil("the three others taken in") { relay.metric("lead_relay_records_consumed_total") == 4 }
            async let revoked: Void = relay.consumer.revoke([Self.p0])
            submitter.release(ids[0])
            try await revoked
            #expect(relay.consumer.committed[Self.p0] == 1)
            // The lead after it may have reached the API before the revocation did; then it was abandoned in flight
            // at the revocation's deadline, and counted.
            let postedAtRevocation = submitter.received
            #expect(postedAtRevocation.count <= 2)
            abandonedInFlight = postedAtRevocation.count - 1
            #expect(relay.metric("lead_relay_abandoned_in_flight_total") == Double(abandonedInFlight))

            for id in ids { submitter.answer(id, with: .accept) }
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(Array(records[1...]))
            try await waitUntil("the next owner committed the rest") { relay.consumer.committed[Self.p0] == 4 }
        }

        #expect(submitter.received.filter { $0 == ids[0] }.count == 1)
        #expect(Set(submitter.received) == Set(ids))
        #expect(submitter.received.count == ids.count + abandonedInFlight)
        #expect(
            Self.results(relay).compactMap { $0["classifiedId"] as? String }.sorted() == ids.sorted())
    }

    @Test func aShutdownAbandonsALeadWhoseAnswerOutlastsTheTimeoutAndLeavesItUncommitted() async throws {
        let leads = Self.distinctLeads(2, namespace: "shutdown")
        let ids = leads.compactMap(\.classifiedID)
        let submitter = ScriptedSubmitter()
        submitter.answer(ids[1], with: .holdUntilReleased)
        let relay = InProcessRelay(submitter: submitter, shutdownTimeout: .milliseconds(200))
        try await relay.run {
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(InProcessRelay.records(leads))
            try await waitUntil("the first lead committed, the second at the API") {
                relay.consumer.committed[Self.p0] == 1 && submitter.isHolding(ids[1])
            }
        }

        #expect(relay.consumer.isClosed)
        #expect(relay.consumer.committed[Self.p0] == 1)
        #expect(relay.metric("lead_relay_abandoned_in_flight_total") == 1)
        #expect(Self.results(relay).compactMap { $0["classifiedId"] as? String } == [ids[0]])
    }

    @Test func aFailedPublishIsRetriedAndItsOffsetWaitsForIt() async throws {
        let leads = Self.distinctLeads(3, namespace: "publish")
        let relay = InProcessRelay()
        relay.producer.failWrites(2)
        try await Self.runUntilCommitted(relay, InProcessRelay.records(leads))

        #expect(relay.producer.failedWrites == 2)
        #expect(relay.submitter.received.count == 3)
        #expect(
            Self.results(relay).compactMap { $0["classifiedId"] as? String }.sorted()
                == leads.compactMap(\.classifiedID).sorted())
    }

    @Test func aCommitTheGroupRefusedIsMadeAgain() async throws {
        let invalid = SampleLeads.mix(count: 40, duplicateFraction: 0, invalidFraction: 1, seed: 5)
        let relay = InProcessRelay()
        relay.consumer.refuseCommits(3)
        try await Self.runUntilCommitted(relay, InProcessRelay.records(invalid))

        #expect(relay.consumer.refusedCommits == 3)
        #expect(relay.submitter.received.isEmpty)
        #expect(relay.producer.messages(of: InProcessRelay.deadLetterTopic).count == 40)
    }

    @Test func aLostPartitionIsNotCommittedAndItsPublishedOutcomesAreCountedAsRepeated() async throws {
        let leads = Self.distinctLeads(3, namespace: "lost")
        let relay = InProcessRelay()
        relay.consumer.refuseCommits(.max)
        try await relay.run {
            relay.consumer.assign([Self.p0])
            relay.consumer.deliver(InProcessRelay.records(leads))
            try await waitUntil("three results") { Self.results(relay).count == 3 }
            try await relay.consumer.revoke([Self.p0], lost: true)
        }

        #expect(relay.consumer.committed.isEmpty)
        #expect(relay.metric("lead_relay_repeated_outcomes_total") == 3)
    }
}
