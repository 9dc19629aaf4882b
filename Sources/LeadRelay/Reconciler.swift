import Foundation
import LeadEvents
import Logging
import Metrics
import RelayPrimitives
import SeekerLeads
import Synchronization

/// What identifies a lead in the API's listing, from the request that was posted: the classified it is about, who
/// sent it (email, first and last name) and what they wrote. The API assigns no key of ours to a lead, so a listed
/// lead is the one posted only when all of these are equal; together they tell apart two leads of one seeker about
/// one classified (the message differs) and two seekers writing the same message. A lead whose contact data was
/// erased (GDPR) lists none of them, and so matches nothing. (`submittedDate` is left out: the API may write it back
/// in another form of the same instant, and a lead it failed to match would be posted twice.)
struct LeadFingerprint: Sendable, Equatable {
    var classifiedId: String
    var email: String
    var firstName: String?
    var lastName: String
    var message: String

    init(_ request: CreateLeadRequest) {
        classifiedId = request.classifiedId
        email = request.email
        firstName = request.firstName
        lastName = request.lastName
        message = request.message
    }

    func matches(_ listed: ListedLead) -> Bool {
        guard let listedEmail = listed.email, listed.classifiedId == classifiedId else { return false }
        // Emails compare without case, as mail systems treat them; the rest exactly as sent.
        return listedEmail.lowercased() == email.lowercased() && listed.firstName == firstName
            && listed.lastName == lastName && listed.message == message
    }
}

/// The API's listing of the leads it ingested, as reconciliation reads it.
protocol LeadListing: Sendable {
    /// Every lead ingested from `from` to `to`, all pages.
    func listLeads(ingestedFrom from: Date, to: Date) async throws -> [ListedLead]
}

/// Looks leads in doubt up in the API's listing, many with one listing.
///
/// A lookup waits for the next listing to begin; one listing, from the earliest first write among the lookups
/// waiting (less `skewAllowance`, for the API's clock against ours) to now, answers all of them, so a burst of
/// ambiguous failures costs a few pages, not a listing per lead. Listings are at least `spacing` apart, so that a
/// steady trickle of lookups shares them too. A listing that fails is tried again (after a back-off) for the same
/// lookups: a lead in doubt is posted again only on a listing that does not have it.
final class Reconciler: Sendable {
    private struct Lookup {
        var id: UInt64
        var fingerprint: LeadFingerprint
        var firstWrittenAt: Date
        var continuation: CheckedContinuation<String?, any Error>
    }

    private struct State {
        var waiting: [Lookup] = []
        var listing = false
        var nextID: UInt64 = 0
    }

    private let listing: any LeadListing
    private let skewAllowance: Duration
    private let spacing: Duration
    private let logger: Logger
    private let state = Mutex(State())
    private let waitingGauge = Gauge(label: "lead_relay_reconciliations_waiting")
    private let found = Counter(label: "lead_relay_reconciled_total", dimensions: [("result", "found")])
    private let notFound = Counter(label: "lead_relay_reconciled_total", dimensions: [("result", "not_found")])
    private let inDoubtAfterAnswer = Counter(
        label: "lead_relay_in_doubt_total", dimensions: [("cause", InDoubtCause.ambiguousAnswer.rawValue)])
    private let inDoubtAfterUnfinishedAttempt = Counter(
        label: "lead_relay_in_doubt_total", dimensions: [("cause", InDoubtCause.unfinishedAttempt.rawValue)])

    /// Why a lead is in doubt, as `lead_relay_in_doubt_total` labels it.
    enum InDoubtCause: String {
        /// A timeout or a dropped connection after the write, or a 500, 502 or 504.
        case ambiguousAnswer = "ambiguous_answer"
        /// An attempt begun before this one (by a run of this relay that crashed, or a record given up on) that
        /// came to no outcome. (A shared store's taken-over claims are counted as `claim_taken_over` by its adapter.)
        case unfinishedAttempt = "unfinished_attempt"
    }

    init(
        listing: any LeadListing, skewAllowance: Duration = .seconds(5), spacing: Duration = .seconds(1),
        logger: Logger
    ) {
        self.listing = listing
        self.skewAllowance = skewAllowance
        self.spacing = spacing
        self.logger = logger
        waitingGauge.record(0)
        found.increment(by: 0)
        notFound.increment(by: 0)
        inDoubtAfterAnswer.increment(by: 0)
        inDoubtAfterUnfinishedAttempt.increment(by: 0)
    }

    /// Counts a lead put in doubt.
    func countInDoubt(_ cause: InDoubtCause) {
        switch cause {
        case .ambiguousAnswer: inDoubtAfterAnswer.increment()
        case .unfinishedAttempt: inDoubtAfterUnfinishedAttempt.increment()
        }
    }

    /// The API's id of the lead `fingerprint` describes, when a listing from `firstWrittenAt` on has it; nil when
    /// it has not. Throws `CancellationError` when the task is cancelled first.
    func lookUp(_ fingerprint: LeadFingerprint, firstWrittenAt: Date) async throws -> String? {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        let leadId = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let startListing = state.withLock { state -> Bool in
                    state.waiting.append(
                        Lookup(
                            id: id, fingerprint: fingerprint, firstWrittenAt: firstWrittenAt,
                            continuation: continuation))
                    waitingGauge.record(state.waiting.count)
                    guard !state.listing else { return false }
                    state.listing = true
                    return true
                }
                if startListing {
                    Task { await self.listWhileWaiting() }
                }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> Lookup? in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiting.remove(at: index)
            }
            cancelled?.continuation.resume(throwing: CancellationError())
        }
        (leadId == nil ? notFound : found).increment()
        return leadId
    }

    /// Lists for the waiting lookups until none waits.
    private func listWhileWaiting() async {
        let backoff = Backoff(base: .milliseconds(200), max: .seconds(10))
        var failures = 0
        var lastListing: ContinuousClock.Instant?
        while true {
            if let lastListing { try? await Task.sleep(until: lastListing + spacing, clock: .continuous) }
            let batch = state.withLock { state -> [Lookup] in
                if state.waiting.isEmpty { state.listing = false }
                return state.waiting
            }
            guard let earliest = batch.map(\.firstWrittenAt).min() else { return }
            lastListing = .now
            let leads: [ListedLead]
            do {
                leads = try await listing.listLeads(
                    ingestedFrom: earliest.addingTimeInterval(-skewAllowance.timeInterval), to: Date())
                failures = 0
            } catch {
                failures += 1
                logger.warning(
                    "listing the API's leads for reconciliation failed; trying again",
                    metadata: ["error": "\(error)", "failed_attempts": "\(failures)", "waiting": "\(batch.count)"])
                try? await Task.sleep(for: backoff.delay(afterAttempt: failures))
                continue
            }
            let answered = Set(batch.map(\.id))
            let served = state.withLock { state -> [Lookup] in
                let served = state.waiting.filter { answered.contains($0.id) }
                state.waiting.removeAll { answered.contains($0.id) }
                waitingGauge.record(state.waiting.count)
                return served
            }
            for lookup in served {
                lookup.continuation.resume(returning: leads.first { lookup.fingerprint.matches($0) }?.leadId)
            }
        }
    }
}

extension SeekerLeadsClient: LeadListing {}
