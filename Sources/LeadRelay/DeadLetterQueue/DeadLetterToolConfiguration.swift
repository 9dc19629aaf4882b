import Kafka

/// What `lead-relay dlq` reads from its environment: the variables of `lead-relay run` that name the cluster and the
/// topics, and `LEAD_RELAY_MAX_REPLAYS`. The API's variables are not needed, and not checked.
public struct DeadLetterToolConfiguration: Sendable {
    public var kafkaConfiguration: KafkaConfiguration
    /// The relay's group: a replay's progress group is named after it.
    public var groupID: String
    public var inputTopic: String
    public var deadLetterTopic: String
    /// A dead letter replayed this many times already is refused.
    public var maxReplays: Int

    /// The relay's own entries for the variables shared with `lead-relay run`, then `LEAD_RELAY_MAX_REPLAYS`.
    public static let variables: [RelayConfiguration.Variable] =
        RelayConfiguration.variables.filter {
            [
                "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_<NAME>", "LEAD_RELAY_GROUP_ID", "LEAD_RELAY_INPUT_TOPIC",
                "LEAD_RELAY_DLQ_TOPIC",
            ].contains($0.name)
        } + [
            RelayConfiguration.Variable(
                name: "LEAD_RELAY_MAX_REPLAYS", defaultValue: "3",
                meaning: "a dead letter replayed this many times is refused")
        ]

    public static func fromEnvironment(_ env: [String: String]) throws(ConfigurationErrors)
        -> DeadLetterToolConfiguration
    {
        let reader = EnvironmentReader(env)
        let check = ConfigurationCollector()
        let kafka = reader.kafkaProperties(check)
        let configuration = DeadLetterToolConfiguration(
            kafkaConfiguration: KafkaConfiguration(properties: kafka.properties, secretProperties: kafka.readFromFiles),
            groupID: check("") { () throws(ConfigurationError) in
                try reader.groupID("LEAD_RELAY_GROUP_ID", default: "lead-relay")
            },
            inputTopic: check("") { () throws(ConfigurationError) in
                try reader.topic("LEAD_RELAY_INPUT_TOPIC", default: "leads.submitted")
            },
            deadLetterTopic: check("") { () throws(ConfigurationError) in
                try reader.topic("LEAD_RELAY_DLQ_TOPIC", default: "leads.dlq")
            },
            maxReplays: check(0) { () throws(ConfigurationError) in
                try reader.integer("LEAD_RELAY_MAX_REPLAYS", default: 3, in: 1...1000)
            })
        guard check.errors.isEmpty else { throw ConfigurationErrors(errors: check.errors) }
        return configuration
    }
}
