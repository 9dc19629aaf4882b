import Foundation
import OpenAPIRuntime

/// The API's routes over the generated server stubs. Budget, faults, authentication and the
/// `POST /leads` body check happen before, in `APIGateMiddleware`.
struct SimulatorAPI: APIProtocol {
    /// The API's maximum `GET /leads` period.
    static let maxListPeriodSeconds: Int64 = 7 * 86_400

    let state: SimulatorState

    private static let canonicalEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    func createLead(_ input: Operations.createLead.Input) async throws -> Operations.createLead.Output {
        guard case .json(let request) = input.body else { return .undocumented(statusCode: 415, .init()) }
        let canonicalBody = try Self.canonicalEncoder.encode(request)
        _ = state.store(request, canonicalBody: canonicalBody)
        return .ok(
            .init(body: .json(.init(title: "Lead submitted successfully", requestId: UUID().uuidString.lowercased()))))
    }

    func listLeads(_ input: Operations.listLeads.Input) async throws -> Operations.listLeads.Output {
        let query = input.query
        let limit = query.limit ?? 100
        guard (1...100).contains(limit) else {
            return .badRequest(
                .init(body: .application_problem_plus_json(Self.problem(400, "limit must be between 1 and 100"))))
        }
        guard query.minDate <= query.maxDate, query.maxDate - query.minDate <= Self.maxListPeriodSeconds else {
            return .badRequest(
                .init(
                    body: .application_problem_plus_json(
                        Self.problem(400, "minDate..maxDate must be a period of at most 7 days")))
            )
        }
        guard
            let (page, hasMore) = state.visibleLeads(
                minDate: query.minDate, maxDate: query.maxDate, after: query.start, limit: limit)
        else {
            return .badRequest(
                .init(body: .application_problem_plus_json(Self.problem(400, "start is not a known leadId"))))
        }
        let basePath = "/leads?minDate=\(query.minDate)&maxDate=\(query.maxDate)&limit=\(limit)"
        let selfLink = basePath + (query.start.map { "&start=\($0)" } ?? "")
        let nextLink = hasMore ? page.last.map { basePath + "&start=\($0.leadId)" } : nil
        let result = Components.Schemas.paginatedResultSet(
            metadata: .init(
                count: page.count, limit: limit, minDate: query.minDate, maxDate: query.maxDate, start: query.start),
            links: .init(_self: selfLink, next: nextLink),
            items: page.map(Self.classifiedLead)
        )
        return .ok(.init(body: .json(result)))
    }

    func getLead(_ input: Operations.getLead.Input) async throws -> Operations.getLead.Output {
        guard let lead = state.visibleLead(id: input.path.leadId) else {
            return .notFound(.init(body: .application_problem_plus_json(Self.problem(404, "no lead with this id"))))
        }
        return .ok(.init(body: .json(Self.classifiedLead(lead))))
    }

    func createWebhookSubscription(
        _ input: Operations.createWebhookSubscription.Input
    ) async throws -> Operations.createWebhookSubscription.Output {
        guard case .json(let request) = input.body else { return .undocumented(statusCode: 415, .init()) }
        guard let url = URL(string: request.url), url.scheme == "https" || url.scheme == "http", url.host != nil,
            !request.apiKey.isEmpty
        else {
            return .badRequest(
                .init(
                    body: .application_problem_plus_json(
                        Self.problem(400, "url must be an absolute http(s) URL and apiKey non-empty"))))
        }
        let now = Self.dateTime(Date())
        let subscription = Components.Schemas.webhookSubscriptionResponse(
            subscriptionId: UUID().uuidString.lowercased(),
            url: request.url,
            status: request.status ?? .ACTIVE,
            createdAt: now,
            updatedAt: now
        )
        state.addWebhookSubscription(subscription)
        return .ok(.init(body: .json(subscription)))
    }

    func listWebhookSubscriptions(
        _ input: Operations.listWebhookSubscriptions.Input
    ) async throws -> Operations.listWebhookSubscriptions.Output {
        let items = state.webhookSubscriptions
        return .ok(.init(body: .json(.init(metadata: .init(count: items.count), items: items))))
    }

    static func problem(_ status: Int, _ detail: String) -> Components.Schemas.problemDetails {
        Components.Schemas.problemDetails(
            _type: "about:blank",
            title: HTTPStatusTitles.title(for: status),
            status: status,
            detail: detail
        )
    }

    /// The listing's view of a stored lead: `processedAt` is its ingestion time. An erased lead keeps its ids,
    /// dates and classifiedId, and loses every contact field (email too, though the contract's list omits it:
    /// a client must not count on it) and its phone numbers.
    private static func classifiedLead(_ lead: StoredLead) -> Components.Schemas.classifiedLead {
        let request = lead.request
        let threeYears: TimeInterval = 3 * 365.25 * 86_400
        let contactRequest: Components.Schemas.contactRequest =
            lead.erased
            ? .init(phoneNumbers: [], submittedDate: request.submittedDate)
            : .init(
                firstName: request.firstName,
                lastName: request.lastName,
                name: [request.firstName, request.lastName].compactMap { $0 }.joined(separator: " "),
                gender: request.gender?.rawValue,
                email: request.email,
                language: request.language?.rawValue,
                message: request.message,
                phoneNumbers: request.phoneNumbers,
                submittedDate: request.submittedDate
            )
        return Components.Schemas.classifiedLead(
            metadata: .init(
                leadId: lead.leadId,
                portal: "SLG-FRA",
                category: .CLASSIFIED,
                processedAt: dateTime(lead.ingestedAt),
                deletionDate: dateTime(lead.ingestedAt.addingTimeInterval(threeYears))
            ),
            contactRequest: contactRequest,
            property: .init(classifiedId: request.classifiedId)
        )
    }

    private static func dateTime(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: false))
    }
}

enum HTTPStatusTitles {
    static func title(for status: Int) -> String {
        switch status {
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 429: return "Too Many Requests"
        case 500: return "Internal Server Error"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "HTTP \(status)"
        }
    }
}
