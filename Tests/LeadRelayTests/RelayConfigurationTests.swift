import Foundation
import Logging
import TestSupport
import Testing

@testable import LeadRelay

@Suite struct RelayConfigurationTests {
    static let minimal = [
        "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
        "SEEKER_LEADS_BASE_URL": "http://127.0.0.1:8081",
        "SEEKER_LEADS_TOKEN": "t0ken",
    ]

    private func expectError(
        _ env: [String: String], naming variable: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        do {
            let configuration = try RelayConfiguration.fromEnvironment(env)
            Issue.record("expected an error naming \(variable), got \(configuration)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.errors.map(\.variable) == [variable], sourceLocation: sourceLocation)
            #expect(error.lines.first?.hasPrefix("lead-relay: \(variable): ") == true, sourceLocation: sourceLocation)
            #expect(error.lines.allSatisfy { !$0.contains("\n") }, sourceLocation: sourceLocation)
        }
    }

    private func withTemporaryFile(_ contents: String, _ body: (String) throws -> Void) throws {
        let scratch = try ScratchDirectory()
        try body(try scratch.write(contents, named: "value"))
    }

    @Test func defaults() throws {
        let configuration = try RelayConfiguration.fromEnvironment(Self.minimal)
        #expect(configuration.kafkaProperties == ["bootstrap.servers": "localhost:9092"])
        #expect(configuration.groupID == "lead-relay")
        #expect(configuration.inputTopic == "leads.submitted")
        #expect(configuration.resultsTopic == "leads.results")
        #expect(configuration.deadLetterTopic == "leads.dlq")
        #expect(configuration.httpHost == "0.0.0.0")
        #expect(configuration.httpPort == 8080)
        #expect(configuration.dedupeDatabasePath == "lead-relay.sqlite")
        #expect(configuration.dedupeTTL == .seconds(168 * 3600))
        #expect(configuration.retryDeadline == .seconds(3600))
        #expect(configuration.shutdownTimeout == .seconds(25))
        #expect(configuration.logLevel == .info)
        #expect(configuration.logFormat == .json)
        #expect(configuration.eventType == "lead.submitted")
        #expect(configuration.maxEventBytes == 65536)
        #expect(configuration.seekerLeadsBaseURL.absoluteString == "http://127.0.0.1:8081")
        #expect(configuration.seekerLeadsAuthentication == .staticToken("t0ken"))
        #expect(configuration.seekerLeadsTimeout == .milliseconds(10000))
        #expect(configuration.maxInFlight == 10)
        #expect(configuration.rateLimit == 10)
        #expect(configuration.rateWindow == .milliseconds(200))
        #expect(configuration.rateMargin == .milliseconds(5))
        #expect(configuration.retryBase == .milliseconds(200))
        #expect(configuration.retryMax == .milliseconds(30000))
        #expect(configuration.circuitThreshold == 5)
        #expect(configuration.maxPendingRecords == 500)
    }

    @Test func theSharedDatabaseAndItsBudgetKey() throws {
        let embedded = try RelayConfiguration.fromEnvironment(Self.minimal)
        #expect(embedded.databaseURL == nil)
        #expect(embedded.budgetKey == "default")
        #expect(embedded.databaseConnectTimeout == .seconds(30))

        var env = Self.minimal
        env["LEAD_RELAY_DATABASE_URL"] = "postgres://relay:s3cret-pw@db.internal:6432/leads?sslmode=verify-full"
        env["LEAD_RELAY_DATABASE_CONNECT_TIMEOUT_SECONDS"] = "5"
        let shared = try RelayConfiguration.fromEnvironment(env)
        #expect(shared.databaseURL?.host == "db.internal")
        #expect(shared.databaseURL?.port == 6432)
        #expect(shared.databaseURL?.password == "s3cret-pw")
        #expect(shared.databaseURL?.tlsMode == .verifyFull)
        #expect(shared.databaseConnectTimeout == .seconds(5))
        #expect(!shared.description.contains("s3cret-pw"))
        #expect(RelayConfiguration.isSecret(variable: "LEAD_RELAY_DATABASE_URL"))

        try withTemporaryFile("postgres://relay:file-pw@127.0.0.1:5432/leads?sslmode=disable\n") { path in
            var fromFile = Self.minimal
            fromFile["LEAD_RELAY_DATABASE_URL_FILE"] = path
            let configuration = try RelayConfiguration.fromEnvironment(fromFile)
            #expect(configuration.databaseURL?.password == "file-pw")
        }

        var bad = Self.minimal
        bad["LEAD_RELAY_DATABASE_URL"] = "mysql://relay:s3cret-pw@db/leads"
        expectError(bad, naming: "LEAD_RELAY_DATABASE_URL")
        do {
            _ = try RelayConfiguration.fromEnvironment(bad)
        } catch {
            #expect(!error.description.contains("s3cret-pw"))
        }

        var credentials = Self.minimal
        credentials["SEEKER_LEADS_TOKEN"] = nil
        credentials["SEEKER_LEADS_TOKEN_URL"] = "http://127.0.0.1:8082/token"
        credentials["SEEKER_LEADS_CLIENT_ID"] = "portal-client-7"
        credentials["SEEKER_LEADS_CLIENT_SECRET"] = "secret"
        let byClient = try RelayConfiguration.fromEnvironment(credentials)
        #expect(byClient.budgetKey == "portal-client-7")
        #expect(!byClient.description.contains("portal-client-7"))
        credentials["LEAD_RELAY_BUDGET_KEY"] = "portals-eu"
        #expect(try RelayConfiguration.fromEnvironment(credentials).budgetKey == "portals-eu")
    }

    @Test func explicitValues() throws {
        var env = Self.minimal
        env["LEAD_RELAY_RETRY_DEADLINE_SECONDS"] = "0"
        env["LEAD_RELAY_HTTP_PORT"] = "0"
        env["LEAD_RELAY_HTTP_HOST"] = "::1"
        env["LEAD_RELAY_LOG_LEVEL"] = "debug"
        env["LEAD_RELAY_LOG_FORMAT"] = "text"
        env["KAFKA_SESSION_TIMEOUT_MS"] = "6000"
        env["KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL"
        let configuration = try RelayConfiguration.fromEnvironment(env)
        #expect(configuration.retryDeadline == nil)
        #expect(configuration.httpPort == 0)
        #expect(configuration.httpHost == "::1")
        #expect(configuration.logLevel == .debug)
        #expect(configuration.logFormat == .text)
        #expect(configuration.kafkaProperties["session.timeout.ms"] == "6000")
        #expect(configuration.kafkaProperties["security.protocol"] == "SASL_SSL")
    }

    static let badValues: [(String, String)] = [
        ("LEAD_RELAY_GROUP_ID", ""), ("LEAD_RELAY_GROUP_ID", "has space"),
        ("LEAD_RELAY_INPUT_TOPIC", "bad topic"), ("LEAD_RELAY_INPUT_TOPIC", ""),
        ("LEAD_RELAY_RESULTS_TOPIC", "a/b"), ("LEAD_RELAY_DLQ_TOPIC", ".."),
        ("LEAD_RELAY_HTTP_HOST", "not a host"), ("LEAD_RELAY_HTTP_HOST", ""),
        ("LEAD_RELAY_HTTP_PORT", "abc"), ("LEAD_RELAY_HTTP_PORT", "65536"), ("LEAD_RELAY_HTTP_PORT", "-1"),
        ("LEAD_RELAY_DEDUPE_DB", ""), ("LEAD_RELAY_DEDUPE_TTL_HOURS", "0"), ("LEAD_RELAY_DEDUPE_TTL_HOURS", "1.5"),
        ("LEAD_RELAY_RETRY_DEADLINE_SECONDS", "-5"), ("LEAD_RELAY_RETRY_DEADLINE_SECONDS", "soon"),
        ("LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS", "x"), ("LEAD_RELAY_LOG_LEVEL", "verbose"),
        ("LEAD_RELAY_LOG_FORMAT", "xml"), ("LEAD_RELAY_EVENT_TYPE", ""), ("LEAD_RELAY_MAX_EVENT_BYTES", "0"),
        ("SEEKER_LEADS_BASE_URL", "ftp://example.com"), ("SEEKER_LEADS_BASE_URL", "/relative"),
        ("SEEKER_LEADS_BASE_URL", ""), ("SEEKER_LEADS_TIMEOUT_MS", "0"), ("LEAD_RELAY_MAX_IN_FLIGHT", "0"),
        ("LEAD_RELAY_RATE_LIMIT", "ten"), ("LEAD_RELAY_RATE_WINDOW_MS", "0"), ("LEAD_RELAY_RATE_MARGIN_MS", "-1"),
        ("LEAD_RELAY_RETRY_BASE_MS", "0"), ("LEAD_RELAY_RETRY_MAX_MS", "100"), ("LEAD_RELAY_CIRCUIT_THRESHOLD", "0"),
        ("LEAD_RELAY_MAX_PENDING_RECORDS", "0"), ("KAFKA_BOOTSTRAP_SERVERS", ""),
        ("KAFKA_BOOTSTRAP_SERVERS", "host:notaport"), ("KAFKA_BOOTSTRAP_SERVERS", "a:9092,,b:9092"),
        ("SEEKER_LEADS_TOKEN", ""),
    ]

    @Test(arguments: badValues) func badValueNamesItsVariable(variable: String, value: String) {
        var env = Self.minimal
        env[variable] = value
        expectError(env, naming: variable)
    }

    @Test(arguments: ["KAFKA_BOOTSTRAP_SERVERS", "SEEKER_LEADS_BASE_URL", "SEEKER_LEADS_TOKEN"])
    func missingRequiredVariable(variable: String) {
        var env = Self.minimal
        env[variable] = nil
        expectError(env, naming: variable)
    }

    @Test func clientCredentials() throws {
        var env = Self.minimal
        env["SEEKER_LEADS_TOKEN"] = nil
        env["SEEKER_LEADS_TOKEN_URL"] = "http://127.0.0.1:8081/oauth/token"
        env["SEEKER_LEADS_CLIENT_ID"] = "relay"
        env["SEEKER_LEADS_CLIENT_SECRET"] = "s3cr3t-value"
        let configuration = try RelayConfiguration.fromEnvironment(env)
        #expect(
            configuration.seekerLeadsAuthentication
                == .clientCredentials(
                    tokenURL: URL(string: "http://127.0.0.1:8081/oauth/token")!, clientID: "relay",
                    clientSecret: "s3cr3t-value", audience: "http://127.0.0.1:8081"))
        #expect(!configuration.description.contains("s3cr3t-value"))

        env["SEEKER_LEADS_AUDIENCE"] = "https://api.example.com"
        guard
            case .clientCredentials(_, _, _, let audience) = try RelayConfiguration.fromEnvironment(env)
                .seekerLeadsAuthentication
        else {
            Issue.record("expected client credentials")
            return
        }
        #expect(audience == "https://api.example.com")

        var incomplete = env
        incomplete["SEEKER_LEADS_CLIENT_SECRET"] = nil
        expectError(incomplete, naming: "SEEKER_LEADS_CLIENT_SECRET")
        var badTokenURL = env
        badTokenURL["SEEKER_LEADS_TOKEN_URL"] = "token-endpoint"
        expectError(badTokenURL, naming: "SEEKER_LEADS_TOKEN_URL")
        var both = env
        both["SEEKER_LEADS_TOKEN"] = "t"
        expectError(both, naming: "SEEKER_LEADS_TOKEN_URL")
    }

    @Test func secretsFromFiles() throws {
        try withTemporaryFile("from-file-token\n") { tokenPath in
            try withTemporaryFile("sasl-pass\n") { passwordPath in
                var env = Self.minimal
                env["SEEKER_LEADS_TOKEN"] = nil
                env["SEEKER_LEADS_TOKEN_FILE"] = tokenPath
                env["KAFKA_SASL_PASSWORD_FILE"] = passwordPath
                let configuration = try RelayConfiguration.fromEnvironment(env)
                #expect(configuration.seekerLeadsAuthentication == .staticToken("from-file-token"))
                #expect(configuration.kafkaProperties["sasl.password"] == "sasl-pass")
                #expect(!configuration.description.contains("sasl-pass"))
                #expect(!configuration.description.contains("from-file-token"))
            }
        }
        try withTemporaryFile("client-secret") { path in
            var env = Self.minimal
            env["SEEKER_LEADS_TOKEN"] = nil
            env["SEEKER_LEADS_TOKEN_URL"] = "https://auth.example.com/token"
            env["SEEKER_LEADS_CLIENT_ID_FILE"] = path
            env["SEEKER_LEADS_CLIENT_SECRET_FILE"] = path
            guard
                case .clientCredentials(_, let id, let secret, _) = try RelayConfiguration.fromEnvironment(env)
                    .seekerLeadsAuthentication
            else {
                Issue.record("expected client credentials")
                return
            }
            #expect(id == "client-secret" && secret == "client-secret")
        }
    }

    @Test func secretGivenTwiceOrUnreadable() throws {
        try withTemporaryFile("x") { path in
            var both = Self.minimal
            both["SEEKER_LEADS_TOKEN_FILE"] = path
            expectError(both, naming: "SEEKER_LEADS_TOKEN_FILE")
            var kafkaBoth = Self.minimal
            kafkaBoth["KAFKA_SASL_PASSWORD"] = "p"
            kafkaBoth["KAFKA_SASL_PASSWORD_FILE"] = path
            expectError(kafkaBoth, naming: "KAFKA_SASL_PASSWORD_FILE")
        }
        var missing = Self.minimal
        missing["SEEKER_LEADS_TOKEN"] = nil
        missing["SEEKER_LEADS_TOKEN_FILE"] = "/nonexistent/lead-relay/token"
        expectError(missing, naming: "SEEKER_LEADS_TOKEN_FILE")
        var missingKafka = Self.minimal
        missingKafka["KAFKA_SSL_KEY_PASSWORD_FILE"] = "/nonexistent/lead-relay/key-password"
        expectError(missingKafka, naming: "KAFKA_SSL_KEY_PASSWORD_FILE")
    }

    @Test func descriptionRedactsSecrets() throws {
        var env = Self.minimal
        env["SEEKER_LEADS_TOKEN"] = "very-secret-token"
        env["KAFKA_SASL_PASSWORD"] = "kafka-password-value"
        env["KAFKA_SASL_USERNAME"] = "relay-user"
        let description = try RelayConfiguration.fromEnvironment(env).description
        #expect(!description.contains("very-secret-token"))
        #expect(!description.contains("kafka-password-value"))
        #expect(description.contains("sasl.username=relay-user"))
        #expect(description.contains("sasl.password=[redacted]"))
    }

    @Test func errorLineQuotesTheValue() {
        var env = Self.minimal
        env["LEAD_RELAY_HTTP_PORT"] = "abc"
        #expect(throws: ConfigurationErrors.self) { try RelayConfiguration.fromEnvironment(env) }
        do {
            _ = try RelayConfiguration.fromEnvironment(env)
        } catch {
            #expect(
                error.lines == [#"lead-relay: LEAD_RELAY_HTTP_PORT: must be an integer from 0 to 65535, got "abc""#])
        }
    }

    /// Every problem at once, in reading order, secrets unquoted; a check that depends on an invalid value is skipped.
    @Test func everyErrorAtOnce() {
        let env = [
            "KAFKA_BOOTSTRAP_SERVERS": "x",
            "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/lead-relay/password",
            "SEEKER_LEADS_TOKEN": "has whitespace secret",
            "LEAD_RELAY_RETRY_BASE_MS": "0",
            "LEAD_RELAY_RETRY_MAX_MS": "100",
            "LEAD_RELAY_HTTP_PORT": "abc",
            "LEAD_RELAY_LOG_FORMAT": "xml",
        ]
        do {
            let configuration = try RelayConfiguration.fromEnvironment(env)
            Issue.record("expected errors, got \(configuration)")
        } catch {
            #expect(
                error.errors.map(\.variable) == [
                    "SEEKER_LEADS_BASE_URL", "LEAD_RELAY_RETRY_BASE_MS", "KAFKA_SASL_PASSWORD_FILE",
                    "KAFKA_BOOTSTRAP_SERVERS", "SEEKER_LEADS_TOKEN", "LEAD_RELAY_HTTP_PORT", "LEAD_RELAY_LOG_FORMAT",
                ])
            #expect(error.lines.allSatisfy { $0.hasPrefix("lead-relay: ") && !$0.contains("\n") })
            #expect(!error.description.contains("has whitespace secret"))
            #expect(error.description.split(separator: "\n").count == error.errors.count)
        }
    }

    /// Without the base, the maximum is only checked against its own range.
    @Test func retryMaximumIsCheckedAgainstAValidBaseOnly() {
        var env = Self.minimal
        env["LEAD_RELAY_RETRY_BASE_MS"] = "500"
        env["LEAD_RELAY_RETRY_MAX_MS"] = "100"
        expectError(env, naming: "LEAD_RELAY_RETRY_MAX_MS")
    }

    @Test(arguments: ["x", "localhost", "a:9092,b", "[::1]", "host:0", "host:65536", "[::1]:x"])
    func bootstrapServersNeedAPort(servers: String) {
        var env = Self.minimal
        env["KAFKA_BOOTSTRAP_SERVERS"] = servers
        expectError(env, naming: "KAFKA_BOOTSTRAP_SERVERS")
    }

    @Test(arguments: ["localhost:9092", "a:1,b:65535", "[::1]:9092", "SSL://broker.example.com:9093", "10.0.0.1:9092"])
    func bootstrapServersAccepted(servers: String) throws {
        var env = Self.minimal
        env["KAFKA_BOOTSTRAP_SERVERS"] = servers
        #expect(try RelayConfiguration.fromEnvironment(env).kafkaProperties["bootstrap.servers"] == servers)
    }

    /// The help table and the parsing agree: every variable in the table is read (a bad value is reported naming
    /// it), its default is the one applied, and every variable the parser names is in the table.
    @Test func variablesTableMatchesTheParsing() throws {
        let tabled = RelayConfiguration.variables.map(\.name).filter { $0 != "KAFKA_<NAME>" }
        let credentials = [
            "SEEKER_LEADS_TOKEN_URL": "http://127.0.0.1:8082/token", "SEEKER_LEADS_CLIENT_ID": "id",
            "SEEKER_LEADS_CLIENT_SECRET": "secret",
        ]
        for name in tabled where name != "KAFKA_BOOTSTRAP_SERVERS" && name != "SEEKER_LEADS_BASE_URL" {
            var env = Self.minimal
            if credentials[name] != nil || name == "SEEKER_LEADS_AUDIENCE" {
                env["SEEKER_LEADS_TOKEN"] = nil
                env.merge(credentials) { _, new in new }
            }
            // The client id and secret need only be non-empty.
            env[name] = name.hasPrefix("SEEKER_LEADS_CLIENT_") ? "" : "bad value\n"
            expectError(env, naming: name)
        }
        let baseline = try RelayConfiguration.fromEnvironment(Self.minimal).description
        // A default in words (a derived one, or "unset") is not a value to type.
        for variable in RelayConfiguration.variables
        where variable.name.hasPrefix("LEAD_RELAY_") && !(variable.defaultValue ?? "").contains(" ") {
            var env = Self.minimal
            let defaultValue = try #require(variable.defaultValue)
            env[variable.name] = defaultValue
            #expect(
                try RelayConfiguration.fromEnvironment(env).description == baseline,
                "the default of \(variable.name)")
        }
        let source = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("Sources/LeadRelay/RelayConfiguration.swift"),
            encoding: .utf8)
        let named = Set(
            source.matches(of: #/"((?:LEAD_RELAY|SEEKER_LEADS|KAFKA)_[A-Z_]+)"/#).map { String($0.1) }
                .filter { !$0.hasSuffix("_FILE") })
        #expect(named.subtracting(tabled).isEmpty, "read but not in the help: \(named.subtracting(tabled))")
    }
}
