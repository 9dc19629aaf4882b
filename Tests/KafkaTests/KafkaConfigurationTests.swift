import Kafka
import Testing

@Suite struct KafkaConfigurationTests {
    @Test func mapsEveryKafkaVariableToALibrdkafkaProperty() {
        let configuration = KafkaConfiguration.fromEnvironment([
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,127.0.0.1:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISMS": "PLAIN",
            "KAFKA_SASL_PASSWORD": "hunter2",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_": "ignored",
            "KAFKAESQUE": "ignored",
            "PATH": "/usr/bin",
        ])
        #expect(
            configuration.properties == [
                "bootstrap.servers": "127.0.0.1:9092,127.0.0.1:9093",
                "security.protocol": "SASL_SSL",
                "sasl.mechanisms": "PLAIN",
                "sasl.password": "hunter2",
                "session.timeout.ms": "6000",
            ]
        )
    }

    @Test func redactsSecretValues() {
        let configuration = KafkaConfiguration(properties: [
            "sasl.password": "hunter2",
            "ssl.key.password": "keypass",
            "sasl.oauthbearer.client.secret": "oauth-secret",
            "sasl.jaas.config": "user pass",
            "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
            "sasl.username": "relay",
            "bootstrap.servers": "b:9092",
        ])
        let description = configuration.redactedDescription
        for secret in ["hunter2", "keypass", "oauth-secret", "user pass", "BEGIN PRIVATE KEY"] {
            #expect(!description.contains(secret))
        }
        #expect(
            description
                == "bootstrap.servers=b:9092, sasl.jaas.config=*****, sasl.oauthbearer.client.secret=*****, "
                + "sasl.password=*****, sasl.username=relay, ssl.key.password=*****, ssl.key.pem=*****"
        )
    }

    @Test func rejectsAnUnknownPropertyByName() {
        let configuration = KafkaConfiguration(properties: ["no.such.property": "1"])
        let error = #expect(throws: KafkaError.self) {
            _ = try KafkaProducer(configuration: configuration, logger: testLogger)
        }
        #expect(error?.message.contains("no.such.property") == true)
    }

    @Test func aRefusedValueMarkedSecretIsNotQuoted() {
        let configuration = KafkaConfiguration(
            properties: ["session.timeout.ms": "MARK-from-a-file"], secretProperties: ["session.timeout.ms"])
        let error = #expect(throws: KafkaError.self) {
            _ = try KafkaProducer(configuration: configuration, logger: testLogger)
        }
        #expect(error?.message.contains("session.timeout.ms") == true)
        #expect(error?.message.contains("MARK") == false)
    }
}
