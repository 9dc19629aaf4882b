import AsyncHTTPClient
import Foundation
import SeekerLeadsSimulator
import TestSupport
import Testing

/// Plain HTTP to an in-process simulator, for the routes the client module does not call (`GET /leads`,
/// `GET /leads/{leadId}`, `/_sim/...`). Paced requests start at least `spacing` apart, so that a test walking
/// pages stays inside the API's budget (10 starts per 200 ms) with room for the simulator's read jitter.
struct SimulatorHTTP: Sendable {
    struct Answer: Sendable {
        /// The HTTP status, or 0 when the connection closed without an answer.
        let status: Int
        let contentType: String?
        let body: Data

        func decoded<T: Decodable>(_ type: T.Type = T.self) throws -> T {
            try JSONDecoder().decode(T.self, from: body)
        }

        func object() throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        }
    }

    static let token = "test-static-token"
    static let spacing: Duration = .milliseconds(25)

    let baseURL: String
    let paced: Bool
    private let http: HTTPClient
    private let nextStart = Locked(ContinuousClock.now)

    init(_ simulator: RunningSimulator, paced: Bool = true) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        baseURL = simulator.baseURL
        self.paced = paced
    }

    func get(_ pathAndQuery: String, token: String? = Self.token) async throws -> Answer {
        try await send("GET", pathAndQuery, token: token)
    }

    func postLead(_ index: Int) async throws -> Answer {
        try await send("POST", "/leads", body: validLeadBody(index))
    }

    func send(
        _ method: String, _ pathAndQuery: String, body: [UInt8]? = nil, token: String? = Self.token
    ) async throws -> Answer {
        if paced {
            let start = nextStart.withLock { next -> ContinuousClock.Instant in
                let start = max(next, .now)
                next = start + Self.spacing
                return start
            }
            try await Task.sleep(until: start)
        }
        var request = HTTPClientRequest(url: baseURL + pathAndQuery)
        request.method = .init(rawValue: method)
        request.headers.add(name: "User-Agent", value: "test/1")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(60))
        } catch let error as HTTPClientError where error == .remoteConnectionClosed {
            return Answer(status: 0, contentType: nil, body: Data())
        }
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return Answer(
            status: Int(response.status.code), contentType: response.headers.first(name: "Content-Type"),
            body: Data(bytes.readableBytesView))
    }

    /// Every page of `GET /leads` over the window, following `links.next`.
    func listAll(minDate: Int64, maxDate: Int64, limit: Int?) async throws -> [LeadPage] {
        var pages: [LeadPage] = []
        var next: String? = "/leads?minDate=\(minDate)&maxDate=\(maxDate)" + (limit.map { "&limit=\($0)" } ?? "")
        while let path = next {
            let answer = try await get(path)
            try #require(answer.status == 200, "GET \(path): \(answer.status)")
            let page: LeadPage = try answer.decoded()
            pages.append(page)
            next = page.links.next
        }
        return pages
    }

    /// Sends the requests at once and returns their statuses, sorted.
    func concurrentStatuses(_ requests: [(String, String, [UInt8]?)]) async throws -> [Int] {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for (method, path, body) in requests {
                group.addTask { try await send(method, path, body: body).status }
            }
            return try await group.reduce(into: []) { $0.append($1) }.sorted()
        }
    }

    func shutdown() async throws { try await http.shutdown() }
}

/// `GET /leads` as the tests read it.
struct LeadPage: Decodable {
    struct Metadata: Decodable {
        let count: Int
        let limit: Int
        let minDate: Int64
        let maxDate: Int64
        let start: String?
    }

    struct Links: Decodable {
        let next: String?
    }

    let metadata: Metadata
    let links: Links
    let items: [ListedLead]
}

struct ListedLead: Decodable {
    struct Metadata: Decodable {
        let leadId: String
        let processedAt: String
    }

    struct Contact: Decodable {
        struct Phone: Decodable {
            let number: String
        }

