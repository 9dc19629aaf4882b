import Foundation
import RelayPrimitives
import Testing

@testable import LeadRelay

@Suite struct JSONOutputTests {
    @Test func timestampsAreRFC3339InUTCWithMilliseconds() {
        #expect(
            RFC3339Milliseconds.format(Date(timeIntervalSince1970: 1_764_412_800.123)) == "2025-11-29T10:40:00.123Z")
        #expect(RFC3339Milliseconds.format(Date(timeIntervalSince1970: 951_782_400.5)) == "2000-02-29T00:00:00.500Z")
        #expect(RFC3339Milliseconds.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
    }

    @Test func resultObjectsEscapeOnlyWhatJSONRequires() throws {
        var writer = JSONObjectWriter()
        writer.field("title", string: "Lead \"créé\" / ok\n")
        writer.field("eventSource", string: nil)
        writer.field("attempts", integer: 3)
        let text = writer.finish()
        #expect(text == #"{"title":"Lead \"créé\" / ok\n","eventSource":null,"attempts":3}"#)
        let decoded = try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(decoded["title"] as? String == "Lead \"créé\" / ok\n")
    }
}

@Suite struct JSONStringAndDurationTests {
    @Test func escapesOnlyWhatJSONRequiresAsRFC8785Does() throws {
        let raw = "a\"b\\c\u{08}\u{0C}\n\r\t\u{01}\u{1F} é 😀 /"
        let expected = #""a\"b\\c\b\f\n\r\t\u0001\u001f é 😀 /""#
        #expect(JSONString.quoted(raw) == expected)
        var bytes: [UInt8] = []
        JSONString.append(raw, to: &bytes)
        #expect(String(decoding: bytes, as: UTF8.self) == expected)
        let decoded = try JSONSerialization.jsonObject(with: Data(expected.utf8), options: [.fragmentsAllowed])
        #expect(decoded as? String == raw)
        #expect(JSONString.quoted("plain") == "\"plain\"")
    }

    @Test func durationsConvertToSecondsAndNanoseconds() {
        #expect(Duration.milliseconds(1500).timeInterval == 1.5)
        #expect(Duration.milliseconds(1500).nanosecondsValue == 1_500_000_000)
        #expect(Duration.nanoseconds(-7).nanosecondsValue == -7)
        #expect(Duration(timeInterval: 0.005) == .milliseconds(5))
    }
}
