import Foundation
import Kafka
import LeadRelayDemo
import Logging

import class TestSupport.PostgresServer

/// `make bench`: the relay's throughput, latency, memory and start/stop figures against its ceilings, with the
/// relay as its own process on kafka-dev and seeker-leads-sim, and, where the relays share their state, a
/// PostgreSQL server of the bench's own (a fresh one per repetition). Writes BENCHMARKS.md and bench-results.json.
///
/// Each repetition of scenario 1 runs it twice, without a database and then with one ("1 + PostgreSQL"), so that
/// the two are measured side by side on the machine as it is at that moment.
///
/// Environment: BENCH_REPEATS (default 3), BENCH_QUICK=1 (smaller backlogs, one repetition, for development),
/// BENCH_ONLY (comma-separated subset of decode,1,100ms,2,3,4,5,6,7), BENCH_BIN_DIR (default .build/release),
/// BENCH_OUTPUT_DIR (default the current directory), BENCH_API_RELAY_BIN (another lead-relay binary for the
/// scenarios that call the API, recorded in the report).
@main
enum RelayBench {
    struct Sizes {
        var budgetLeads = 3_000
        var noAPIRecords = 200_000
        var noAPIPartitions: Int32 = 48
        var millionRecords = 1_000_000
        var millionPartitions: Int32 = 192
        var millionSeconds = 30
        var seededLeads = 100_000
        var latencySeconds = 60
        var stopLeads = 40

        static let quick = Sizes(
            budgetLeads: 600, noAPIRecords: 20_000, millionRecords: 100_000, millionSeconds: 10,
            seededLeads: 10_000, latencySeconds: 15)
    }

