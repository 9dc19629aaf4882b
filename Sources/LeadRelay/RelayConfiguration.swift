import Foundation
import Kafka
import Logging
import RelayPrimitives
import SharedState

/// A configuration value that stops start-up: the pipeline prints `line` and exits with status 2.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    /// The environment variable at fault, exactly as the operator spells it (possibly with `_FILE`).
    public var variable: String
    public var message: String

    public init(variable: String, message: String) {
        self.variable = variable
        self.message = message
    }

    /// One line naming the variable, e.g. `lead-relay: LEAD_RELAY_HTTP_PORT: must be an integer from 0 to 65535, got "abc"`.
    public var line: String { "lead-relay: \(variable): \(message)" }
    public var description: String { line }
}

/// Every configuration problem found, in the order the variables are read: the pipeline prints one line each.
public struct ConfigurationErrors: Error, CustomStringConvertible, Sendable {
    public var errors: [ConfigurationError]

    public init(errors: [ConfigurationError]) { self.errors = errors }

    public var lines: [String] { errors.map(\.line) }
    public var description: String { lines.joined(separator: "\n") }
}

/// Runs checks, keeping every error instead of stopping at the first.
final class ConfigurationCollector {
    private(set) var errors: [ConfigurationError] = []

    /// The value `check` returns, or `fallback` after recording its error.
    func callAsFunction<Value>(_ fallback: Value, _ check: () throws(ConfigurationError) -> Value) -> Value {
        do {
            return try check()
        } catch {
            errors.append(error)
            return fallback
        }
    }
}

/// Everything `lead-relay run` reads from its environment, validated and converted to plain Swift values.
///
/// The pipeline maps these values onto the Kafka and SeekerLeads configuration types; this type knows only
/// Kafka's test of which settings are secret.
public struct RelayConfiguration: Sendable {
    public enum LogFormat: String, Sendable, CaseIterable {
        case json
        case text
    }

    /// How the API client authenticates: exactly one of the two is configured.
    public enum SeekerLeadsAuthentication: Sendable, Equatable {
        case staticToken(String)
        case clientCredentials(tokenURL: URL, clientID: String, clientSecret: String, audience: String)
    }

    /// librdkafka properties from every `KAFKA_<NAME>` variable, `bootstrap.servers` included.
    public var kafkaProperties: [String: String]
    /// The properties of `kafkaProperties` read from a `KAFKA_<NAME>_FILE`: secret whatever their name.
    public var kafkaPropertiesReadFromFiles: Set<String>
    public var groupID: String
    public var inputTopic: String
    public var resultsTopic: String
    public var deadLetterTopic: String
    public var eventType: String
    public var maxEventBytes: Int

    public var seekerLeadsBaseURL: URL
    public var seekerLeadsAuthentication: SeekerLeadsAuthentication
    public var seekerLeadsTimeout: Duration

    public var maxInFlight: Int
    public var rateLimit: Int
    public var rateWindow: Duration
    public var rateMargin: Duration
    public var retryBase: Duration
    public var retryMax: Duration
    /// `nil` retries transient failures forever (`LEAD_RELAY_RETRY_DEADLINE_SECONDS=0`).
    public var retryDeadline: Duration?
    /// How long after an ambiguous attempt its lead is looked up in the API's listing.
    public var reconcileAfter: Duration
    public var circuitThreshold: Int
    public var maxPendingRecords: Int

    public var httpHost: String
    public var httpPort: Int
    public var dedupeDatabasePath: String
    public var dedupeTTL: Duration
    /// The dedupe store and the API budget shared by every relay using it; nil for the embedded ones.
    public var databaseURL: DatabaseURL?
    /// Relays with the same database and key share one budget.
    public var budgetKey: String
    /// How long start-up waits for the database to answer.
    public var databaseConnectTimeout: Duration
    public var shutdownTimeout: Duration
    public var logLevel: Logger.Level
    public var logFormat: LogFormat

