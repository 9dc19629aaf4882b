/// librdkafka properties (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md) shared by
/// consumers and producers, by name.
public struct KafkaConfiguration: Sendable {
    public var properties: [String: String]
    /// Properties whose values are secret although their names are not, such as values an operator read from a
    /// file (`KAFKA_SASL_USERNAME_FILE`): they are redacted like the ones `isSecret(_:)` names.
    public var secretProperties: Set<String>

    public init(properties: [String: String] = [:], secretProperties: Set<String> = []) {
        self.properties = properties
        self.secretProperties = secretProperties
    }

    static let environmentPrefix = "KAFKA_"

    /// The librdkafka property a `KAFKA_<NAME>` variable sets: `<name>` lower-cased with `_` turned into `.`,
    /// `KAFKA_BOOTSTRAP_SERVERS` → `bootstrap.servers`. `nil` for any other variable name.
    public static func propertyName(forEnvironmentVariable variable: String) -> String? {
        guard variable.hasPrefix(environmentPrefix), variable.count > environmentPrefix.count else { return nil }
        return String(variable.dropFirst(environmentPrefix.count).lowercased().map { $0 == "_" ? "." : $0 })
    }

    /// Maps every `KAFKA_<NAME>` variable to its property (`propertyName(forEnvironmentVariable:)`).
    public static func fromEnvironment(_ environment: [String: String]) -> KafkaConfiguration {
        var properties: [String: String] = [:]
        for (name, value) in environment {
            guard let property = propertyName(forEnvironmentVariable: name) else { continue }
            properties[property] = value
        }
        return KafkaConfiguration(properties: properties)
    }

    /// The properties sorted by name, secret values replaced by `*****`: safe to log.
    public var redactedDescription: String {
        properties.keys.sorted().map { name in
            "\(name)=\(isSecretValue(of: name) ? "*****" : properties[name] ?? "")"
        }.joined(separator: ", ")
    }

    /// Whether this configuration's value of `propertyName` must never be shown: secret by name or marked secret.
    public func isSecretValue(of propertyName: String) -> Bool {
        Self.isSecret(propertyName) || secretProperties.contains(propertyName)
    }

    /// Whether the value of a setting or field so named must never appear in a log line, an error message or a
    /// metric: the one test of what is secret, for Kafka properties and, through the relay's
    /// `RelayConfiguration.isSecret(variable:)` and its log scrubber, for environment variables and log metadata.
    ///
    /// librdkafka's credential-carrying properties are `sasl.password`, `sasl.oauthbearer.config`,
    /// `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.assertion.private.key.*`, `sasl.jaas.config` (Java
    /// clients' spelling, embeds a password), `sasl.kerberos.keytab`, `ssl.key.password`, `ssl.key.pem`,
    /// `ssl.keystore.password`; any other name holding one of the words below is treated the same, which also
    /// redacts harmless ones such as `sasl.oauthbearer.token.endpoint.url`. `authorization` is for HTTP headers.
    public static func isSecret(_ propertyName: String) -> Bool {
        let name = propertyName.lowercased()
        return secretMarkers.contains { name.contains($0) }
    }

    private static let secretMarkers = [
        "password", "passphrase", "secret", "token", "credential", "private", "jaas", "keytab", "key.pem",
        "oauthbearer.config", "authorization",
    ]

    /// `defaults` with these properties applied on top, so callers can override any default.
    func applied(over defaults: [String: String]) -> [String: String] {
        defaults.merging(properties) { _, configured in configured }
    }
}
