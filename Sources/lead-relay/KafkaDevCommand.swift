import ArgumentParser

struct KafkaDevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kafka-dev")
}
