import Foundation
import TestSupport
import Testing

/// `lead-relay run` with one bad configuration value: exit status 2 and one line on standard error
/// naming the variable, before anything connects. Kafka and the API point at a closed port, where
/// a relay that went on to connect would keep retrying instead of exiting.
@Suite struct EndToEndConfigurationTests {
    struct BadValue: Sendable, CustomTestStringConvertible {
        /// The variables set (a value) or removed (nil) on top of a valid environment.
        var changes: [String: String?]
        /// The variable the error line must name.
        var named: String

        init(_ variable: String, _ value: String?, named: String? = nil) {
            changes = [variable: value]
            self.named = named ?? variable
        }

        init(_ changes: [String: String?], named: String) {
            self.changes = changes
            self.named = named
        }

        var testDescription: String {
            changes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.map { "\"\($0)\"" } ?? "(unset)")" }
                .joined(separator: " ")
        }
    }

    static let closedPort = "127.0.0.1:1"

    static func validEnvironment(_ scratch: ScratchDirectory) -> [String: String] {
        [
            "KAFKA_BOOTSTRAP_SERVERS": closedPort,
            "SEEKER_LEADS_BASE_URL": "http://\(closedPort)",
            "SEEKER_LEADS_TOKEN": "e2e-configuration-token",
            "LEAD_RELAY_HTTP_HOST": "127.0.0.1",
            "LEAD_RELAY_HTTP_PORT": "0",
            "LEAD_RELAY_DEDUPE_DB": scratch.path("dedupe.sqlite"),
        ]
    }

    static let badValues: [BadValue] = [
        BadValue("LEAD_RELAY_HTTP_PORT", "abc"),
        BadValue("LEAD_RELAY_HTTP_PORT", "70000"),
        BadValue("LEAD_RELAY_HTTP_HOST", "not a host!"),
        BadValue("LEAD_RELAY_DEDUPE_TTL_HOURS", "-1"),
        BadValue("LEAD_RELAY_DEDUPE_DB", ""),
        BadValue("SEEKER_LEADS_BASE_URL", nil),
        BadValue("SEEKER_LEADS_BASE_URL", "ftp://example.com"),
        BadValue("SEEKER_LEADS_TIMEOUT_MS", "-1"),
        BadValue("KAFKA_BOOTSTRAP_SERVERS", nil),
        BadValue("KAFKA_BOOTSTRAP_SERVERS", "not a broker list"),
        BadValue("LEAD_RELAY_LOG_FORMAT", "xml"),
        BadValue("LEAD_RELAY_LOG_LEVEL", "loud"),
        BadValue("LEAD_RELAY_RETRY_DEADLINE_SECONDS", "x"),
        BadValue("LEAD_RELAY_RETRY_BASE_MS", "0"),
        BadValue("LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS", "-5"),
        BadValue("LEAD_RELAY_MAX_IN_FLIGHT", "0"),
        BadValue("LEAD_RELAY_RATE_LIMIT", "ten"),
        BadValue("LEAD_RELAY_INPUT_TOPIC", "bad topic"),
        BadValue("LEAD_RELAY_RESULTS_TOPIC", ""),
        BadValue("LEAD_RELAY_DLQ_TOPIC", "a/b"),
        BadValue("LEAD_RELAY_GROUP_ID", "has space"),
        BadValue("SEEKER_LEADS_TOKEN", nil),
        BadValue(
            ["SEEKER_LEADS_TOKEN": nil, "SEEKER_LEADS_TOKEN_FILE": "/nonexistent"], named: "SEEKER_LEADS_TOKEN_FILE"),
        BadValue(["SEEKER_LEADS_CLIENT_ID": "relay"], named: "SEEKER_LEADS_CLIENT_ID"),
        BadValue(
            [
                "SEEKER_LEADS_TOKEN": nil, "SEEKER_LEADS_TOKEN_URL": "http://\(closedPort)/oauth/token",
                "SEEKER_LEADS_CLIENT_ID": "relay",
            ],
            named: "SEEKER_LEADS_CLIENT_SECRET"),
    ]

    @Test(arguments: badValues)
    func badValueStopsStartUpWithStatus2AndOneLineNamingTheVariable(_ bad: BadValue) async throws {
        let scratch = try ScratchDirectory()
        var environment = Self.validEnvironment(scratch)
        for (variable, value) in bad.changes {
            environment[variable] = value
        }
        let relay = try ChildProcess(
            product: "lead-relay", arguments: ["run"], environment: environment, logDirectory: scratch.url)
        #expect(try await relay.waitForExit(timeout: .seconds(60)) == .exited(2))
        let lines = relay.stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 1, "standard error: \(relay.stderr)")
        #expect(lines.first?.contains(bad.named) == true, "standard error: \(relay.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("dedupe.sqlite")), "the dedupe store was opened")
    }

    /// No environment at all: every missing required variable, one line each, and nothing started.
    @Test func emptyEnvironmentNamesEveryRequiredVariable() async throws {
        let scratch = try ScratchDirectory()
        let relay = try ChildProcess(product: "lead-relay", arguments: ["run"], logDirectory: scratch.url)
        #expect(try await relay.waitForExit(timeout: .seconds(60)) == .exited(2))
        let lines = relay.stderr.split(separator: "\n").map(String.init)
        let named = lines.compactMap { line -> String? in
            guard line.hasPrefix("lead-relay: ") else { return nil }
            return line.dropFirst("lead-relay: ".count).split(separator: ":").first.map(String.init)
        }
        #expect(named == ["SEEKER_LEADS_BASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SEEKER_LEADS_TOKEN"], "\(relay.stderr)")
        #expect(lines.count == named.count, "standard error: \(relay.stderr)")
    }

    /// `run --help` lists every variable the relay reads.
    @Test func runHelpListsEveryVariable() throws {
        let scratch = try ScratchDirectory()
        let text = try CommandLineTests.run(["run", "--help"], scratch: scratch).output
        for variable in [
            "KAFKA_BOOTSTRAP_SERVERS", "SEEKER_LEADS_BASE_URL", "SEEKER_LEADS_TOKEN", "SEEKER_LEADS_CLIENT_SECRET",
            "LEAD_RELAY_HTTP_PORT", "LEAD_RELAY_DEDUPE_DB", "LEAD_RELAY_LOG_FORMAT", "LEAD_RELAY_MAX_EVENT_BYTES",
        ] {
            #expect(text.contains(variable), "\(variable) in: \(text)")
        }
        #expect(text.contains("default: 8080"), "\(text)")
    }

    /// The control for the cases above: the valid environment starts (and would go on trying to connect).
    @Test func validEnvironmentStarts() async throws {
        let scratch = try ScratchDirectory()
        let relay = try await RelayProcess(environment: Self.validEnvironment(scratch), scratch: scratch)
        #expect(try await relay.get("/health/live").status == 200)
        let ready = try await relay.get("/health/ready")
        #expect(ready.status == 503)
        let failing = (jsonObject(Array(ready.body.utf8))?["failing"] as? [[String: Any]] ?? [])
            .reduce(into: [String: String]()) { reasons, entry in
                if let check = entry["check"] as? String { reasons[check] = entry["reason"] as? String }
            }
        // The broker port is closed: the reason says so, naming the configured servers.
        #expect(failing["consumer"] == "no broker reachable at \(Self.closedPort)", "\(ready.body)")
        #expect(failing["producer"] == "no broker reachable at \(Self.closedPort)", "\(ready.body)")
        // The first scrape: every metric says what it measures, the API client's too.
        let scrape = try await relay.get("/metrics").body
        let helpLines = scrape.split(separator: "\n").filter { $0.hasPrefix("# HELP ") }
        #expect(helpLines.count >= 15, "\(scrape)")
        #expect(!scrape.contains("reported through swift-metrics"), "\(scrape)")
        #expect(scrape.contains("# HELP lead_relay_budget_timer_lateness_seconds How late"), "\(scrape)")
        #expect(relay.process.isRunning)
        relay.process.stop()
        #expect(!relay.process.stderr.contains("e2e-configuration-token"), "the token appears in the relay's log")
    }
}