    /// Reads and validates the environment. Secrets may be given as `<NAME>_FILE`, the path of a file holding them.
    /// Every problem is reported at once, so that an operator fixes them in one go instead of one per start.
    public static func fromEnvironment(_ env: [String: String]) throws(ConfigurationErrors) -> RelayConfiguration {
        let reader = EnvironmentReader(env)
        let check = ConfigurationCollector()
        // The fallbacks stand in for a failed value so that the other checks still run; they never escape, since
        // any error is thrown below.
        let baseURL = check(URL(string: "http://invalid")!) { () throws(ConfigurationError) in
            try reader.httpURL("SEEKER_LEADS_BASE_URL")
        }
        let retryBaseMilliseconds = check(nil) { () throws(ConfigurationError) -> Int? in
            try reader.integer("LEAD_RELAY_RETRY_BASE_MS", default: 200, in: 1...3_600_000)
        }
        // The maximum is checked against the base only when the base itself is valid.
        let retryMaxMilliseconds = check(0) { () throws(ConfigurationError) in
            try reader.integer(
                "LEAD_RELAY_RETRY_MAX_MS", default: 30_000, in: (retryBaseMilliseconds ?? 1)...86_400_000)
        }
        let retryDeadlineSeconds = check(0) { () throws(ConfigurationError) in
            try reader.integer("LEAD_RELAY_RETRY_DEADLINE_SECONDS", default: 3600, in: 0...31_536_000)
        }
        let kafka = reader.kafkaProperties(check)
        let configuration = RelayConfiguration(
            kafkaProperties: kafka.properties,
            kafkaPropertiesReadFromFiles: kafka.readFromFiles,
            groupID: check("") { () throws(ConfigurationError) in
                try reader.groupID("LEAD_RELAY_GROUP_ID", default: "lead-relay")
            },
            inputTopic: check("") { () throws(ConfigurationError) in
                try reader.topic("LEAD_RELAY_INPUT_TOPIC", default: "leads.submitted")
            },
            resultsTopic: check("") { () throws(ConfigurationError) in
                try reader.topic("LEAD_RELAY_RESULTS_TOPIC", default: "leads.results")
            },
            deadLetterTopic: check("") { () throws(ConfigurationError) in
                try reader.topic("LEAD_RELAY_DLQ_TOPIC", default: "leads.dlq")
            },
            eventType: check("") { () throws(ConfigurationError) in
                try reader.nonEmptyLine("LEAD_RELAY_EVENT_TYPE", default: "lead.submitted")
            },
            maxEventBytes: check(0) { () throws(ConfigurationError) in try maxEventBytes(env) },
            seekerLeadsBaseURL: baseURL,
            seekerLeadsAuthentication: check(.staticToken("")) { () throws(ConfigurationError) in
                try reader.authentication(baseURL: baseURL)
            },
            seekerLeadsTimeout: .milliseconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("SEEKER_LEADS_TIMEOUT_MS", default: 10_000, in: 1...3_600_000)
                }),
            maxInFlight: check(0) { () throws(ConfigurationError) in
                try reader.integer("LEAD_RELAY_MAX_IN_FLIGHT", default: 10, in: 1...10_000)
            },
            rateLimit: check(0) { () throws(ConfigurationError) in
                try reader.integer("LEAD_RELAY_RATE_LIMIT", default: 10, in: 1...1_000_000)
            },
            rateWindow: .milliseconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("LEAD_RELAY_RATE_WINDOW_MS", default: 200, in: 1...3_600_000)
                }),
            rateMargin: .milliseconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("LEAD_RELAY_RATE_MARGIN_MS", default: 5, in: 0...60_000)
                }),
            retryBase: .milliseconds(retryBaseMilliseconds ?? 0),
            retryMax: .milliseconds(retryMaxMilliseconds),
            retryDeadline: retryDeadlineSeconds == 0 ? nil : .seconds(retryDeadlineSeconds),
            reconcileAfter: .seconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("LEAD_RELAY_RECONCILE_AFTER_SECONDS", default: 30, in: 0...86_400)
                }),
            circuitThreshold: check(0) { () throws(ConfigurationError) in
                try reader.integer("LEAD_RELAY_CIRCUIT_THRESHOLD", default: 5, in: 1...1_000_000)
            },
            maxPendingRecords: check(0) { () throws(ConfigurationError) in
                try reader.integer("LEAD_RELAY_MAX_PENDING_RECORDS", default: 500, in: 1...10_000_000)
            },
            httpHost: check("") { () throws(ConfigurationError) in
                try reader.host("LEAD_RELAY_HTTP_HOST", default: "0.0.0.0")
            },
            httpPort: check(0) { () throws(ConfigurationError) in
                try reader.integer("LEAD_RELAY_HTTP_PORT", default: 8080, in: 0...65_535)
            },
            dedupeDatabasePath: check("") { () throws(ConfigurationError) in
                try reader.nonEmptyLine("LEAD_RELAY_DEDUPE_DB", default: "lead-relay.sqlite")
            },
            dedupeTTL: .seconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("LEAD_RELAY_DEDUPE_TTL_HOURS", default: 168, in: 1...876_000)
                } * 3600),
            databaseURL: check(nil) { () throws(ConfigurationError) in try reader.databaseURL() },
            budgetKey: check("") { () throws(ConfigurationError) in
                try reader.nonEmptyLine(
                    "LEAD_RELAY_BUDGET_KEY",
                    default: (try? reader.value("SEEKER_LEADS_CLIENT_ID", fileAllowed: true)).flatMap { $0 }
                        ?? "default")
            },
            databaseConnectTimeout: .seconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("LEAD_RELAY_DATABASE_CONNECT_TIMEOUT_SECONDS", default: 30, in: 1...3600)
                }),
            shutdownTimeout: .seconds(
                check(0) { () throws(ConfigurationError) in
                    try reader.integer("LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS", default: 25, in: 0...86_400)
                }),
            logLevel: check(.info) { () throws(ConfigurationError) in
                try reader.choice(
                    "LEAD_RELAY_LOG_LEVEL", default: .info, choices: Logger.Level.allCases.map { ($0.rawValue, $0) })
            },
            logFormat: check(.json) { () throws(ConfigurationError) in
                try reader.choice(
                    "LEAD_RELAY_LOG_FORMAT", default: .json, choices: LogFormat.allCases.map { ($0.rawValue, $0) })
            }
        )
        guard check.errors.isEmpty else { throw ConfigurationErrors(errors: check.errors) }
        return configuration
    }

    /// A variable `fromEnvironment` reads, for `lead-relay run --help`.
    public struct Variable: Sendable {
        public var name: String
        /// As the operator would type it; `nil` for a required variable, a phrase for a derived default.
        public var defaultValue: String?
        public var meaning: String
    }

    /// Every variable `fromEnvironment` reads, with the default it applies: kept next to the parsing, and checked
    /// against it by the tests, so that the help cannot drift from it. A variable marked secret may also be given as
    /// `<NAME>_FILE`.
    public static let variables: [Variable] = [
        Variable(name: "KAFKA_BOOTSTRAP_SERVERS", defaultValue: nil, meaning: "Kafka brokers, host:port[,host:port]"),
        Variable(
            name: "KAFKA_<NAME>", defaultValue: "librdkafka's",
            meaning: "any librdkafka property, e.g. KAFKA_SASL_USERNAME sets sasl.username"),
        Variable(name: "SEEKER_LEADS_BASE_URL", defaultValue: nil, meaning: "the Seeker Leads API, an http(s) URL"),
        Variable(
            name: "SEEKER_LEADS_TOKEN", defaultValue: nil,
            meaning: "static API token; or else the three client-credentials variables below"),
        Variable(
            name: "SEEKER_LEADS_TOKEN_URL", defaultValue: nil, meaning: "OAuth token endpoint (client credentials)"),
        Variable(name: "SEEKER_LEADS_CLIENT_ID", defaultValue: nil, meaning: "OAuth client id (client credentials)"),
        Variable(
            name: "SEEKER_LEADS_CLIENT_SECRET", defaultValue: nil, meaning: "OAuth client secret (client credentials)"),
        Variable(
            name: "SEEKER_LEADS_AUDIENCE", defaultValue: "the base URL", meaning: "OAuth audience (client credentials)"),
        Variable(name: "SEEKER_LEADS_TIMEOUT_MS", defaultValue: "10000", meaning: "timeout of one API request"),
        Variable(name: "LEAD_RELAY_GROUP_ID", defaultValue: "lead-relay", meaning: "Kafka consumer group"),
        Variable(name: "LEAD_RELAY_INPUT_TOPIC", defaultValue: "leads.submitted", meaning: "topic of lead events"),
        Variable(name: "LEAD_RELAY_RESULTS_TOPIC", defaultValue: "leads.results", meaning: "topic of outcomes"),
        Variable(name: "LEAD_RELAY_DLQ_TOPIC", defaultValue: "leads.dlq", meaning: "topic of dead letters"),
        Variable(name: "LEAD_RELAY_EVENT_TYPE", defaultValue: "lead.submitted", meaning: "event type relayed"),
        Variable(name: "LEAD_RELAY_MAX_EVENT_BYTES", defaultValue: "65536", meaning: "largest event value accepted"),
        Variable(name: "LEAD_RELAY_MAX_IN_FLIGHT", defaultValue: "10", meaning: "API requests at once"),
        Variable(name: "LEAD_RELAY_RATE_LIMIT", defaultValue: "10", meaning: "API requests per rate window"),
        Variable(name: "LEAD_RELAY_RATE_WINDOW_MS", defaultValue: "200", meaning: "the rate window"),
        Variable(name: "LEAD_RELAY_RATE_MARGIN_MS", defaultValue: "5", meaning: "slack kept at each window's edge"),
        Variable(name: "LEAD_RELAY_RETRY_BASE_MS", defaultValue: "200", meaning: "first retry back-off"),
        Variable(name: "LEAD_RELAY_RETRY_MAX_MS", defaultValue: "30000", meaning: "longest back-off (>= the base)"),
        Variable(
            name: "LEAD_RELAY_RETRY_DEADLINE_SECONDS", defaultValue: "3600",
            meaning: "retry a lead this long, then dead-letter it (0: forever)"),
        Variable(
            name: "LEAD_RELAY_RECONCILE_AFTER_SECONDS", defaultValue: "30",
            meaning: "look a lead in doubt up in the API's listing this long after its ambiguous attempt"),
        Variable(
            name: "LEAD_RELAY_CIRCUIT_THRESHOLD", defaultValue: "5",
            meaning: "consecutive transient API failures that open the circuit"),
        Variable(
            name: "LEAD_RELAY_MAX_PENDING_RECORDS", defaultValue: "500",
            meaning: "records held before fetching pauses"),
        Variable(name: "LEAD_RELAY_HTTP_HOST", defaultValue: "0.0.0.0", meaning: "address of /health and /metrics"),
        Variable(name: "LEAD_RELAY_HTTP_PORT", defaultValue: "8080", meaning: "port of /health and /metrics (0: any)"),
        Variable(name: "LEAD_RELAY_DEDUPE_DB", defaultValue: "lead-relay.sqlite", meaning: "dedupe store file"),
        Variable(name: "LEAD_RELAY_DEDUPE_TTL_HOURS", defaultValue: "168", meaning: "how long a lead's key is kept"),
        Variable(
            name: "LEAD_RELAY_DATABASE_URL", defaultValue: "unset: SQLite and a budget of its own",
            meaning: "postgres://user:password@host:port/db?sslmode=...: dedupe store and budget shared by all relays"),
        Variable(
            name: "LEAD_RELAY_BUDGET_KEY", defaultValue: "the OAuth client id, else default",
            meaning: "relays with the same database and key share one API budget"),
        Variable(
            name: "LEAD_RELAY_DATABASE_CONNECT_TIMEOUT_SECONDS", defaultValue: "30",
            meaning: "how long start-up waits for the database"),
        Variable(
            name: "LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS", defaultValue: "25",
            meaning: "time to finish held records on shutdown"),
        Variable(
            name: "LEAD_RELAY_LOG_LEVEL", defaultValue: "info",
            meaning: Logger.Level.allCases.map(\.rawValue).joined(separator: "|")),
        Variable(
            name: "LEAD_RELAY_LOG_FORMAT", defaultValue: "json",
            meaning: LogFormat.allCases.map(\.rawValue).joined(separator: "|")),
    ]

    /// The variables as a help text: per variable, its name and default (or "required"), then its meaning indented,
    /// each line short enough that a terminal of 80 columns does not wrap it.
    public static var variablesHelp: String { help(for: variables) }

    /// `variables` as `variablesHelp` shows them: also for `lead-relay dlq --help`.
    public static func help(for variables: [Variable]) -> String {
        variables.map { variable in
            "\(variable.name) (\(variable.defaultValue.map { "default: \($0)" } ?? "required"))\n  \(variable.meaning)"
        }.joined(separator: "\n")
    }

    /// `LEAD_RELAY_MAX_EVENT_BYTES`, the largest event value the decoder accepts (default 64 KiB, at most 16 MiB):
    /// `lead-relay run` and `lead-relay validate` read it alike.
    public static func maxEventBytes(_ env: [String: String]) throws(ConfigurationError) -> Int {
        try EnvironmentReader(env).integer("LEAD_RELAY_MAX_EVENT_BYTES", default: 65_536, in: 1...16_777_216)
    }

    /// The API's retries and the circuit breakers' probes back off alike (`LEAD_RELAY_RETRY_BASE_MS`,
    /// `LEAD_RELAY_RETRY_MAX_MS`).
    public var retryBackoff: Backoff { Backoff(base: retryBase, max: retryMax) }

    /// The Kafka settings of `kafkaProperties`, with the values read from files marked secret.
    public var kafkaConfiguration: KafkaConfiguration {
        KafkaConfiguration(properties: kafkaProperties, secretProperties: kafkaPropertiesReadFromFiles)
    }

    /// Whether the value of the environment variable `name` is secret, so that no log line, error message or
    /// metric may show it: the API's token and client secret, every `KAFKA_<NAME>` whose property
    /// `KafkaConfiguration.isSecret(_:)` names, and any `<NAME>_FILE`, whose file's contents are secret whatever
    /// they configure.
    public static func isSecret(variable name: String) -> Bool {
        if name.hasSuffix("_FILE") || name == "SEEKER_LEADS_TOKEN" || name == "SEEKER_LEADS_CLIENT_SECRET"
            || name == "LEAD_RELAY_DATABASE_URL"
        {
            return true
        }
        return KafkaConfiguration.propertyName(forEnvironmentVariable: name).map(KafkaConfiguration.isSecret) ?? false
    }
}

