import ArgumentParser
import Foundation
import LeadRelay
import LeadRelayDemo
import Logging
import Prometheus
import Synchronization

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

    @Option(help: "The seed of the sample mix: the same seed gives the same records and counts.")
    var seed: UInt64 = 1

    func validate() throws {
        guard count > 0 else { throw ValidationError("--count must be positive") }
        guard (0...1).contains(duplicates), (0...1).contains(invalid), duplicates + invalid <= 1 else {
            throw ValidationError("--duplicates and --invalid are fractions that add up to at most 1")
        }
        guard latencyMs >= 0 else { throw ValidationError("--latency-ms must not be negative") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level") }
    }

    func run() async throws {
        // Before the mock cluster starts and the samples are produced, which would all be in vain.
        try exitUnlessListenable(host: Demo.httpHost, port: httpPort, setting: "--http-port")
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
        options.seed = seed
        // On a terminal one status line is redrawn in place, often enough to look live; in a pipe or a log,
        // one line a second.
        let terminal = isatty(STDOUT_FILENO) != 0
        options.progressInterval = terminal ? .milliseconds(250) : .seconds(1)
        let display = ProgressDisplay(terminal: terminal)
        let summary = try await Demo(options: options).run(
            registry: registry, logger: Logger(label: "lead-relay-demo"), report: display.show)
        display.finish()
        for line in Self.summaryLines(summary) { print(line) }
    }

    static func summaryLines(_ summary: Demo.Summary) -> [String] {
        var lines = [
            "summary: \(summary.produced) records in \(seconds(summary.joinSeconds + summary.seconds))",
            "  \(seconds(summary.joinSeconds)) joining the consumer group, then \(seconds(summary.seconds)) of work",
            """
              outcomes: \(summary.submitted) submitted, \(counted(summary.duplicates, "duplicate")), \
            \(counted(summary.deadLettered, "dead letter"))
            """,
            String(
                format: "  overall: %.1f leads/s, budget use %.0f%% of %.0f requests/s", summary.leadsPerSecond,
                summary.budgetUse * 100, summary.budgetPerSecond),
            """
              the API received \(counted(summary.apiRequests, "request")), stored \
            \(counted(summary.leadsStoredByAPI, "lead")), \(counted(summary.budgetViolations, "budget violation"))
            """,
        ]
        if let deadLetters = summary.deadLetterSummary {
            lines.append(
                "\(counted(summary.deadLettered, "dead letter")): `lead-relay dlq summary` shows them by reason "
                    + "(`dlq list` one by one, `dlq replay` re-drives them; see README):")
            lines += deadLetters.text.split(separator: "\n").map { "  " + $0 }
        }
        return lines
    }
}

/// "2.5 s".
func seconds(_ value: Double) -> String {
    String(format: "%.1f s", value)
}

/// "1 lead", "2 leads".
func counted(_ count: Int, _ noun: String) -> String {
    "\(count) \(noun)\(count == 1 ? "" : "s")"
}

/// Shows the demo's reports: notes as lines; the status as a bar redrawn in place on a terminal, else as a
/// line each time (the demo reports once a second then), except the joining notice, shown once.
final class ProgressDisplay: Sendable {
    private let terminal: Bool
    private let state = Mutex(State())

    private struct State {
        var statusShown = false
        var joiningShown = false
    }

    init(terminal: Bool) {
        self.terminal = terminal
    }

    func show(_ report: Demo.Report) {
        state.withLock { state in
            switch report {
            case .note(let line):
                if state.statusShown { clearStatus() }
                print(line)
                state.statusShown = false
            case .joining(let elapsed):
                let line = "joining the consumer group… \(Int(elapsed / .seconds(1))) s"
                if terminal {
                    redraw(line)
                    state.statusShown = true
                } else if !state.joiningShown {
                    print("joining the consumer group…")
                }
                state.joiningShown = true
            case .progress(let progress):
                if terminal {
                    redraw(Self.terminalStatus(progress))
                    state.statusShown = true
                } else {
                    print(Self.status(progress))
                }
            }
            // nil: every stream, i.e. standard output, without touching the C global (not concurrency-safe).
            fflush(nil)
        }
    }

    /// Ends the redrawn line, so that what follows starts on a line of its own.
    func finish() {
        state.withLock { state in
            if state.statusShown { print("") }
            state.statusShown = false
        }
    }

    static func status(_ progress: Demo.Progress) -> String {
        """
        \(progress.done)/\(progress.total) handled: \(progress.submitted) submitted, \
        \(counted(progress.duplicates, "duplicate")), \(counted(progress.deadLettered, "dead letter")); now \
        \(String(format: "%.1f", progress.recentLeadsPerSecond)) leads/s, budget use \
        \(String(format: "%.0f", progress.recentBudgetUse * 100))%
        """
    }

    /// The bar, then the figures that change most, so that a narrow terminal cuts the counts, not the rate.
    static func terminalStatus(_ progress: Demo.Progress) -> String {
        """
        \(bar(progress)) \(progress.done)/\(progress.total)  \
        \(String(format: "%.1f", progress.recentLeadsPerSecond)) leads/s  budget use \
        \(String(format: "%.0f", progress.recentBudgetUse * 100))%  (\(progress.submitted) submitted, \
        \(counted(progress.duplicates, "duplicate")), \(counted(progress.deadLettered, "dead letter")))
        """
    }

    static func bar(_ progress: Demo.Progress, width: Int = 20) -> String {
        let filled = progress.total > 0 ? min(width, width * progress.done / progress.total) : 0
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
    }

    /// Back to the start of the line, erase it (ANSI EL), write the status without a newline. Cut to the
    /// terminal's width: a line that wrapped could no longer be redrawn in place.
    private func redraw(_ line: String) {
        print("\r\u{1B}[2K" + line.prefix(max(Self.terminalColumns() - 1, 20)), terminator: "")
    }

    private static func terminalColumns() -> Int {
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    private func clearStatus() {
        print("\r\u{1B}[2K", terminator: "")
    }
}
