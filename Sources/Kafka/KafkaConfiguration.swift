/// librdkafka properties (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md) shared by
/// consumers and producers. Typed accessors cover the common ones; `properties` is the escape hatch for the rest.
public struct KafkaConfiguration: Sendable {
    public var properties: [String: String]

    public init(properties: [String: String] = [:]) {
        self.properties = properties
    }

    /// Maps every `KAFKA_<NAME>` variable to the property `<name>` lower-cased with `_` turned into `.`:
    /// `KAFKA_BOOTSTRAP_SERVERS` → `bootstrap.servers`, `KAFKA_SASL_PASSWORD` → `sasl.password`.
    public static func fromEnvironment(_ environment: [String: String]) -> KafkaConfiguration {
        let prefix = "KAFKA_"
        var properties: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix(prefix) && name.count > prefix.count {
            let property = String(name.dropFirst(prefix.count).lowercased().map { $0 == "_" ? "." : $0 })
            properties[property] = value
        }
        return KafkaConfiguration(properties: properties)
    }

    public var bootstrapServers: String? {
        get { properties["bootstrap.servers"] ?? properties["metadata.broker.list"] }
        set { properties["bootstrap.servers"] = newValue }
    }

    public var clientID: String? {
        get { properties["client.id"] }
        set { properties["client.id"] = newValue }
    }

    public var sessionTimeoutMilliseconds: Int? {
        get { properties["session.timeout.ms"].flatMap { Int($0) } }
        set { properties["session.timeout.ms"] = newValue.map(String.init) }
    }

    /// The properties sorted by name, secret values replaced by `*****`: safe to log.
    public var redactedDescription: String {
        properties.keys.sorted().map { name in
            "\(name)=\(Self.isSecret(name) ? "*****" : properties[name] ?? "")"
        }.joined(separator: ", ")
    }

    /// Whether a property's value must never appear in logs: passwords, secrets, tokens, private keys and
    /// JAAS / OAUTHBEARER settings (which embed credentials).
    public static func isSecret(_ propertyName: String) -> Bool {
        let name = propertyName.lowercased()
        let markers = ["password", "secret", "token", "credential", "jaas", "oauthbearer.config", "key.pem", "private"]
        return markers.contains { name.contains($0) }
    }

    /// `defaults` with these properties applied on top, so callers can override any default.
    func applied(over defaults: [String: String]) -> [String: String] {
        defaults.merging(properties) { _, configured in configured }
    }
}
