import Foundation
import SharedState
import TestSupport
import Testing

@testable import LeadRelay

@Suite struct DedupeStoreTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000.25)

    static func lead(_ key: String, at submittedAt: Date = start) -> SubmittedLead {
        SubmittedLead(
            dedupeKey: key, requestId: "req-\(key)", title: "Lead received", submittedAt: submittedAt, httpStatus: 201,
            attempts: 2, firstAttemptAt: submittedAt.addingTimeInterval(-1.5))
    }

    @Test func remembersWithinTheTTLAndForgetsAfter() throws {
        let scratch = try ScratchDirectory()
        let store = try DedupeStore(path: scratch.path("d.sqlite"), ttl: .seconds(3600))
        #expect(try store.submission(forKey: "ce:portal|1", now: Self.start) == nil)
        try store.recordSubmitted(Self.lead("ce:portal|1"))
        #expect(
            try store.submission(forKey: "ce:portal|1", now: Self.start.addingTimeInterval(10))
                == Self.lead("ce:portal|1"))
        #expect(try store.submission(forKey: "ce:portal|1", now: Self.start.addingTimeInterval(3600)) != nil)
        #expect(try store.submission(forKey: "ce:portal|1", now: Self.start.addingTimeInterval(3601)) == nil)
        #expect(try store.submission(forKey: "ce:portal|2", now: Self.start) == nil)
    }

    @Test func remembersTheSubmittedInputRecord() throws {
        let scratch = try ScratchDirectory()
        let store = try DedupeStore(path: scratch.path("d.sqlite"), ttl: .seconds(3600))
        var lead = Self.lead("ce:portal|1")
        lead.inputRecord = RecordPosition(topic: "leads.submitted", partition: 3, offset: 41)
        try store.recordSubmitted(lead)
        #expect(try store.submission(forKey: "ce:portal|1", now: Self.start) == lead)
    }

    @Test func survivesReopening() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.path("d.sqlite")
        do {
            let store = try DedupeStore(path: path, ttl: .seconds(3600))
            try store.recordSubmitted(Self.lead("sha256:abc"))
        }
        let reopened = try DedupeStore(path: path, ttl: .seconds(3600))
        #expect(try reopened.submission(forKey: "sha256:abc", now: Self.start) == Self.lead("sha256:abc"))
        #expect(reopened.checkHealth())
    }

    /// A begun post survives a crash (the store reopened), so the next run finds the lead in doubt since then; a
    /// submission or a release ends it, and a reconciled submission keeps the API's lead id.
    @Test func aBegunAttemptOutlivesACrashUntilItsOutcome() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.path("d.sqlite")
        do {
            let store = try DedupeStore(path: path, ttl: .seconds(3600))
            #expect(try store.noteAttemptBegun(forKey: "ce:portal|1", at: Self.start) == nil)
            #expect(try store.noteAttemptBegun(forKey: "ce:portal|2", at: Self.start) == nil)
        }
        let reopened = try DedupeStore(path: path, ttl: .seconds(3600))
        #expect(try reopened.noteAttemptBegun(forKey: "ce:portal|1") == Self.start)
        var found = Self.lead("ce:portal|1")
        (found.requestId, found.title, found.httpStatus, found.leadId) = ("", "", 0, "lead-000000000007")
        try reopened.recordSubmitted(found)
        #expect(try reopened.noteAttemptBegun(forKey: "ce:portal|1") == nil)
        let stored = try #require(try reopened.submission(forKey: "ce:portal|1", now: Self.start))
        #expect(stored.isReconciled && stored.leadId == "lead-000000000007")
        try reopened.forgetAttempt(forKey: "ce:portal|2")
        #expect(try reopened.noteAttemptBegun(forKey: "ce:portal|2") == nil)
    }

    /// A lead abandoned before this relay sent it frees its key, unless its reservation was in doubt (a run before
    /// began a post of it and crashed): then the next reservation is in doubt too, and looks the lead up first.
    @Test func anAbandonedReservationKeepsTheDoubtOfAnEarlierAttempt() throws {
        let scratch = try ScratchDirectory()
        let store = try DedupeStore(path: scratch.path("d.sqlite"), ttl: .seconds(3600))
        let position = RecordPosition(topic: "leads.submitted", partition: 0, offset: 1)
        func reserve(_ key: String) throws -> LeadReservation {
            let outcome = try store.reserve(key, for: position, token: ClaimToken(), renewing: nil)
            guard case .reserved(let reservation) = outcome else {
                throw UnexpectedAnswer(what: "expected a reservation of \(key): \(outcome)")
            }
            return reservation
        }
        #expect(try store.noteAttemptBegun(forKey: "ce:portal|crashed", at: Self.start) == nil)
        let inDoubt = try reserve("ce:portal|crashed")
        #expect(inDoubt.inDoubtSince == Self.start)
        try store.abandon("ce:portal|crashed", inDoubt)
        #expect(try reserve("ce:portal|crashed").inDoubtSince == Self.start)

        let fresh = try reserve("ce:portal|fresh")
        #expect(fresh.inDoubtSince == nil)
        try store.abandon("ce:portal|fresh", fresh)
        #expect(try reserve("ce:portal|fresh").inDoubtSince == nil)
    }

    @Test func resubmissionAfterExpiryReplacesTheOldEntry() throws {
        let scratch = try ScratchDirectory()
        let store = try DedupeStore(path: scratch.path("d.sqlite"), ttl: .seconds(60))
        try store.recordSubmitted(Self.lead("k"))
        let later = Self.lead("k", at: Self.start.addingTimeInterval(120))
        try store.recordSubmitted(later)
        #expect(try store.submission(forKey: "k", now: Self.start.addingTimeInterval(130)) == later)
    }

    @Test func purgeRemovesOnlyExpiredEntries() throws {
        let scratch = try ScratchDirectory()
        let store = try DedupeStore(path: scratch.path("d.sqlite"), ttl: .seconds(100))
        try store.recordSubmitted(Self.lead("old"))
        try store.recordSubmitted(Self.lead("new", at: Self.start.addingTimeInterval(50)))
        #expect(try store.purgeExpired(now: Self.start.addingTimeInterval(120)) == 1)
        #expect(try store.submission(forKey: "new", now: Self.start.addingTimeInterval(120)) != nil)
        #expect(try store.purgeExpired(now: Self.start.addingTimeInterval(120)) == 0)
    }

    @Test func concurrentReadersAndWriters() async throws {
        let scratch = try ScratchDirectory()
        let store = try DedupeStore(path: scratch.path("d.sqlite"), ttl: .seconds(3600))
        try await withThrowingTaskGroup { group in
            for writer in 0..<4 {
                group.addTask {
                    for index in 0..<50 {
                        try store.recordSubmitted(Self.lead("w\(writer)-\(index)"))
                        _ = try store.submission(forKey: "w\((writer + 1) % 4)-\(index)", now: Self.start)
                    }
                }
            }
            try await group.waitForAll()
        }
        for writer in 0..<4 {
            for index in 0..<50 {
                #expect(try store.submission(forKey: "w\(writer)-\(index)", now: Self.start) != nil)
            }
        }
    }

    @Test func unopenablePathThrows() {
        #expect(throws: (any Error).self) {
            try DedupeStore(path: "/nonexistent-dir/lead-relay/d.sqlite", ttl: .seconds(1))
        }
    }
}
