import Foundation

/// One measured quantity across a scenario's repetitions, with the issue's target when it has one.
struct Figure: Codable, Sendable {
    enum Target: Codable, Sendable {
        case atLeast(Double)
        case below(Double)
        case atMost(Double)

        var text: String {
            switch self {
            case .atLeast(let bound): "≥ \(format(bound))"
            case .below(let bound): "< \(format(bound))"
            case .atMost(let bound): "≤ \(format(bound))"
            }
        }

        /// Judged on the worst repetition, not the median, so that one bad run is not hidden.
        func isMet(by runs: [Double]) -> Bool? {
            guard let worstLow = runs.min(), let worstHigh = runs.max() else { return nil }
            switch self {
            case .atLeast(let bound): return worstLow >= bound
            case .below(let bound): return worstHigh < bound
            case .atMost(let bound): return worstHigh <= bound
            }
        }
    }

    var scenario: String
    var name: String
    var unit: String
    var runs: [Double]
    var median: Double
    var min: Double
    var max: Double
    var target: String?
    var met: Bool?
    var note: String?

    init(scenario: String, name: String, unit: String, runs: [Double], target: Target? = nil, note: String? = nil) {
        self.scenario = scenario
        self.name = name
        self.unit = unit
        self.runs = runs
        let sorted = runs.sorted()
        self.median = sorted.isEmpty ? .nan : (sorted[(sorted.count - 1) / 2] + sorted[sorted.count / 2]) / 2
        self.min = sorted.first ?? .nan
        self.max = sorted.last ?? .nan
        self.target = target?.text
        self.met = target?.isMet(by: runs)
        self.note = note
    }
}

/// Three significant digits, or a plain integer for large values.
func format(_ value: Double) -> String {
    guard value.isFinite else { return "n/a" }
    if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
    let magnitude = abs(value)
    if magnitude >= 100 { return String(format: "%.0f", value) }
    if magnitude >= 10 { return String(format: "%.1f", value) }
    if magnitude >= 1 { return String(format: "%.2f", value) }
    return String(format: "%.3g", value)
}

/// p-th percentile (0...1) of samples, nearest rank.
func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    guard !sorted.isEmpty else { return .nan }
    let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
    return sorted[Swift.max(0, Swift.min(sorted.count - 1, rank))]
}

struct Machine: Codable, Sendable {
    var processors: Int
    var cpuModel: String
    var memoryGiB: Double
    var kernel: String

    static func current() -> Machine {
        let cpuInfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuInfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let memInfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let memoryKiB =
            memInfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
            .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Double($0) } ?? 0
        let kernel = ((try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return Machine(
            processors: ProcessInfo.processInfo.activeProcessorCount, cpuModel: model,
            memoryGiB: (memoryKiB / 1_048_576 * 10).rounded() / 10, kernel: kernel)
    }
}

struct BenchReport: Codable, Sendable {
    var date: String
    var commit: String
    var workingTreeChanges: [String]
    var relayBinary: String
    var apiRelayBinary: String
    var machine: Machine
    var repeats: Int
    var quick: Bool
    var totalSeconds: Double
    var figures: [Figure]
    var errors: [String]

    func markdown() -> String {
        var lines = [
            "# Benchmarks",
            "",
            "Written by `make bench` (Benchmarks/RelayBench); the raw figures of every repetition are in",
            "`bench-results.json`. Release build; the relay (`lead-relay run`) runs as its own process against",
            "`lead-relay kafka-dev` (librdkafka's mock cluster, 3 brokers) and `seeker-leads-sim`, all on loopback;",
            "in 1 + PostgreSQL and 7 the relays share a PostgreSQL server (Debian's) that the bench starts for each run.",
            "",
            "- Date: \(date)",
            "- Commit: \(commit)"
                + (workingTreeChanges.isEmpty
                    ? "" : " plus uncommitted changes in \(workingTreeChanges.joined(separator: ", "))"),
            "- Relay binary: `\(relayBinary)`"
                + (apiRelayBinary == relayBinary
                    ? ""
                    : "; for the scenarios that call the API (1, 1 + PostgreSQL, 2, API budget use, 4, 6, 7, and scenario 5's figures during scenario 1): `\(apiRelayBinary)`"),
            "- Machine: \(machine.processors) processors, \(machine.cpuModel), \(format(machine.memoryGiB)) GiB memory,"
                + " Linux \(machine.kernel)",
            "- Repetitions per scenario: \(repeats)\(quick ? " (BENCH_QUICK: reduced sizes)" : ""); median and"
                + " spread (min–max). A target is met only if every repetition meets it.",
            "- Total bench time: \(format(totalSeconds)) s",
            "",
            "| Scenario | Figure | Median | Spread (min–max) | Unit | Target | Met |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for figure in figures {
            let met = figure.met.map { $0 ? "yes" : "**no**" } ?? ""
            lines.append(
                "| \(figure.scenario) | \(figure.name) | \(format(figure.median)) | \(format(figure.min))–"
                    + "\(format(figure.max)) | \(figure.unit) | \(figure.target ?? "") | \(met) |")
        }
        if !errors.isEmpty {
            lines += ["", "## Failed repetitions", ""] + errors.map { "- \($0)" }
        }
        let notes = figures.compactMap { figure in figure.note.map { "- \(figure.scenario), \(figure.name): \($0)" } }
        if !notes.isEmpty {
            lines += ["", "## How each figure is taken", ""] + notes
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
