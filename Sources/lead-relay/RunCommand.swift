import ArgumentParser
import Foundation
import LeadRelay
import Logging
import Prometheus
import ServiceLifecycle
import SharedState

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Relays lead events from Kafka to the Seeker Leads API (configured by environment variables).",
        discussion: """
            Environment variables (a secret, such as SEEKER_LEADS_TOKEN, SEEKER_LEADS_CLIENT_SECRET or a Kafka \
            password, may instead be given as <NAME>_FILE, the path of a file holding it):

            """ + "\n" + RelayConfiguration.variablesHelp
    )

    func run() async throws {
        limitMallocArenas()
        let configuration = try configurationOrExit(RelayConfiguration.fromEnvironment)
        try exitUnlessListenable(
            host: configuration.httpHost, port: configuration.httpPort, setting: "LEAD_RELAY_HTTP_PORT")
        RelayLogging.bootstrap(level: configuration.logLevel, format: configuration.logFormat)
        let registry = PrometheusCollectorRegistry()
        RelayMetricsFactory.bootstrap(registry: registry)
        let logger = Logger(label: "lead-relay")
        logger.info("starting", metadata: ["configuration": "\(configuration)"])

        if let databaseURL = configuration.databaseURL {
            try await prepareSharedStateOrExit(
                url: databaseURL, connectTimeout: configuration.databaseConnectTimeout, logger: logger)
        }
        let runtime = try RelayRuntime(configuration: configuration, registry: registry, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: runtime.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await runtime.shutdown()
            logger.critical("stopped on an error", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        await runtime.shutdown()
    }
}

/// What `load` reads from the process's environment. A bad configuration stops start-up before anything connects:
/// one line per problem, each naming its variable, exit status 2.
func configurationOrExit<Configuration>(
    _ load: ([String: String]) throws(ConfigurationErrors) -> Configuration
) throws -> Configuration {
    do {
        return try load(ProcessInfo.processInfo.environment)
    } catch {
        for line in error.lines { printError(line) }
        throw ExitCode(2)
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// An endpoint address the relay cannot listen on (typically a port another process holds) stops start-up before
/// anything else happens: one line naming the address and the setting to change, exit status 2.
func exitUnlessListenable(host: String, port: Int, setting: String) throws {
    guard let failure = ObservabilityServer.bindFailure(host: host, port: port) else { return }
    let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    let line = "lead-relay: \(setting): cannot listen on \(address): \(failure); choose another port (0: any free one)"
    printError(line)
    throw ExitCode(2)
}

/// A database the relay cannot use stops start-up before anything else connects: one line naming the variable, exit
/// status 2 when it refused (credentials, permissions), 1 when none answered within the wait.
func prepareSharedStateOrExit(url: DatabaseURL, connectTimeout: Duration, logger: Logger) async throws {
    do {
        try await SharedStateStartup.prepare(url: url, connectTimeout: connectTimeout, logger: logger)
    } catch {
        let (message, status): (String, Int32) =
            switch error {
            case .unusable(let message): (message, 2)
            case .unreachable(let message): (message, 1)
            }
        printError("lead-relay: LEAD_RELAY_DATABASE_URL: \(message)")
        throw ExitCode(status)
    }
}