        let lastName: String?
        let email: String?
        let message: String?
        let phoneNumbers: [Phone]
    }

    struct Property: Decodable {
        let classifiedId: String
    }

    let metadata: Metadata
    let contactRequest: Contact
    let property: Property
}

/// The simulator's read-back routes and the faults that make read-back necessary (issue 13).
@Suite(.serialized) struct SimulatorReadBackTests {
    /// Runs `body` against a simulator with the static token, and stops both after it, failed or not.
    func withReadBackSimulator(
        faults: SimulatorFaults = SimulatorFaults(), paced: Bool = true,
        _ body: (SimulatorFixture, SimulatorHTTP) async throws -> Void
    ) async throws {
        let fixture = try await SimulatorFixture.start(faults: faults, oauth: false)
        let http = SimulatorHTTP(fixture.simulator, paced: paced)
        do {
            try await body(fixture, http)
        } catch {
            try? await http.shutdown()
            try? await fixture.stop()
            throw error
        }
        try await http.shutdown()
        try await fixture.stop()
    }

    /// A window around now that holds every lead a test stores.
    static func window() -> (minDate: Int64, maxDate: Int64) {
        let now = Int64(Date().timeIntervalSince1970)
        return (now - 3600, now + 3600)
    }

    static func emails(ofStoredBodies bodies: [Data]) throws -> [String] {
        try bodies.map { body in
            let object = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
            return try #require(object["email"] as? String)
        }
    }

    @Test func pagesListEveryLeadOnceInIngestionOrder() async throws {
        try await withReadBackSimulator { fixture, http in
            // One paced sender for the posts and the reads: the budget sees one client.
            for index in 0..<250 { try #require(try await http.postLead(index).status == 200) }
            let storedEmails = try Self.emails(ofStoredBodies: fixture.simulator.controller.storedLeadBodies())
            #expect(storedEmails.count == 250)
            let (minDate, maxDate) = Self.window()

            let pages = try await http.listAll(minDate: minDate, maxDate: maxDate, limit: nil)
            #expect(pages.map(\.metadata.count) == [100, 100, 50])
            #expect(pages.map(\.metadata.limit) == [100, 100, 100])
            #expect(pages.map { $0.links.next == nil } == [false, false, true])
            #expect(pages.map(\.metadata.start) == [nil] + pages.dropLast().map { $0.items.last?.metadata.leadId })
            let items = pages.flatMap(\.items)
            #expect(items.compactMap(\.contactRequest.email) == storedEmails)
            let ids = items.map(\.metadata.leadId)
            #expect(Set(ids).count == 250)
            #expect(ids == ids.sorted())

            let smallPages = try await http.listAll(minDate: minDate, maxDate: maxDate, limit: 7)
            #expect(smallPages.count == 36)
            #expect(smallPages.dropLast().allSatisfy { $0.items.count == 7 })
            #expect(smallPages.flatMap(\.items).map(\.metadata.leadId) == ids)

            let ingestedAt = try #require(
                items.first.flatMap { ISO8601DateFormatter().date(from: $0.metadata.processedAt) })
            #expect(Int64(ingestedAt.timeIntervalSince1970) >= minDate)
            let later = try await http.get("/leads?minDate=\(maxDate - 60)&maxDate=\(maxDate)")
            #expect(try later.decoded(LeadPage.self).items.isEmpty)
            let one = try await http.get("/leads/\(ids[41])")
            #expect(one.status == 200)
            #expect(try one.decoded(ListedLead.self).contactRequest.email == storedEmails[41])
            #expect(try one.decoded(ListedLead.self).property.classifiedId == "12ABCDEFGHJK")

            let stats = await fixture.simulator.stats()
            #expect(stats.violations == 0)
            #expect(stats.leadsStored == 250)
            #expect(stats.duplicateLeadsReceived == 0)
        }
    }

