import ArgumentParser
import Foundation
import LeadRelay
import Logging
import Prometheus
import ServiceLifecycle

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Relays lead events from Kafka to the Seeker Leads API (configured by environment variables)."
    )

    func run() async throws {
        limitMallocArenas()
        let configuration = try loadConfigurationOrExit()
        RelayLogging.bootstrap(level: configuration.logLevel, format: configuration.logFormat)
        let registry = PrometheusCollectorRegistry()
        RelayMetricsFactory.bootstrap(registry: registry)
        let logger = Logger(label: "lead-relay")
        logger.info("starting", metadata: ["configuration": "\(configuration)"])

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

/// A bad configuration stops start-up before anything connects: one line naming the variable, exit status 2.
func loadConfigurationOrExit() throws -> RelayConfiguration {
    do {
        return try RelayConfiguration.fromEnvironment(ProcessInfo.processInfo.environment)
    } catch {
        FileHandle.standardError.write(Data((error.line + "\n").utf8))
        throw ExitCode(2)
    }
}
