import Foundation
import Kafka
import LeadRelayDemo
import TestSupport
import Testing

extension EndToEnd {
    /// Every secret variable set to a value of its own, at the debug log level: none of the values appears on the
    /// relay's standard output or error, through start-up, a few leads and a SIGTERM shutdown.
    @Suite struct Secrets {
        enum Authentication: String, CaseIterable, Sendable {
            case staticTokenFromFile
            case clientCredentials
        }

        /// The secret properties librdkafka accepts on a PLAINTEXT client, where it never uses them.
        static let acceptedKafkaSecrets = [
            "KAFKA_SASL_PASSWORD", "KAFKA_SASL_OAUTHBEARER_CONFIG", "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SSL_KEY_PEM",
            "KAFKA_SSL_KEYSTORE_PASSWORD", "KAFKA_SASL_KERBEROS_KEYTAB",
        ]

        /// librdkafka refuses these (this build has no OIDC; JAAS is Java's): the relay cannot start with them.
        static let refusedKafkaSecrets = ["KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "KAFKA_SASL_JAAS_CONFIG"]

        static func mark(_ name: String) -> String { "MARK-\(UUID().uuidString.prefix(8))-\(name)" }

        @Test(arguments: Authentication.allCases)
        func noSecretReachesTheRelaysOutput(_ authentication: Authentication) async throws {
            let scratch = try ScratchDirectory()
            let kafka = try await KafkaDevProcess(scratch: scratch)
            let clientSecret = Self.mark("client-secret")
            let simulator = try await SimulatorProcess(
                scratch: scratch, arguments: ["--client-id", "relay-e2e", "--client-secret", clientSecret])
            let producer = try TestProducer(bootstrapServers: kafka.bootstrapServers)
            let samples = distinctValidLeads(5, namespace: uniqueName("secrets"), seed: 23)
            _ = try await producer.produce(samples)

            var environment = RelayEnvironment(
                kafka: kafka.bootstrapServers, simulator: simulator, groupID: uniqueName("relay"),
                dedupeDatabase: scratch.path("dedupe.sqlite"))
            environment["LEAD_RELAY_LOG_LEVEL"] = "debug"
            var marks: [String] = []
            for variable in Self.acceptedKafkaSecrets {
                let mark = Self.mark(variable)
                environment[variable] = mark
                marks.append(mark)
            }
            let usernameMark = Self.mark("KAFKA_SASL_USERNAME_FILE")
            environment["KAFKA_SASL_USERNAME_FILE"] = try scratch.write(usernameMark + "\n", named: "sasl-username")
            marks.append(usernameMark)
            environment["SEEKER_LEADS_TOKEN"] = nil
            switch authentication {
            case .staticTokenFromFile:
                environment["SEEKER_LEADS_TOKEN_FILE"] = try scratch.write(simulator.token + "\n", named: "token")
                marks.append(simulator.token)
            case .clientCredentials:
                environment["SEEKER_LEADS_TOKEN_URL"] = simulator.baseURL + "/oauth/token"
                environment["SEEKER_LEADS_CLIENT_ID"] = "relay-e2e"
                environment["SEEKER_LEADS_CLIENT_SECRET"] = clientSecret
                marks.append(clientSecret)
            }

            let relay = try await RelayProcess(environment: environment.variables, scratch: scratch)
            try await waitUntil("an outcome for every record", timeout: .seconds(120)) {
                try await relay.metrics().value("lead_relay_outcomes_total") >= Double(samples.count)
            }
            #expect(try await simulator.storedLeads().count == samples.count)
            #expect(try await relay.terminate() == .exited(0))
            await producer.close()

            let output = relay.process.stdout.joined(separator: "\n") + relay.process.stderr
            #expect(output.contains("\"level\":\"debug\""), "the relay logged nothing at the debug level")
            for mark in marks {
                #expect(!output.contains(mark), "\(mark) appears in the relay's output")
            }
        }

        @Test(arguments: refusedKafkaSecrets)
        func aRefusedSecretPropertyStopsStartUpWithoutShowingItsValue(_ variable: String) async throws {
            let scratch = try ScratchDirectory()
            var environment = EndToEndConfigurationTests.validEnvironment(scratch)
            environment["LEAD_RELAY_LOG_LEVEL"] = "debug"
            let mark = Self.mark(variable)
            environment[variable] = mark
            let relay = try ChildProcess(
                product: "lead-relay", arguments: ["run"], environment: environment, logDirectory: scratch.url)
            let termination = try await relay.waitForExit(timeout: .seconds(60))
            #expect(termination != .exited(0))
            let output = relay.stdout.joined(separator: "\n") + relay.stderr
            #expect(output.contains(KafkaConfiguration.propertyName(forEnvironmentVariable: variable) ?? variable))
            #expect(!output.contains(mark), "the value of \(variable) appears in: \(output)")
        }
    }
}