extension RelayConfiguration: CustomStringConvertible {
    /// Every value as a name and its text, with secrets replaced by `[redacted]`: safe to log and to show.
    public var redactedFields: [(name: String, value: String)] {
        let auth =
            switch seekerLeadsAuthentication {
            case .staticToken: "static-token([redacted])"
            case .clientCredentials(let tokenURL, _, _, let audience):
                "client-credentials(tokenURL: \(tokenURL.absoluteString), clientID: [redacted], "
                    + "clientSecret: [redacted], audience: \(audience))"
            }
        // The budget key defaults to the client id, which is shown nowhere.
        var budgetKeyShown = budgetKey
        if case .clientCredentials(_, let clientID, _, _) = seekerLeadsAuthentication, clientID == budgetKey {
            budgetKeyShown = "the client id"
        }
        let kafkaConfiguration = kafkaConfiguration
        let kafka = kafkaProperties.sorted { $0.key < $1.key }.map { key, value in
            "\(key)=\(kafkaConfiguration.isSecretValue(of: key) ? "[redacted]" : value)"
        }
        return [
            ("kafka", "[\(kafka.joined(separator: ", "))]"), ("groupID", groupID), ("inputTopic", inputTopic),
            ("resultsTopic", resultsTopic), ("deadLetterTopic", deadLetterTopic), ("eventType", eventType),
            ("maxEventBytes", "\(maxEventBytes)"), ("seekerLeadsBaseURL", seekerLeadsBaseURL.absoluteString),
            ("auth", auth), ("seekerLeadsTimeout", "\(seekerLeadsTimeout)"), ("maxInFlight", "\(maxInFlight)"),
            ("rateLimit", "\(rateLimit)"), ("rateWindow", "\(rateWindow)"), ("rateMargin", "\(rateMargin)"),
            ("retryBase", "\(retryBase)"), ("retryMax", "\(retryMax)"),
            ("retryDeadline", retryDeadline.map { "\($0)" } ?? "forever"), ("reconcileAfter", "\(reconcileAfter)"),
            ("circuitThreshold", "\(circuitThreshold)"), ("maxPendingRecords", "\(maxPendingRecords)"),
            ("http", "\(httpHost):\(httpPort)"), ("dedupeDatabasePath", dedupeDatabasePath),
            ("dedupeTTL", "\(dedupeTTL)"), ("database", databaseURL.map { "\($0)" } ?? "none"),
            ("budgetKey", budgetKeyShown), ("databaseConnectTimeout", "\(databaseConnectTimeout)"),
            ("shutdownTimeout", "\(shutdownTimeout)"), ("logLevel", "\(logLevel)"), ("logFormat", logFormat.rawValue),
        ]
    }

