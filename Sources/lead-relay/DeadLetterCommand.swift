import ArgumentParser
import Foundation
import Kafka
import LeadRelay
import Logging
import Synchronization
import UnixSignals

struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspects the dead-letter topic and re-drives its records to the input topic.",
        discussion: """
            Reads the same variables as `lead-relay run` for the cluster and the topics:

            """ + "\n"
                + RelayConfiguration.help(for: DeadLetterToolConfiguration.variables) + """


                    Exit status: 0 on success, 1 when a dead letter was refused or could not be published (or Kafka \
                    could not be reached), 2 on bad usage or configuration.
                    """,
        subcommands: [Summary.self, List.self, Replay.self]
    )

    /// The filters every subcommand takes.
    struct Filters: ParsableArguments {
        @Option(help: "Only this reason (repeatable), e.g. rejected-by-api, schema-violation.")
        var reason: [String] = []

        @Option(help: "Only this stage (repeatable): decode, validate, submit.")
        var stage: [String] = []

        @Option(help: "Only dead letters the API answered with this HTTP status (repeatable).")
        var httpStatus: [Int] = []

        @Option(help: "Only those failed at or after: RFC 3339, or a duration before now such as 24h, 30m, 7d.")
        var since: String?

        @Option(help: "Only those failed at or before: RFC 3339, or a duration before now.")
        var until: String?

        @Option(help: "Only those read from this input partition (repeatable).")
        var sourcePartition: [Int32] = []

        @Option(help: "Only those read from input offsets FROM-TO (inclusive).")
        var sourceOffset: String?

        @Option(name: .customLong("key"), help: "Only the dead letter of this dedupe key (repeatable).")
        var keys: [String] = []

        func validate() throws { _ = try filter() }

        func filter() throws(ValidationError) -> DeadLetterFilter {
            var filter = DeadLetterFilter()
            filter.reasons = reason
            filter.stages = stage
            filter.httpStatuses = httpStatus
            filter.sourcePartitions = sourcePartition
            filter.dedupeKeys = keys
            if let since {
                guard let bound = DeadLetterFilter.TimeBound(since) else {
                    throw ValidationError("--since: not an RFC 3339 time or a duration like 24h: \(since)")
                }
                filter.since = bound
            }
            if let until {
                guard let bound = DeadLetterFilter.TimeBound(until) else {
                    throw ValidationError("--until: not an RFC 3339 time or a duration like 24h: \(until)")
                }
                filter.until = bound
            }
            if let sourceOffset {
                let parts = sourceOffset.split(separator: "-", omittingEmptySubsequences: false)
                guard parts.count == 2, let from = Int64(parts[0]), let to = Int64(parts[1]), from >= 0, from <= to
                else { throw ValidationError("--source-offset: must be FROM-TO, e.g. 100-250: \(sourceOffset)") }
                filter.sourceOffsets = from...to
            }
            return filter
        }
    }

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    struct Summary: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts dead letters by reason, stage, HTTP status and day; shows no personal data.")

        @OptionGroup var filters: Filters
        @Option(help: "text or json.") var format: OutputFormat = .text

        func run() async throws {
            let queue = try deadLetterQueue()
            let summary = try await exitOnKafkaError { try await queue.summary(try filters.filter()) }
            switch format {
            case .text: print(summary.text)
            case .json: print(try jsonLine(summary))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per dead letter: where it is, where it came from, why it failed.",
            discussion: "Keys and values hold personal data: they are printed only with --show-values.")

        @OptionGroup var filters: Filters
        @Option(help: "At most this many lines.") var limit: Int?
        @Option(help: "text or json (one object per line).") var format: OutputFormat = .text
        @Flag(help: "Also print each record's key and value: personal data.") var showValues = false

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        }

        func run() async throws {
            let queue = try deadLetterQueue()
            if showValues {
                printError(
                    "lead-relay dlq list: --show-values prints personal data (names, emails, phone numbers, "
                        + "messages): keep the output out of tickets, chats and logs")
            }
            let filter = try filters.filter()
            let (format, showValues, limit) = (self.format, self.showValues, self.limit)
            try await exitOnKafkaError {
                var printed = 0
                try await queue.scan(filter) { entry in
                    let listing = DeadLetterListing(entry, showValues: showValues)
                    print(format == .json ? try jsonLine(listing) : listing.text)
                    printed += 1
                    return limit.map { printed < $0 } ?? true
                }
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publishes the selected dead letters to the input topic again.",
            discussion: """
                Each record is published with its original key, value and headers, without the failure's \
                headers, plus lead-relay.replayed-from and lead-relay.replay-count. One replayed \
                LEAD_RELAY_MAX_REPLAYS times already is refused. Progress is kept in a consumer group of its \
                own, named after the filters (or --progress-group), committed after each record the broker \
                acknowledged: the same replay run again publishes nothing twice, and an interrupted one (SIGINT, \
                SIGTERM) resumes where it stopped. Do not run the same replay twice at once.
                """)

        @OptionGroup var filters: Filters
        @Flag(help: "Publish nothing; print what would be published.") var dryRun = false
        @Option(help: "At most this many dead letters.") var limit: Int?
        @Option(help: "At most this many records per second, e.g. 50/s.") var rate: String?
        @Option(help: "The consumer group keeping this replay's progress (default: named after the filters).")
        var progressGroup: String?
        @Option(help: "The final summary as text or json.") var format: OutputFormat = .text

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            _ = try ratePerSecond()
        }

        private func ratePerSecond() throws(ValidationError) -> Double? {
            guard let rate else { return nil }
            let number = rate.hasSuffix("/s") ? String(rate.dropLast(2)) : rate
            guard let value = Double(number), value > 0, value.isFinite else {
                throw ValidationError("--rate: must be a positive number of records per second, e.g. 50/s: \(rate)")
            }
            return value
        }

        func run() async throws {
            let queue = try deadLetterQueue()
            let options = DeadLetterReplayOptions(
                filter: try filters.filter(), limit: limit, ratePerSecond: try ratePerSecond(), dryRun: dryRun,
                progressGroup: progressGroup)
            let printer = ReplayProgressPrinter(isTerminal: isatty(STDERR_FILENO) == 1)
            let replay = Task {
                try await queue.replay(options, progress: printer.update) { event in
                    switch event {
                    case .wouldPublish(let entry):
                        print("would publish " + DeadLetterListing(entry, showValues: false).text)
                    case .published: break
                    case .refused(let entry, let maxReplays):
                        let line =
                            "refused \(entry.location): replayed \(entry.replayCount) times already "
                            + "(LEAD_RELAY_MAX_REPLAYS=\(maxReplays))"
                        printer.interject(line)
                        if options.dryRun { print("would refuse " + DeadLetterListing(entry, showValues: false).text) }
                    case .failed(let entry, let error):
                        printer.interject("could not publish \(entry.location): \(error)")
                    }
                }
            }
            let signals = Task {
                for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                    replay.cancel()
                    return
                }
            }
            let ticker = Task { await printer.tickEverySecond() }
            defer {
                signals.cancel()
                ticker.cancel()
            }
            let report = try await exitOnKafkaError { try await replay.value }
            printer.finish()
            switch format {
            case .text: print(Self.text(of: report))
            case .json: print(try jsonLine(report))
            }
            if !report.isSuccess { throw ExitCode.failure }
        }

        static func text(of report: DeadLetterReplayReport) -> String {
            var lines = [
                "\(report.dryRun ? "dry run of a replay" : "replay") from \(report.deadLetterTopic) to "
                    + "\(report.inputTopic) (progress group \(report.progressGroup))",
                "selected \(report.selected), published \(report.published), refused \(report.refused), "
                    + "skipped \(report.skipped), failed \(report.failed)",
            ]
            if report.interrupted {
                lines.append("interrupted: run the same command again to resume")
            }
            return lines.joined(separator: "\n")
        }
    }
}

