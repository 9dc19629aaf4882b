import Foundation
import Testing

@testable import LeadRelay

@Suite struct JSONTextTests {
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