    /// Every value, with secrets replaced by `[redacted]`: safe to log.
    public var description: String {
        "RelayConfiguration(" + redactedFields.map { "\($0.name): \($0.value)" }.joined(separator: ", ") + ")"
    }
}

/// Reads single variables, each failure naming its variable.
struct EnvironmentReader {
    private let env: [String: String]

    init(_ env: [String: String]) { self.env = env }

    /// The raw value of `name`, or of the file named by `<name>_FILE`; `nil` when neither is set.
    func value(_ name: String, fileAllowed: Bool = false) throws(ConfigurationError) -> String? {
        let fileVariable = name + "_FILE"
        guard fileAllowed, let path = env[fileVariable] else { return env[name] }
        if env[name] != nil {
            throw ConfigurationError(
                variable: fileVariable, message: "give either \(name) or \(fileVariable), not both")
        }
        guard !path.isEmpty else { throw ConfigurationError(variable: fileVariable, message: "must be a file path") }
        let contents: String
        do {
            contents = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(variable: fileVariable, message: "cannot read the file \(quoted(path))")
        }
        var trimmed = Substring(contents)
        while let last = trimmed.last, last == "\n" || last == "\r" { trimmed.removeLast() }
        return String(trimmed)
    }

    /// `, got "<value>"` for an error line, or nothing when the value is secret (`RelayConfiguration.isSecret`).
    private func shown(_ raw: String, of variable: String) -> String {
        RelayConfiguration.isSecret(variable: variable) ? "" : ", got \(quoted(raw))"
    }

