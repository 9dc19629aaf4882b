import ArgumentParser

@main
struct LeadRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lead-relay",
        abstract: "Relays lead events from Kafka to the Seeker Leads API.",
        subcommands: [RunCommand.self, DemoCommand.self, ValidateCommand.self, KafkaDevCommand.self]
    )
}
