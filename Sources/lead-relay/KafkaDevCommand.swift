import ArgumentParser
import Foundation
import Kafka
import Logging
import UnixSignals

/// A topic to create, given as `NAME:PARTITIONS`.
struct TopicSpec: ExpressibleByArgument, Sendable {
    let name: String
    let partitions: Int32

    init(name: String, partitions: Int32) {
        self.name = name
        self.partitions = partitions
    }

    init?(argument: String) {
        guard let separator = argument.lastIndex(of: ":"),
            let partitions = Int32(argument[argument.index(after: separator)...]), partitions > 0
        else { return nil }
        let name = String(argument[..<separator])
        guard !name.isEmpty else { return nil }
        self.init(name: name, partitions: partitions)
    }

    /// The form the flag takes, for `--help`'s default.
    var defaultValueDescription: String { "\(name):\(partitions)" }
}

struct KafkaDevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka-dev",
        abstract: "Runs librdkafka's mock Kafka cluster on loopback until SIGINT or SIGTERM.",
        discussion: """
            Prints one line, KAFKA_BOOTSTRAP_SERVERS=<host:port,...>, on standard output; logs go to standard \
            error. The brokers listen on 127.0.0.1, on ports the system picks anew at each start (librdkafka \
            2.0's mock cluster cannot be given ports), so read them from that line.
            """
    )

    @Option(help: "Number of brokers.")
    var brokers: Int = 3

    @Option(
        name: .customLong("topic"),
        help: ArgumentHelp("A topic to create, NAME:PARTITIONS (repeatable).", valueName: "name:partitions"))
    var topics: [TopicSpec] = [
        TopicSpec(name: "leads.submitted", partitions: 6), TopicSpec(name: "leads.results", partitions: 6),
        TopicSpec(name: "leads.dlq", partitions: 1),
    ]

    func validate() throws {
        guard brokers > 0 else { throw ValidationError("--brokers must be at least 1") }
    }

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "lead-relay.kafka-dev")
        logger.logLevel = .info
        let cluster = try MockCluster(brokers: brokers, logger: logger)
        for topic in topics {
            try cluster.createTopic(topic.name, partitions: topic.partitions)
            logger.info("Topic created", metadata: ["topic": "\(topic.name)", "partitions": "\(topic.partitions)"])
        }
        // Written unbuffered: a parent process reads this line while kafka-dev keeps running.
        try FileHandle.standardOutput.write(
            contentsOf: Data("KAFKA_BOOTSTRAP_SERVERS=\(cluster.bootstrapServers)\n".utf8))
        let signal = await Self.waitForTerminationSignal()
        logger.info("Stopping the mock cluster", metadata: ["signal": "\(signal)"])
        cluster.shutdown()
    }

    /// Returns the first SIGINT or SIGTERM received.
    private static func waitForTerminationSignal() async -> UnixSignal {
        for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
            return signal
        }
        return .sigterm
    }
}
