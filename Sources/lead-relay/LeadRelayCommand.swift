import ArgumentParser
import Foundation
import LeadRelay

@main
struct LeadRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lead-relay",
        abstract: "Relays lead events from Kafka to the Seeker Leads API.",
        version: RelayVersion.current,
        subcommands: [
            RunCommand.self, DemoCommand.self, ValidateCommand.self, DeadLetterCommand.self, StatusCommand.self,
            KafkaDevCommand.self,
        ]
    )

    /// As ArgumentParser's, except that bad usage exits with status 2, as a bad configuration does, rather than 64.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