    @Test func listingChecksItsParameters() async throws {
        try await withReadBackSimulator { fixture, http in
            for index in 0..<2 { #expect(try await http.postLead(index).status == 200) }
            let (minDate, _) = Self.window()
            let sevenDays: Int64 = 7 * 86_400
            func status(_ query: String, token: String? = SimulatorHTTP.token) async throws -> Int {
                try await http.get("/leads?" + query, token: token).status
            }

            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate + sevenDays)") == 200)
            let tooLong = try await http.get("/leads?minDate=\(minDate)&maxDate=\(minDate + sevenDays + 1)")
            #expect(tooLong.status == 400)
            #expect(tooLong.contentType?.hasPrefix("application/problem+json") == true)
            #expect(try tooLong.object()["status"] as? Int == 400)
            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate - 1)") == 400)
            #expect(try await status("minDate=\(minDate)") == 400)
            #expect(try await status("maxDate=\(minDate)") == 400)
            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate + 7200)&limit=0") == 400)
            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate + 7200)&limit=101") == 400)
            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate + 7200)&start=lead-unknown") == 400)
            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate + 7200)", token: nil) == 401)
            #expect(try await http.get("/leads/lead-unknown", token: "wrong").status == 401)
            #expect(try await http.get("/leads/lead-unknown").status == 404)

            let first = try await http.get("/leads?minDate=\(minDate)&maxDate=\(minDate + 7200)&limit=1")
            let page: LeadPage = try first.decoded()
            #expect(page.metadata.count == 1)
            let next = try #require(page.links.next)
            let second: LeadPage = try await http.get(next).decoded()
            #expect(second.items.count == 1 && second.links.next == nil)
            #expect(second.items.map(\.metadata.leadId) != page.items.map(\.metadata.leadId))
            #expect(try await status("minDate=\(minDate)&maxDate=\(minDate + 7200)&limit=100") == 200)
        }
    }

    @Test func aLeadIsVisibleOnlyAfterTheIngestionDelay() async throws {
        var faults = SimulatorFaults()
        faults.ingestionDelayMs = 2000
        try await withReadBackSimulator(faults: faults) { fixture, http in
            let (minDate, maxDate) = Self.window()
            let listing = "/leads?minDate=\(minDate)&maxDate=\(maxDate)"
            let sentAt = ContinuousClock.now
            #expect(try await http.postLead(1).status == 200)
            #expect(await fixture.simulator.stats().leadsStored == 1)
            #expect(try await http.get(listing).decoded(LeadPage.self).items.isEmpty)

            let lead = try await waitFor("the lead to be listed", timeout: .seconds(30), every: .milliseconds(100)) {
                try await http.get(listing).decoded(LeadPage.self).items.first
            }
            #expect(ContinuousClock.now - sentAt >= .milliseconds(2000))
            #expect(lead.contactRequest.email == "jane1@example.com")
            #expect(try await http.get("/leads/\(lead.metadata.leadId)").status == 200)
            #expect(await fixture.simulator.stats().duplicateLeadsReceived == 0)
        }
    }

    @Test func storeThenFailStoresTheLeadAndLosesTheAnswer() async throws {
        var faults = SimulatorFaults()
        faults.storeThenFailRate = 1
        try await withReadBackSimulator(faults: faults) { fixture, http in
            var statuses: [Int] = []
            for index in 0..<10 { statuses.append(try await http.postLead(index).status) }
            // The default split: the lost answers alternate, 502 then a dropped connection.
            #expect(statuses == Array(repeating: [502, 0], count: 5).flatMap { $0 })

            faults.storeThenFailDropShare = 1
            await fixture.simulator.setFaults(faults)
            #expect(try await http.postLead(10).status == 0)
            faults.storeThenFailDropShare = 0
            await fixture.simulator.setFaults(faults)
            let badGateway = try await http.postLead(11)
            #expect(badGateway.status == 502)
            #expect(try badGateway.object()["status"] as? Int == 502)
            await fixture.simulator.setFaults(SimulatorFaults())
            #expect(try await http.postLead(12).status == 200)

            let (minDate, maxDate) = Self.window()
            let listed = try await http.listAll(minDate: minDate, maxDate: maxDate, limit: nil).flatMap(\.items)
            #expect(listed.compactMap(\.contactRequest.email) == (0...12).map { "jane\($0)@example.com" })
            let stats = await fixture.simulator.stats()
            #expect(stats.leadsStored == 13)
            #expect(stats.duplicateLeadsReceived == 0)
            #expect(stats.answersLostAfterStoring == ["502": 6, "dropped": 6])
            #expect(stats.requestsByStatus["502"] == 6)
            #expect(stats.requestsByStatus["dropped"] == 6)
        }
    }

    @Test func readsCountAgainstTheBudgetTogetherWithPosts() async throws {
        var faults = SimulatorFaults()
        faults.latencyMs = 3000
        try await withReadBackSimulator(faults: faults, paced: false) { fixture, http in
            let (minDate, maxDate) = Self.window()
            let reads: [(String, String, [UInt8]?)] =
                (0..<4).map { _ in ("GET", "/leads?minDate=\(minDate)&maxDate=\(maxDate)", nil) }
                + (0..<3).map { _ in ("GET", "/leads/lead-unknown", nil) }
            let posts: [(String, String, [UInt8]?)] = (0..<4).map { ("POST", "/leads", validLeadBody($0)) }
            let statuses = try await http.concurrentStatuses(reads + posts)
            #expect(statuses.filter { $0 == 429 }.count == 1)
            #expect(statuses.filter { $0 != 429 }.allSatisfy { $0 == 200 || $0 == 404 })
            let stats = await fixture.simulator.stats()
            #expect(stats.maxConcurrency == 11)
            #expect(stats.violationsByKind["concurrency", default: 0] == 1)
        }
    }

    @Test func anErasedLeadHasNoContactData() async throws {
        try await withReadBackSimulator { fixture, http in
            for index in 0..<3 { #expect(try await http.postLead(index).status == 200) }
            let (minDate, maxDate) = Self.window()
            let ids = try await http.listAll(minDate: minDate, maxDate: maxDate, limit: nil).flatMap(\.items)
                .map(\.metadata.leadId)
            try #require(ids.count == 3)

            let erase = try await http.send("POST", "/_sim/erase", body: Array(#"{"leadIds":["\#(ids[1])"]}"#.utf8))
            #expect(erase.status == 200)
            #expect(try erase.decoded([String: [String]].self) == ["erased": [ids[1]]])
            #expect(try await http.send("POST", "/_sim/erase", body: Array("{}".utf8)).status == 400)

            let erased = try await http.get("/leads/\(ids[1])").object()
            let contact = try #require(erased["contactRequest"] as? [String: Any])
            for field in ["firstName", "lastName", "name", "gender", "email", "language", "message"] {
                #expect(
                    contact[field] == nil || contact[field] is NSNull,
                    "\(field) is \(String(describing: contact[field]))")
            }
            #expect((contact["phoneNumbers"] as? [Any])?.isEmpty == true)
            #expect((erased["property"] as? [String: Any])?["classifiedId"] as? String == "12ABCDEFGHJK")
            #expect((erased["metadata"] as? [String: Any])?["leadId"] as? String == ids[1])

            var faults = SimulatorFaults()
            faults.erasedLeadRate = 1
            await fixture.simulator.setFaults(faults)
            #expect(try await http.postLead(3).status == 200)
            let listed = try await http.listAll(minDate: minDate, maxDate: maxDate, limit: nil).flatMap(\.items)
            #expect(listed.map(\.contactRequest.email) == ["jane0@example.com", nil, "jane2@example.com", nil])
            #expect(listed.map(\.contactRequest.phoneNumbers.count) == [1, 0, 1, 0])
            #expect(fixture.simulator.controller.storedLeadBodies().count == 4)
            #expect(await fixture.simulator.stats().leadsErased == 2)
        }
    }
}
