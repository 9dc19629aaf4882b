import Foundation
import Kafka
import TestSupport
import Testing

@testable import LeadRelay

/// One test of what is secret (`KafkaConfiguration.isSecret`), and no secret in what the relay prints.
@Suite struct SecretClassificationTests {
    /// librdkafka's properties that carry a credential.
    static let secretProperties = [
        "sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "ssl.key.password",
        "ssl.key.pem", "ssl.keystore.password", "sasl.kerberos.keytab", "sasl.jaas.config",
        "sasl.oauthbearer.assertion.private.key.pem", "sasl.oauthbearer.assertion.private.key.passphrase",
        "SASL.PASSWORD",
    ]

    @Test(arguments: secretProperties) func credentialPropertiesAreSecret(_ property: String) {
        #expect(KafkaConfiguration.isSecret(property))
    }

    @Test(arguments: [
        "bootstrap.servers", "security.protocol", "sasl.mechanisms", "sasl.username", "ssl.key.location",
        "ssl.ca.location", "session.timeout.ms", "client.id",
    ])
    func plainPropertiesAreNot(_ property: String) {
        #expect(!KafkaConfiguration.isSecret(property))
    }

    @Test(arguments: [
        "SEEKER_LEADS_TOKEN", "SEEKER_LEADS_CLIENT_SECRET", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_OAUTHBEARER_CONFIG",
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SSL_KEY_PEM",
        "KAFKA_SSL_KEYSTORE_PASSWORD", "KAFKA_SASL_KERBEROS_KEYTAB", "KAFKA_SASL_JAAS_CONFIG",
        "SEEKER_LEADS_TOKEN_FILE", "SEEKER_LEADS_CLIENT_ID_FILE", "KAFKA_SASL_USERNAME_FILE",
        "KAFKA_BOOTSTRAP_SERVERS_FILE",
    ])
    func secretVariables(_ variable: String) {
        #expect(RelayConfiguration.isSecret(variable: variable))
    }

    @Test(arguments: [
        "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SASL_USERNAME", "KAFKA_SECURITY_PROTOCOL", "SEEKER_LEADS_BASE_URL",
        "SEEKER_LEADS_TOKEN_URL", "SEEKER_LEADS_CLIENT_ID", "LEAD_RELAY_HTTP_PORT", "KAFKA_", "PATH",
    ])
    func plainVariables(_ variable: String) {
        #expect(!RelayConfiguration.isSecret(variable: variable))
    }

    @Test(arguments: ["accessToken", "Authorization", "client_secret", "kafkaPassword", "sasl.oauthbearer.config"])
    func logMetadataKeysUseTheSameTest(_ key: String) {
        #expect(LogScrubber.isCredentialKey(key))
        #expect(KafkaConfiguration.isSecret(key))
    }

    /// Every secret variable of `lead-relay run`, set directly, each to a value of its own.
    static let secretKafkaVariables = [
        "KAFKA_SASL_PASSWORD", "KAFKA_SASL_OAUTHBEARER_CONFIG", "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SSL_KEY_PEM", "KAFKA_SSL_KEYSTORE_PASSWORD", "KAFKA_SASL_KERBEROS_KEYTAB",
        "KAFKA_SASL_JAAS_CONFIG",
    ]

    private static func mark(_ index: Int) -> String { "MARK-xyz-\(index)" }

    /// Each of `contents` in a file of its own, ending in a newline as editors write them.
    private func withFiles(_ contents: [String], _ body: ([String]) throws -> Void) throws {
        let scratch = try ScratchDirectory()
        try body(try contents.enumerated().map { index, text in try scratch.write(text + "\n", named: "\(index)") })
    }

    @Test func descriptionWithAStaticTokenShowsNoSecret() throws {
        var env = ["KAFKA_BOOTSTRAP_SERVERS": "localhost:9092", "SEEKER_LEADS_BASE_URL": "http://127.0.0.1:8081"]
        for (index, variable) in Self.secretKafkaVariables.enumerated() { env[variable] = Self.mark(index) }
        let fileMarks = (100..<103).map(Self.mark)
        try withFiles(fileMarks) { paths in
            env["SEEKER_LEADS_TOKEN_FILE"] = paths[0]
            env["KAFKA_SASL_USERNAME_FILE"] = paths[1]
            env["KAFKA_CLIENT_ID_FILE"] = paths[2]
            let configuration = try RelayConfiguration.fromEnvironment(env)
            #expect(configuration.kafkaProperties["sasl.username"] == fileMarks[1])
            let description = configuration.description
            let kafkaDescription = configuration.kafkaConfiguration.redactedDescription
            for mark in Self.secretKafkaVariables.indices.map(Self.mark) + fileMarks {
                #expect(!description.contains(mark), "\(mark) in \(description)")
                #expect(!kafkaDescription.contains(mark), "\(mark) in \(kafkaDescription)")
            }
            #expect(description.contains("ssl.key.pem=[redacted]"))
            #expect(description.contains("sasl.username=[redacted]"))
            #expect(description.contains("bootstrap.servers=localhost:9092"))
        }
    }

    @Test func descriptionWithClientCredentialsShowsNoSecret() throws {
        let env = [
            "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092", "SEEKER_LEADS_BASE_URL": "http://127.0.0.1:8081",
            "SEEKER_LEADS_TOKEN_URL": "http://127.0.0.1:8081/oauth/token", "SEEKER_LEADS_CLIENT_ID": Self.mark(1),
            "SEEKER_LEADS_CLIENT_SECRET": Self.mark(2),
        ]
        let description = try RelayConfiguration.fromEnvironment(env).description
        #expect(!description.contains(Self.mark(1)))
        #expect(!description.contains(Self.mark(2)))
        try withFiles([Self.mark(3)]) { paths in
            var fromFile = env
            fromFile["SEEKER_LEADS_CLIENT_SECRET"] = nil
            fromFile["SEEKER_LEADS_CLIENT_SECRET_FILE"] = paths[0]
            let description = try RelayConfiguration.fromEnvironment(fromFile).description
            #expect(!description.contains(Self.mark(3)))
        }
    }

    @Test func errorLinesShowNoValueReadFromAFile() throws {
        try withFiles([Self.mark(7) + " is not a broker list"]) { paths in
            let env = [
                "KAFKA_BOOTSTRAP_SERVERS_FILE": paths[0], "SEEKER_LEADS_BASE_URL": "http://127.0.0.1:8081",
                "SEEKER_LEADS_TOKEN": "t0ken",
            ]
            #expect {
                try RelayConfiguration.fromEnvironment(env)
            } throws: { error in
                guard let errors = error as? ConfigurationErrors else { return false }
                return errors.errors.map(\.variable) == ["KAFKA_BOOTSTRAP_SERVERS_FILE"]
                    && !errors.description.contains(Self.mark(7))
            }
        }
    }
}