/// The dead-letter topic as the environment configures it; a bad variable exits with status 2.
private func deadLetterQueue() throws -> DeadLetterQueue {
    let configuration = try configurationOrExit(DeadLetterToolConfiguration.fromEnvironment)
    RelayLogging.bootstrap(level: .error, format: .text)
    return DeadLetterQueue(configuration: configuration, logger: Logger(label: "lead-relay.dlq"))
}

/// A Kafka failure (no broker answering, a refused request) is one line on standard error and exit status 1.
private func exitOnKafkaError<Result>(_ body: () async throws -> Result) async throws -> Result {
    do {
        return try await body()
    } catch let error as KafkaError {
        printError("lead-relay dlq: \(error)")
        throw ExitCode.failure
    }
}

private func jsonLine(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// A replay's progress on standard error: a bar with rate and ETA redrawn on a terminal, else one JSON line per
/// second.
final class ReplayProgressPrinter: Sendable {
    private struct State {
        var report: DeadLetterReplayReport?
        var drawn = false
        /// The last JSON line written, so that an unchanged report is not written again.
        var lastLine: String?
    }

    private let isTerminal: Bool
    private let startedAt = ContinuousClock.now
    private let state = Mutex(State())

    init(isTerminal: Bool) { self.isTerminal = isTerminal }

    func update(_ report: DeadLetterReplayReport) {
        state.withLock { $0.report = report }
    }

    func tickEverySecond() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            draw()
        }
    }

    /// A line of its own, above the bar.
    func interject(_ line: String) {
        state.withLock { state in
            if isTerminal, state.drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            state.drawn = false
        }
        printError(line)
    }

    func finish() {
        draw(onlyIfChanged: true)
        if isTerminal, state.withLock({ $0.drawn }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func draw(onlyIfChanged: Bool = false) {
        state.withLock { state in
            guard let report = state.report else { return }
            let elapsed = (ContinuousClock.now - startedAt) / .seconds(1)
            let perSecond = elapsed > 0 ? Double(report.read) / elapsed : 0
            let remaining = max(0, report.pending - report.read)
            let eta = perSecond > 0 ? Double(remaining) / perSecond : nil
            if isTerminal {
                let width = 30
                let filled = report.pending > 0 ? width * min(report.read, report.pending) / report.pending : width
                let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                let text =
                    "\r\u{1B}[K[\(bar)] \(report.read)/\(report.pending) read, \(report.published) published, "
                    + "\(report.refused) refused, \(String(format: "%.1f", perSecond))/s, ETA "
                    + (eta.map { "\(Int($0.rounded(.up)))s" } ?? "-")
                FileHandle.standardError.write(Data(text.utf8))
                state.drawn = true
            } else {
                let counts =
                    "\"read\":\(report.read),\"pending\":\(report.pending),\"selected\":\(report.selected),"
                    + "\"published\":\(report.published),\"refused\":\(report.refused),"
                    + "\"skipped\":\(report.skipped),\"failed\":\(report.failed)"
                // The final line repeats no line the last tick wrote.
                guard !onlyIfChanged || state.lastLine != counts else { return }
                state.lastLine = counts
                printError(
                    "{\(counts),\"readPerSecond\":\(String(format: "%.1f", perSecond)),\"etaSeconds\":"
                        + "\(eta.map { String(Int($0.rounded(.up))) } ?? "null")}")
            }
        }
    }
}
