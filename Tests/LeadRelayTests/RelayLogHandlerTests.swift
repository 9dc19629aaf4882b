import Foundation
import Logging
import Synchronization
import Testing

@testable import LeadRelay

final class MemoryLogSink: LogSink {
    private let captured = Mutex<[String]>([])
    var lines: [String] { captured.withLock { $0 } }
    func write(line: String) { captured.withLock { $0.append(line) } }
}

@Suite struct RelayLogHandlerTests {
    private func logger(
        _ sink: MemoryLogSink, format: RelayConfiguration.LogFormat = .json, level: Logger.Level = .info
    )
        -> Logger
    {
        Logger(label: "lead-relay.test") { label in
            RelayLogHandler(label: label, level: level, format: format, sink: sink)
        }
    }

    private func object(_ line: String) throws -> [String: Any] {
        let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(parsed as? [String: Any])
    }

    @Test func jsonLineHasTheFieldsAndFlattenedMetadata() throws {
        let sink = MemoryLogSink()
        var log = logger(sink)
        log[metadataKey: "component"] = "relay"
        log.info(
            "record \"done\"\nnext",
            metadata: ["partition": .stringConvertible(3), "ctx": ["topic": "leads.submitted"]])
        let line = try #require(sink.lines.first)
        #expect(!line.contains("\n"))
        let fields = try object(line)
        #expect(fields["level"] as? String == "info")
        #expect(fields["logger"] as? String == "lead-relay.test")
        #expect(fields["msg"] as? String == "record \"done\"\nnext")
        #expect(fields["component"] as? String == "relay")
        #expect(fields["partition"] as? String == "3")
        #expect(fields["ctx.topic"] as? String == "leads.submitted")
        let timestamp = try #require(fields["ts"] as? String)
        #expect(timestamp.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil)
        #expect(line.hasPrefix("{\"ts\":"))
    }

    @Test func levelFiltersAndReservedKeysDoNotCollide() throws {
        let sink = MemoryLogSink()
        let log = logger(sink, level: .notice)
        log.info("dropped")
        log.notice("kept", metadata: ["msg": "shadow"])
        #expect(sink.lines.count == 1)
        let fields = try object(try #require(sink.lines.first))
        #expect(fields["msg"] as? String == "kept")
        #expect(fields["meta.msg"] as? String == "shadow")
    }

    @Test func personalDataAndSecretsAreRedacted() throws {
        let sink = MemoryLogSink()
        let log = logger(sink)
        log.warning(
            "failed for jane.doe+x@example.co.uk calling +33 6 12 34 56 78",
            metadata: [
                "contact": "call (030) 123-4567 or 030/1234567", "accessToken": "abc", "Authorization": "Bearer x",
                "client_secret": "s", "kafkaPassword": "p", "offset": "123456789012", "when": "2026-11-29",
                "latency": "0.123456789", "requestId": "550e8400-e29b-41d4-a716-446655440000",
                "list": ["x@y.io", "plain"],
            ])
        let line = try #require(sink.lines.first)
        for secret in [
            "jane.doe", "example.co.uk", "12 34 56", "123-4567", "1234567\"", "Bearer x", "\"abc\"", "x@y.io",
        ] {
            #expect(!line.contains(secret), "\(secret) leaked into \(line)")
        }
        let fields = try object(line)
        #expect(fields["msg"] as? String == "failed for [redacted] calling [redacted]")
        #expect(fields["contact"] as? String == "call [redacted] or [redacted]")
        for key in ["accessToken", "Authorization", "client_secret", "kafkaPassword"] {
            #expect(fields[key] as? String == "[redacted]")
        }
        #expect(fields["offset"] as? String == "123456789012")
        #expect(fields["when"] as? String == "2026-11-29")
        #expect(fields["latency"] as? String == "0.123456789")
        #expect(fields["requestId"] as? String == "550e8400-e29b-41d4-a716-446655440000")
        #expect(fields["list"] as? String == "[[redacted], plain]")
    }

    @Test func textFormat() throws {
        let sink = MemoryLogSink()
        logger(sink, format: .text).error("boom", metadata: ["stage": "submit"])
        let line = try #require(sink.lines.first)
        #expect(line.wholeMatch(of: /\S+Z ERROR lead-relay\.test: boom stage=submit/) != nil)
    }

    @Test func scrubberLeavesOrdinaryTextAlone() {
        for text in [
            "partition 3 offset 1234567", "took 12.5 ms", "leads.submitted[2]", "2026-11-29T01:02:03.456Z", "",
        ] {
            #expect(LogScrubber.scrub(text) == text)
        }
    }
}
