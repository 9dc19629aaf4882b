import ArgumentParser
import Foundation
import LeadRelay
import LeadRelayDemo
import Logging
import Prometheus

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Runs the relay end to end on embedded defaults: mock Kafka, the API simulator, sample leads."
    )

    @Option(help: "How many sample records to produce.")
    var count = 500

    @Option(help: "The fraction of records that re-send an earlier lead.")
    var duplicates = 0.1

    @Option(help: "The fraction of records that are invalid.")
    var invalid = 0.1

    @Option(help: "The simulated API latency in milliseconds.")
    var latencyMs = 20

    @Option(help: "The port of the health and metrics endpoint (0: any free port).")
    var httpPort = 8080

    @Option(help: "Log level of the relay's own lines (on standard error).")
    var logLevel: String = "warning"

    func validate() throws {
        guard count > 0 else { throw ValidationError("--count must be positive") }
        guard (0...1).contains(duplicates), (0...1).contains(invalid), duplicates + invalid <= 1 else {
            throw ValidationError("--duplicates and --invalid are fractions that add up to at most 1")
        }
        guard latencyMs >= 0 else { throw ValidationError("--latency-ms must not be negative") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level") }
    }

    func run() async throws {
        limitMallocArenas()
        RelayLogging.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .warning, format: .json)
        let registry = PrometheusCollectorRegistry()
        RelayMetricsFactory.bootstrap(registry: registry)
        var options = Demo.Options()
        options.count = count
        options.duplicateFraction = duplicates
        options.invalidFraction = invalid
        options.latencyMs = latencyMs
        options.httpPort = httpPort
        let summary = try await Demo(options: options).run(
            registry: registry, logger: Logger(label: "lead-relay-demo"), report: { print($0) })
        print(
            """
            summary: \(summary.produced) records in \(String(format: "%.1f", summary.seconds)) s: \
            \(summary.submitted) submitted, \(summary.duplicates) duplicates, \(summary.deadLettered) dead letters; \
            the API received \(summary.apiRequests) requests, stored \(summary.leadsStoredByAPI) leads, \
            budget violations \(summary.budgetViolations)
            """)
    }
}