    static func main() async {
        let environmentVariables = ProcessInfo.processInfo.environment
        let quick = environmentVariables["BENCH_QUICK"].map { $0 != "" && $0 != "0" } ?? false
        let repeats = environmentVariables["BENCH_REPEATS"].flatMap { Int($0) } ?? (quick ? 1 : 3)
        let selected = Set(
            (environmentVariables["BENCH_ONLY"] ?? "decode,1,100ms,2,3,4,5,6,7,8").split(separator: ",").map(
                String.init))
        let binaries = environmentVariables["BENCH_BIN_DIR"] ?? ".build/release"
        let outputDirectory = environmentVariables["BENCH_OUTPUT_DIR"] ?? FileManager.default.currentDirectoryPath
        let sizes = quick ? Sizes.quick : Sizes()
        let apiRelayBinary = environmentVariables["BENCH_API_RELAY_BIN"] ?? binaries + "/lead-relay"

        var logger = Logger(label: "lead-relay-bench")
        logger.logLevel = .warning
        let began = ContinuousClock.now
        let book = FigureBook()
        var errors: [String] = []
        do {
            let workDirectory = FileManager.default.temporaryDirectory
                .appendingPathComponent("lead-relay-bench-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
            progress("scratch directory \(workDirectory) (process logs are kept there)")
            let kafkaDev = try ChildProcess(
                name: "kafka-dev", executable: binaries + "/lead-relay",
                arguments: ["kafka-dev"] + topicArguments(sizes: sizes, repeats: repeats),
                environment: environmentVariables, logPath: workDirectory + "/kafka-dev.log")
            let bootstrapServers = try await kafkaDev.announcedValue(prefix: "KAFKA_BOOTSTRAP_SERVERS=")
            let environment = BenchEnvironment(
                relayBinary: binaries + "/lead-relay", apiRelayBinary: apiRelayBinary,
                simulatorBinary: binaries + "/seeker-leads-sim",
                eventsBenchBinary: binaries + "/lead-events-bench", workDirectory: workDirectory,
                kafka: KafkaTools(bootstrapServers: bootstrapServers, logger: logger), logger: logger)

            // Sendable, so that a scenario runs off the main actor and can hand its own closures on (to the
            // PostgreSQL server's `with`).
            func each(_ key: String, _ body: @Sendable (Int) async throws -> Void) async {
                guard selected.contains(key) else { return }
                progress("scenario \(key): \(repeats) repetition(s)")
                for run in 1...repeats {
                    do {
                        try await body(run)
                    } catch {
                        progress("scenario \(key) run \(run) failed: \(error)")
                        errors.append("scenario \(key) run \(run): \(error)")
                    }
                }
            }

            await each("decode") { try await decodeRun(environment, book: book, run: $0) }
            if selected.contains("6") {
                for run in 1...repeats {
                    try await environment.kafka.produce(
                        (0..<sizes.stopLeads).map {
                            SampleLeads.valid(index: $0, shape: .structured, namespace: "stop-\(run)")
                        },
                        to: Topics.stop(run), partitions: 6)
                }
            }
            await each("6") { try await startStopRun(environment, book: book, run: $0) }

            if !selected.isDisjoint(with: ["1", "100ms", "2"]) {
                try await environment.kafka.produceUniqueLeads(
                    sizes.budgetLeads, to: Topics.budget, namespace: "budget", partitions: 6)
            }
            await each("1") { run in
                let peak = try await budgetRun(
                    environment, book: book, scenario: "1", latencyMs: 5, ceiling: 50, leads: sizes.budgetLeads,
                    run: run)
                book.record("5", "peak RSS during scenario 1", peak, unit: "MiB", target: .below(64))
                let peakWithDatabase = try await PostgresServer.with { database in
                    try await budgetRun(
                        environment, book: book, scenario: "1 + PostgreSQL", latencyMs: 5, ceiling: 50,
                        leads: sizes.budgetLeads, database: database, run: run)
                }
                book.record(
                    "5", "peak RSS during scenario 1 + PostgreSQL", peakWithDatabase, unit: "MiB", target: .below(64))
            }
            await each("100ms") {
                try await budgetRun(
                    environment, book: book, scenario: "API budget use", latencyMs: 100, ceiling: 50,
                    leads: sizes.budgetLeads, run: $0)
            }
            await each("2") {
                try await budgetRun(
                    environment, book: book, scenario: "2", latencyMs: 400, ceiling: 25, leads: sizes.budgetLeads,
                    run: $0)
            }

            if selected.contains("7") {
                try await environment.kafka.produceUniqueLeads(
                    sizes.budgetLeads, to: Topics.sharedBudget, namespace: "shared-budget", partitions: 12)
            }
            await each("7") { run in
                _ = try await PostgresServer.with { database in
                    try await budgetRun(
                        environment, book: book, scenario: "7", latencyMs: 5, ceiling: 50, leads: sizes.budgetLeads,
                        topic: Topics.sharedBudget, relays: 3, database: database, run: run)
                }
            }

            if selected.contains("8") {
                try await environment.kafka.produceUniqueLeads(
                    sizes.budgetLeads, to: Topics.lostAnswers, namespace: "lost-answers", partitions: 6)
            }
            await each("8") { run in
                try await lostAnswersRun(environment, book: book, leads: sizes.budgetLeads, run: run)
            }

            if !selected.isDisjoint(with: ["3", "5"]) {
                let seeded = (0..<sizes.seededLeads).map {
                    SampleLeads.valid(index: $0, shape: SampleLeads.Shape.allCases[$0 % 3], namespace: "seeded")
                }
                let seededStore = workDirectory + "/dedupe-seeded.sqlite"
                progress("seeding a dedupe store with \(seeded.count) submitted leads")
                try environment.seedDedupeStore(at: seededStore, with: seeded)
                if selected.contains("3") {
                    progress(
                        "producing \(sizes.noAPIRecords) records (half duplicates, half invalid) to \(Topics.noAPI)")
                    try await environment.kafka.produce(
                        noAPIRecords(count: sizes.noAPIRecords, seeded: seeded), to: Topics.noAPI,
                        partitions: sizes.noAPIPartitions)
                }
                await each("3") { run in
                    let peak = try await noAPIRun(
                        environment, book: book, records: sizes.noAPIRecords, seededStore: seededStore, run: run)
                    book.record("5", "peak RSS during scenario 3", peak, unit: "MiB", target: .below(64))
                }
                if selected.contains("5") {
                    progress("producing \(sizes.millionRecords) records to \(Topics.million)")
                    try await environment.kafka.produce(
                        noAPIRecords(count: sizes.millionRecords, seeded: seeded), to: Topics.million,
                        partitions: sizes.millionPartitions)
                }
                await each("5") {
                    try await millionRun(
                        environment, book: book, records: sizes.millionRecords, seconds: sizes.millionSeconds,
                        seededStore: seededStore, run: $0)
                }
            }
            await each("4") { try await latencyRun(environment, book: book, seconds: sizes.latencySeconds, run: $0) }
        } catch {
            progress("bench stopped: \(error)")
            errors.append("\(error)")
        }
        await ChildProcess.terminateAll()

        let report = BenchReport(
            date: Date().formatted(.iso8601), commit: git(["rev-parse", "--short", "HEAD"]),
            workingTreeChanges: git(["status", "--porcelain", "--untracked-files=no", "--", "Sources"])
                .split(separator: "\n").map { String($0.dropFirst(3)) },
            relayBinary: binaries + "/lead-relay", apiRelayBinary: apiRelayBinary, machine: .current(),
            repeats: repeats, quick: quick, totalSeconds: (ContinuousClock.now - began).seconds,
            figures: book.figures, errors: errors)
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try encoder.encode(report).write(to: URL(fileURLWithPath: outputDirectory + "/bench-results.json"))
            try Data(report.markdown().utf8).write(to: URL(fileURLWithPath: outputDirectory + "/BENCHMARKS.md"))
            progress("wrote BENCHMARKS.md and bench-results.json in \(outputDirectory)")
        } catch {
            progress("could not write the results: \(error)")
            exit(1)
        }
        exit(errors.isEmpty ? 0 : 1)
    }

    /// kafka-dev's topics, each with enough partitions that none holds more than the mock cluster keeps (5 MiB).
    static func topicArguments(sizes: Sizes, repeats: Int) -> [String] {
        var topics = [
            "\(Topics.budget):6", "\(Topics.sharedBudget):12", "\(Topics.lostAnswers):6",
            "\(Topics.noAPI):\(sizes.noAPIPartitions)",
            "\(Topics.million):\(sizes.millionPartitions)", "\(Topics.results):6", "\(Topics.deadLetters):6",
        ]
        for run in 1...repeats {
            topics += ["\(Topics.latencyInput(run)):6", "\(Topics.latencyResults(run)):6", "\(Topics.stop(run)):6"]
        }
        return topics.flatMap { ["--topic", $0] }
    }

    /// Alternately a re-sent seeded lead (a duplicate: no API call) and an invalid record (a dead letter).
    static func noAPIRecords(count: Int, seeded: [SampleLeads.Record]) -> [SampleLeads.Record] {
        let invalid = SampleLeads.mix(
            count: (count + 1) / 2, duplicateFraction: 0, invalidFraction: 1, seed: 7, namespace: "invalid")
        return (0..<count).map { $0 % 2 == 0 ? seeded[($0 / 2) % seeded.count] : invalid[$0 / 2] }
    }

    static func git(_ arguments: [String]) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        guard (try? process.run()) != nil else { return "unknown" }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
