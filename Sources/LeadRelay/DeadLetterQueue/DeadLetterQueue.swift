import Foundation
import Kafka
import Logging

/// The dead-letter topic as `lead-relay dlq` reads it: every record it holds when a command starts, in partition
/// and offset order. Records dead-lettered meanwhile are left for the next command.
public struct DeadLetterQueue: Sendable {
    public let configuration: DeadLetterToolConfiguration
    let logger: Logger

    public init(configuration: DeadLetterToolConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    var topic: String { configuration.deadLetterTopic }

    /// Calls `body` with each selected dead letter until it returns false; returns how many records were read.
    @discardableResult
    public func scan(
        _ filter: DeadLetterFilter, now: Date = Date(), _ body: (DeadLetterEntry) throws -> Bool
    ) async throws -> Int {
        try await withReader(groupID: nil) { reader in
            let watermarks = try await reader.watermarks(of: try await reader.partitions(of: topic))
            var read = 0
            for try await batch in try await reader.records(
                from: watermarks.mapValues(\.lowerBound), upTo: watermarks.mapValues(\.upperBound))
            {
                for record in batch {
                    read += 1
                    let entry = DeadLetterEntry(record)
                    if filter.matches(entry, now: now), try !body(entry) { return read }
                }
            }
            return read
        }
    }

    /// A reader of the dead-letter topic, closed once `body` is done with it.
    func withReader<Result>(groupID: String?, _ body: (KafkaTopicReader) async throws -> Result) async throws
        -> Result
    {
        let reader = try KafkaTopicReader(
            configuration: configuration.kafkaConfiguration, groupID: groupID, logger: logger)
        do {
            let result = try await body(reader)
            await reader.close()
            return result
        } catch {
            await reader.close()
            throw error
        }
    }

    public func summary(_ filter: DeadLetterFilter) async throws -> DeadLetterSummary {
        var summary = DeadLetterSummary(topic: topic)
        try await scan(filter) { entry in
            summary.add(entry)
            return true
        }
        return summary
    }
}
