import Foundation
import Logging
import PostgresNIO
import SeekerLeads
import ServiceLifecycle
import SharedState

/// The dedupe store and the API budget of a relay whose state is shared through `LEAD_RELAY_DATABASE_URL`, over
/// one client of the database.
struct SharedStateParts {
    /// Enough for the budget's one grant at a time and its releases, the claims of `LEAD_RELAY_MAX_IN_FLIGHT`
    /// leads, and the two listening connections, without letting many replicas exhaust a server's
    /// `max_connections` (100 by default).
    static let maximumConnections = 12

    let store: SharedSubmissionStore
    let budget: SharedRequestBudget
    let services: [any Service]
    private let leadStore: SharedLeadStore
    private let rateBudget: SharedRateBudget

    init(configuration: RelayConfiguration, url: DatabaseURL, logger: Logger) {
        var options = PostgresClient.Configuration.Options()
        options.maximumConnections = Self.maximumConnections
        let client = PostgresClient(configuration: url.clientConfiguration(options: options), backgroundLogger: logger)
        let instance = Self.instanceName()
        // A request ends by its timeout; the lease, and the claim, outlast it so that neither lapses while the
        // request may still be read by the API.
        let lease = configuration.seekerLeadsTimeout + .seconds(2)
        let metrics = SharedStateMetrics()
        leadStore = SharedLeadStore(
            client: client, configuration: SharedLeadStore.Configuration(submissionTTL: configuration.dedupeTTL),
            logger: logger)
        rateBudget = SharedRateBudget(
            client: client,
            configuration: SharedRateBudget.Configuration(
                budgetKey: configuration.budgetKey, maxInFlight: configuration.maxInFlight,
                rateLimit: configuration.rateLimit, window: configuration.rateWindow, margin: configuration.rateMargin,
                leaseDuration: lease),
            holder: instance, logger: logger)
        store = SharedSubmissionStore(
            store: leadStore, instance: instance, claimTTL: lease + .seconds(3), metrics: metrics, logger: logger)
        budget = SharedRequestBudget(budget: rateBudget, metrics: metrics, logger: logger)
        services = [client, SharedStateListeners(leadStore: leadStore, rateBudget: rateBudget)]
    }

    /// `dedupe_store` and `budget`, each failing while the database does not answer within a probe's time.
    func addProbes(to readiness: Readiness) {
        let leadStore = leadStore
        let rateBudget = rateBudget
        readiness.addProbe(Readiness.dedupeStore) {
            await Self.failure(of: "the shared dedupe store") { try await leadStore.checkHealth() }
        }
        readiness.addProbe(Readiness.budget) {
            await Self.failure(of: "the shared API budget") { try await rateBudget.checkHealth() }
        }
    }

    /// Why `check` failed, or nil; a check without an answer within 2 s fails, so that a readiness probe answers in
    /// time while the database does not.
    private static func failure(of what: String, _ check: @escaping @Sendable () async throws -> Void) async
        -> String?
    {
        await withTaskGroup(of: String?.self) { group in
            group.addTask {
                do {
                    try await check()
                    return nil
                } catch {
                    return "\(what) is unavailable: \(error)"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(2))
                return "\(what) is unavailable: the database did not answer within 2 s"
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// The host, the process and a random part: two starts of one container differ.
    private static func instanceName() -> String {
        let host = ProcessInfo.processInfo.hostName
        let random = UUID().uuidString.prefix(8).lowercased()
        return "\(host)/\(ProcessInfo.processInfo.processIdentifier)/\(random)"
    }
}

/// Listens for ended claims and released leases, so that waiting relays learn of them at once rather than by polling.
private struct SharedStateListeners: Service {
    let leadStore: SharedLeadStore
    let rateBudget: SharedRateBudget

    func run() async throws {
        await cancelWhenGracefulShutdown {
            async let claims: Void = leadStore.run()
            async let leases: Void = rateBudget.run()
            _ = await (claims, leases)
        }
    }
}

/// What `lead-relay run` checks of the database before anything else connects.
public enum SharedStateStartup {
    public enum Failure: Error, Equatable {
        /// No answer until the wait ran out: exit status 1, the operator's environment is not there yet.
        case unreachable(String)
        /// The database answered and refused (credentials, database name, permissions for the schema): exit
        /// status 2, the configuration is wrong.
        case unusable(String)
    }

    /// Waits up to `connectTimeout` for the database to accept a connection, then creates or migrates the schema.
    /// The messages name what failed, never the password.
    public static func prepare(url: DatabaseURL, connectTimeout: Duration, logger: Logger) async throws(Failure) {
        let deadline = ContinuousClock.now + connectTimeout
        var attempt = 0
        while true {
            attempt += 1
            do {
                try await url.checkConnection(timeout: min(.seconds(10), deadline - .now), logger: logger)
                break
            } catch let error as SharedStateError where error.kind == .rejected {
                throw .unusable("the database at \(url) refused the connection: \(error.reason)")
            } catch {
                let remaining = deadline - .now
                guard remaining > .zero else {
                    throw .unreachable("no database answered at \(url) within \(connectTimeout): \(error)")
                }
                if attempt == 1 {
                    logger.warning(
                        "waiting for the database", metadata: ["database": "\(url)", "error": "\(error)"])
                }
                try? await Task.sleep(for: min(.milliseconds(500), remaining))
            }
        }
        let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
        let outcome: Result<Void, SharedStateError> = await withTaskGroup(of: Result<Void, SharedStateError>?.self) {
            group in
            group.addTask {
                await client.run()
                return nil
            }
            group.addTask {
                do {
                    try await SharedStateSchema.prepare(
                        client: client, logger: logger, timeout: max(deadline - .now, .seconds(10)))
                    return .success(())
                } catch let error as SharedStateError {
                    return .failure(error)
                } catch {
                    return .failure(
                        SharedStateError(kind: .unavailable, operation: "schema migration", reason: "\(error)"))
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .success(())
        }
        switch outcome {
        case .success:
            return
        case .failure(let error) where error.kind == .rejected:
            throw .unusable("cannot create the shared state's schema in \(url): \(error.reason)")
        case .failure(let error):
            throw .unreachable("the database at \(url) stopped answering while the schema was prepared: \(error)")
        }
    }
}