    func required(_ name: String, fileAllowed: Bool = false) throws(ConfigurationError) -> String {
        guard let value = try value(name, fileAllowed: fileAllowed) else {
            throw ConfigurationError(variable: name, message: fileAllowed ? "required (or \(name)_FILE)" : "required")
        }
        guard !value.isEmpty else { throw ConfigurationError(variable: name, message: "must not be empty") }
        return value
    }

    func integer(_ name: String, default defaultValue: Int, in range: ClosedRange<Int>) throws(ConfigurationError)
        -> Int
    {
        guard let raw = env[name] else { return defaultValue }
        guard let value = Int(raw), range.contains(value) else {
            throw ConfigurationError(
                variable: name,
                message: "must be an integer from \(range.lowerBound) to \(range.upperBound)\(shown(raw, of: name))")
        }
        return value
    }

    func choice<Value>(_ name: String, default defaultValue: Value, choices: [(String, Value)])
        throws(ConfigurationError)
        -> Value
    {
        guard let raw = env[name] else { return defaultValue }
        guard let match = choices.first(where: { $0.0 == raw.lowercased() }) else {
            let names = choices.map(\.0).joined(separator: "|")
            throw ConfigurationError(variable: name, message: "must be one of \(names)\(shown(raw, of: name))")
        }
        return match.1
    }

