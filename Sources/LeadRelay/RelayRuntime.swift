import Foundation
import Kafka
import LeadEvents
import Logging
import Prometheus
import RelayPrimitives
import SeekerLeads
import ServiceLifecycle
import SharedState

/// The relay assembled from its configuration: what `lead-relay run` and `lead-relay demo` start.
public final class RelayRuntime: Sendable {
    public let relay: RelayService
    public let observability: ObservabilityServer
    public let tally: OutcomeTally
    private let client: SeekerLeadsClient

    /// librdkafka prefetches up to 64 MiB per consumer by default; the relay holds at most
    /// `LEAD_RELAY_MAX_PENDING_RECORDS` records anyway, so a few MiB of prefetch keep it fed. (librdkafka
    /// 2.0 parks a fetcher for up to a second once its queue passes that cap, which bounds the no-API rate;
    /// KAFKA_QUEUED_MAX_MESSAGES_KBYTES trades memory for it.) A broker that holds an empty fetch for the
    /// full default 500 ms (librdkafka's mock cluster does) adds that to every lead's end-to-end time at a
    /// low rate; a real broker answers as soon as data arrives, so 10 ms only bounds how often an idle
    /// consumer asks.
    ///
    /// The eager `roundrobin` assignor, not the Kafka layer's cooperative default: librdkafka 2.0.2 (Debian's) loses
    /// a cooperative member's partitions when others join and leave (its commits fail with "generation id is not
    /// valid" until the session times out), which repeats hundreds of outcomes; an eager revocation only loses the
    /// commits of what finished since the last one (a broker refuses commits while the group is joining).
    static let consumerDefaults = [
        "partition.assignment.strategy": "roundrobin",
        "queued.max.messages.kbytes": "4096",
        "fetch.max.bytes": "4194304",
        "fetch.wait.max.ms": "10",
    ]

    /// Each outcome waits for its acknowledgement before its offset may be committed, so librdkafka's default
    /// 5 ms of lingering would add to every lead's end-to-end time; 1 ms still batches a backlog's outcomes.
    static let producerDefaults = ["linger.ms": "1"]

    /// The database's client and its listeners, when the state is shared.
    private let sharedStateServices: [any Service]

    /// Services in start order; a service group stops them in reverse, so the relay drains first, the health and
    /// metrics endpoint stays up after it, and the database's client longest (the relay records outcomes in it).
    public var services: [any Service] { sharedStateServices + [observability, relay] }

    public init(
        configuration: RelayConfiguration, registry: PrometheusCollectorRegistry, logger: Logger,
        onHTTPRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws {
        let kafka = configuration.kafkaConfiguration
        var consumerConfiguration = kafka
        consumerConfiguration.properties.merge(Self.consumerDefaults) { configured, _ in configured }
        let consumer = try KafkaConsumer(
            configuration: consumerConfiguration, groupID: configuration.groupID, logger: logger,
            bufferCapacity: min(1000, configuration.maxPendingRecords))
        var producerConfiguration = kafka
        producerConfiguration.properties.merge(Self.producerDefaults) { configured, _ in configured }
        let producer = try KafkaProducer(configuration: producerConfiguration, logger: logger)
        let readiness = Readiness(flags: [Readiness.credentials])
        let dedupeStore: any SubmissionStore
        let budget: (any RequestBudget)?
        if let databaseURL = configuration.databaseURL {
            let shared = SharedStateParts(configuration: configuration, url: databaseURL, logger: logger)
            shared.addProbes(to: readiness)
            dedupeStore = shared.store
            budget = shared.budget
            sharedStateServices = shared.services
        } else {
            let localStore = try DedupeStore(path: configuration.dedupeDatabasePath, ttl: configuration.dedupeTTL)
            readiness.addProbe(Readiness.dedupeStore) {
                Readiness.dedupeStoreFailure(
                    healthy: localStore.checkHealth(), path: configuration.dedupeDatabasePath)
            }
            dedupeStore = localStore
            budget = nil
            sharedStateServices = []
        }
        // Last of what can fail: a client released without `shutdown()` stops the process.
        let client = try SeekerLeadsClient(
            configuration: SeekerLeadsClientConfiguration(configuration), budget: budget, logger: logger)

        let metrics = RelayMetrics()
        let bootstrapServers = kafka.properties["bootstrap.servers"] ?? ""
        readiness.addProbe(Readiness.consumer) {
            await Readiness.consumerFailure(consumer.membership, bootstrapServers: bootstrapServers) {
                await producer.isConnected(timeout: .seconds(2))
            }
        }
        readiness.addProbe(Readiness.producer) {
            Readiness.producerFailure(
                brokerReachable: await producer.isConnected(timeout: .seconds(2)), bootstrapServers: bootstrapServers)
        }

        let gates = SubmissionGates(
            circuit: CircuitBreaker(threshold: configuration.circuitThreshold, backoff: configuration.retryBackoff),
            credentials: CircuitBreaker(threshold: 1, backoff: configuration.retryBackoff),
            maxConcurrentAttempts: configuration.maxInFlight, metrics: metrics, readiness: readiness)
        let tally = OutcomeTally()
        let processor = RecordProcessor(
            decoder: LeadEventDecoder(eventType: configuration.eventType, maxEventBytes: configuration.maxEventBytes),
            dedupeStore: dedupeStore, exclusivity: KeyedExclusivity(), submitter: client, gates: gates,
            publisher: OutcomePublisher(
                producer: producer, resultsTopic: configuration.resultsTopic,
                deadLetterTopic: configuration.deadLetterTopic, logger: logger),
            metrics: metrics, tally: tally, retryDeadline: configuration.retryDeadline,
            requestTimeout: configuration.seekerLeadsTimeout,
            reconciler: Reconciler(listing: client, logger: logger), reconcileAfter: configuration.reconcileAfter,
            logger: logger)
        relay = RelayService(
            settings: RelayService.Settings(
                inputTopic: configuration.inputTopic, shutdownTimeout: configuration.shutdownTimeout,
                maxPendingRecords: configuration.maxPendingRecords),
            consumer: consumer, producer: producer, processor: processor, gates: gates, readiness: readiness,
            metrics: metrics, logger: logger)
        observability = ObservabilityServer(
            host: configuration.httpHost, port: configuration.httpPort, readiness: readiness, registry: registry,
            metrics: metrics,
            status: RelayStatusReporter(relay: relay, gates: gates, client: client, configuration: configuration),
            logger: logger, onRunning: onHTTPRunning)
        self.client = client
        self.tally = tally
    }

    /// Releases the API client's connections; after the service group has finished.
    public func shutdown() async {
        try? await client.shutdown()
    }
}

extension SeekerLeadsClientConfiguration {
    init(_ configuration: RelayConfiguration) {
        let authentication: SeekerLeadsAuthentication
        switch configuration.seekerLeadsAuthentication {
        case .staticToken(let token):
            authentication = .staticToken(token)
        case .clientCredentials(let tokenURL, let clientID, let clientSecret, let audience):
            authentication = .clientCredentials(
                tokenURL: tokenURL.absoluteString, clientID: clientID, clientSecret: clientSecret, audience: audience)
        }
        self.init(
            baseURL: configuration.seekerLeadsBaseURL.absoluteString, authentication: authentication,
            timeout: configuration.seekerLeadsTimeout,
            budget: RateBudgetConfiguration(
                maxInFlight: configuration.maxInFlight, rateLimit: configuration.rateLimit,
                window: configuration.rateWindow, margin: configuration.rateMargin),
            retry: configuration.retryBackoff)
    }
}