    func nonEmptyLine(_ name: String, default defaultValue: String) throws(ConfigurationError) -> String {
        guard let raw = env[name] else { return defaultValue }
        guard !raw.isEmpty, !raw.contains(where: \.isNewline) else {
            throw ConfigurationError(variable: name, message: "must be a non-empty single line\(shown(raw, of: name))")
        }
        return raw
    }

    /// Kafka's legal topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
    func topic(_ name: String, default defaultValue: String) throws(ConfigurationError) -> String {
        guard let raw = env[name] else { return defaultValue }
        guard (1...249).contains(raw.utf8.count), raw != ".", raw != "..",
            raw.utf8.allSatisfy({ Self.isTopicByte($0) })
        else {
            throw ConfigurationError(
                variable: name,
                message: "must be a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)\(shown(raw, of: name))")
        }
        return raw
    }

    func groupID(_ name: String, default defaultValue: String) throws(ConfigurationError) -> String {
        guard let raw = env[name] else { return defaultValue }
        guard !raw.isEmpty, raw.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
            throw ConfigurationError(
                variable: name, message: "must be a non-empty group id without spaces\(shown(raw, of: name))")
        }
        return raw
    }

    func host(_ name: String, default defaultValue: String) throws(ConfigurationError) -> String {
        guard let raw = env[name] else { return defaultValue }
        guard Self.isHost(raw) else {
            throw ConfigurationError(
                variable: name, message: "must be a host name or IP address\(shown(raw, of: name))")
        }
        return raw
    }

    func httpURL(_ name: String) throws(ConfigurationError) -> URL {
        let raw = try required(name)
        guard let url = URL(string: raw), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.user == nil, url.query == nil, url.fragment == nil
        else {
            throw ConfigurationError(
                variable: name, message: "must be an absolute http or https URL\(shown(raw, of: name))")
        }
        return url
    }

    func authentication(baseURL: URL) throws(ConfigurationError) -> RelayConfiguration.SeekerLeadsAuthentication {
        let token = try value("SEEKER_LEADS_TOKEN", fileAllowed: true)
        let credentialNames = ["SEEKER_LEADS_TOKEN_URL", "SEEKER_LEADS_CLIENT_ID", "SEEKER_LEADS_CLIENT_SECRET"]
        let credentialsGiven = credentialNames.contains { env[$0] != nil || env[$0 + "_FILE"] != nil }
        if let token {
            if let extra = credentialNames.first(where: { env[$0] != nil || env[$0 + "_FILE"] != nil }) {
                throw ConfigurationError(
                    variable: extra, message: "give either SEEKER_LEADS_TOKEN or client credentials, not both")
            }
            guard !token.isEmpty, !token.contains(where: { $0.isWhitespace }) else {
                throw ConfigurationError(
                    variable: env["SEEKER_LEADS_TOKEN_FILE"] != nil ? "SEEKER_LEADS_TOKEN_FILE" : "SEEKER_LEADS_TOKEN",
                    message: "must be a non-empty token without whitespace")
            }
            return .staticToken(token)
        }
        guard credentialsGiven else {
            throw ConfigurationError(
                variable: "SEEKER_LEADS_TOKEN",
                message: "required: set SEEKER_LEADS_TOKEN, or SEEKER_LEADS_TOKEN_URL with "
                    + "SEEKER_LEADS_CLIENT_ID and SEEKER_LEADS_CLIENT_SECRET")
        }
        let tokenURL = try httpURL("SEEKER_LEADS_TOKEN_URL")
        let clientID = try required("SEEKER_LEADS_CLIENT_ID", fileAllowed: true)
        let clientSecret = try required("SEEKER_LEADS_CLIENT_SECRET", fileAllowed: true)
        let audience = try nonEmptyLine("SEEKER_LEADS_AUDIENCE", default: baseURL.absoluteString)
        return .clientCredentials(
            tokenURL: tokenURL, clientID: clientID, clientSecret: clientSecret, audience: audience)
    }

    /// `LEAD_RELAY_DATABASE_URL` (or its `_FILE`); the error never shows the URL, which holds a password.
    func databaseURL() throws(ConfigurationError) -> DatabaseURL? {
        let name = "LEAD_RELAY_DATABASE_URL"
        guard let raw = try value(name, fileAllowed: true) else { return nil }
        let variable = env[name + "_FILE"] != nil ? name + "_FILE" : name
        do {
            return try DatabaseURL(raw.trimmingCharacters(in: .whitespaces))
        } catch {
            throw ConfigurationError(variable: variable, message: error.description)
        }
    }

    /// Each `KAFKA_<NAME>` sets the property `KafkaConfiguration.propertyName(forEnvironmentVariable:)` names;
    /// `KAFKA_<NAME>_FILE` supplies `<NAME>`'s value, and marks it read from a file. Each variable's error goes to
    /// `check`.
    func kafkaProperties(_ check: ConfigurationCollector) -> (properties: [String: String], readFromFiles: Set<String>)
    {
        var names = Set<String>()
        for variable in env.keys {
            let name = variable.hasSuffix("_FILE") ? String(variable.dropLast("_FILE".count)) : variable
            if KafkaConfiguration.propertyName(forEnvironmentVariable: name) != nil { names.insert(name) }
        }
        var properties: [String: String] = [:]
        var readFromFiles = Set<String>()
        for variable in names.sorted() where variable != "KAFKA_BOOTSTRAP_SERVERS" {
            guard
                let value = check(nil, { () throws(ConfigurationError) in try value(variable, fileAllowed: true) }),
                let property = KafkaConfiguration.propertyName(forEnvironmentVariable: variable)
            else { continue }
            properties[property] = value
            if env[variable + "_FILE"] != nil { readFromFiles.insert(property) }
        }
        if let servers = check(nil, { () throws(ConfigurationError) in try bootstrapServers() }) {
            properties["bootstrap.servers"] = servers
            if env["KAFKA_BOOTSTRAP_SERVERS_FILE"] != nil { readFromFiles.insert("bootstrap.servers") }
        }
        return (properties, readFromFiles)
    }

    private func bootstrapServers() throws(ConfigurationError) -> String {
        let servers = try required("KAFKA_BOOTSTRAP_SERVERS", fileAllowed: true)
        guard Self.isBootstrapList(servers) else {
            let variable =
                env["KAFKA_BOOTSTRAP_SERVERS_FILE"] != nil ? "KAFKA_BOOTSTRAP_SERVERS_FILE" : "KAFKA_BOOTSTRAP_SERVERS"
            throw ConfigurationError(
                variable: variable,
                message: "must be a comma-separated list of host:port (port 1-65535)\(shown(servers, of: variable))")
        }
        return servers
    }

    private static func isTopicByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// A DNS name, an IPv4 address, or an IPv6 address (bare or in brackets).
    static func isHost(_ host: String) -> Bool {
        if host.hasPrefix("["), host.hasSuffix("]") { return isIPv6(String(host.dropFirst().dropLast())) }
        if host.contains(":") { return isIPv6(host) }
        guard (1...253).contains(host.utf8.count) else { return false }
        return host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.utf8.allSatisfy { byte in
                    switch byte {
                    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                        UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                        true
                    default: false
                    }
                }
        }
    }

    private static func isIPv6(_ address: String) -> Bool {
        var storage = in6_addr()
        return inet_pton(AF_INET6, address, &storage) == 1
    }

    /// librdkafka's `bootstrap.servers`: `[protocol://]host:port` entries separated by commas. librdkafka would take
    /// a missing port as 9092, but a list without one is far more often a mistake (`KAFKA_BOOTSTRAP_SERVERS=x`).
    private static func isBootstrapList(_ servers: String) -> Bool {
        servers.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { rawEntry in
            var entry = Substring(rawEntry.trimmingCharacters(in: .whitespaces))
            if let schemeEnd = entry.range(of: "://") { entry = entry[schemeEnd.upperBound...] }
            let host: Substring
            if entry.hasPrefix("["), let close = entry.firstIndex(of: "]") {
                host = entry[...close]
                entry = entry[entry.index(after: close)...]
            } else if let colon = entry.lastIndex(of: ":") {
                host = entry[..<colon]
                entry = entry[colon...]
            } else {
                host = entry
                entry = ""
            }
            guard isHost(String(host)) else { return false }
            guard entry.first == ":", let port = Int(entry.dropFirst()) else { return false }
            return (1...65_535).contains(port)
        }
    }
}

/// A value as the operator typed it, for error lines: its first 200 characters as a JSON string, so that control
/// characters cannot break the line or the terminal.
func quoted(_ raw: String) -> String {
    JSONString.quoted(String(String.UnicodeScalarView(raw.unicodeScalars.prefix(200))))
}
