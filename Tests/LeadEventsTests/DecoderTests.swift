import Foundation
import LeadEvents
import Testing

@Suite("Lead event decoding")
struct DecoderTests {
    static let minimalLead = """
        {"lastName":"Doe","email":"test@example.com","phoneNumbers":[{"number":"+33511223344"}],\
        "message":"message","classifiedId":"75ZYXWVUTSRQ","submittedDate":"2025-03-14T09:26:53Z"}
        """

    func decodePlain(_ text: String) -> Result<LeadEvent, LeadEventRejection> {
        LeadEventDecoder().decode(key: nil, value: Array(text.utf8), headers: [])
    }

    func violations(_ text: String) -> [Violation] {
        guard case .failure(let rejection) = decodePlain(text) else { return [] }
        return rejection.violations
    }

    /// The minimal lead with one field's JSON value replaced by `json` (inserted as is, no template escapes).
    func lead(replacing field: String, with json: String) -> String {
        var text = Self.minimalLead
        if let range = text.range(of: #"(?<="\#(field)":)("[^"]*"|\[[^\]]*\])"#, options: .regularExpression) {
            text.replaceSubrange(range, with: json)
        }
        return text
    }

    @Test("the request carries exactly the defined fields, values as sent, no default injected")
    func requestCarriesOnlyDefinedFields() throws {
        let text = """
            {"portalRef":"P-1","lastName":"Doe","email":"test@example.com","score":3,"extra":{"a":[1,2]},\
            "phoneNumbers":[{"number":"0611223344","ext":"9"}],"message":"  spaced  ","classifiedId":"75ZYXWVUTSRQ",\
            "submittedDate":"2025-03-14t09:26:53z"}
            """
        let event = try decodePlain(text).get()
        let encoded = try JSONEncoder().encode(event.request)
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        #expect(Set(object.keys) == ["lastName", "email", "phoneNumbers", "message", "classifiedId", "submittedDate"])
        let phones = try #require(object["phoneNumbers"] as? [[String: Any]])
        #expect(phones.count == 1 && Set(phones[0].keys) == ["number"])
        #expect(event.request.language == nil)
        #expect(event.request.message == "  spaced  ")
        #expect(event.request.submittedDate == "2025-03-14t09:26:53z")
        let canonical = String(decoding: event.request.canonicalJSON(), as: UTF8.self)
        #expect(
            canonical == #"{"classifiedId":"75ZYXWVUTSRQ","email":"test@example.com","lastName":"Doe","#
                + #""message":"  spaced  ","phoneNumbers":[{"number":"0611223344"}],"#
                + #""submittedDate":"2025-03-14t09:26:53z"}"#)
    }

    @Test("two orderings of one plain lead give one dedupe key; another lead gives another")
    func dedupeKeyIgnoresMemberOrder() throws {
        let first = try decodePlain(Self.minimalLead).get()
        let reordered = """
            {
              "submittedDate": "2025-03-14T09:26:53Z", "classifiedId": "75ZYXWVUTSRQ", "message": "message",
              "phoneNumbers": [ { "number": "+33511223344" } ], "email": "test@example.com", "lastName": "Doe",
              "unknown": true
            }
            """
        let second = try decodePlain(reordered).get()
        #expect(first.dedupeKey == second.dedupeKey)
        #expect(first.dedupeKey.hasPrefix("sha256:") && first.dedupeKey.count == 7 + 64)
        let other = try decodePlain(lead(replacing: "message", with: #""message!""#)).get()
        #expect(other.dedupeKey != first.dedupeKey)
    }

    @Test("canonical JSON escapes only what JSON requires (RFC 8785)")
    func canonicalJSONEscapes() {
        let request = CreateLeadRequest(
            lastName: "Ünïcødé", email: "a@b.c", phoneNumbers: [.init(number: "0611223344", type: "MOBILE")],
            message: "q\"b\\s/\u{1}\u{7f}\n\t\u{2028}😀", classifiedId: "75ZYXWVUTSRQ",
            submittedDate: "2025-03-14T09:26:53Z")
        let expected =
            #"{"classifiedId":"75ZYXWVUTSRQ","email":"a@b.c","lastName":"Ünïcødé","message":"q\"b\\s/\u0001"#
            + "\u{7f}" + #"\n\t"# + "\u{2028}😀" + #"","phoneNumbers":[{"number":"0611223344","type":"MOBILE"}],"#
            + #""submittedDate":"2025-03-14T09:26:53Z"}"#
        #expect(String(decoding: request.canonicalJSON(), as: UTF8.self) == expected)
    }

    @Test("lengths count code points, not grapheme clusters")
    func lengthsCountCodePoints() {
        let hundredCodePoints = String(repeating: "e\u{301}", count: 50)
        #expect(hundredCodePoints.count == 50)
        #expect(violations(lead(replacing: "lastName", with: "\"\(hundredCodePoints)\"")).isEmpty)
        let hundredOne = hundredCodePoints + "x"
        #expect(hundredOne.count == 51)
        #expect(violations(lead(replacing: "lastName", with: "\"\(hundredOne)\"")).map(\.pointer) == ["/lastName"])
        let emoji = String(repeating: "😀", count: 100)
        #expect(violations(lead(replacing: "lastName", with: "\"\(emoji)\"")).isEmpty)
        #expect(violations(lead(replacing: "lastName", with: "\"\(emoji)😀\"")).map(\.pointer) == ["/lastName"])
    }

    @Test("a trailing newline does not match a pattern or a format ($ ends the string)")
    func trailingNewlineDoesNotMatch() {
        #expect(
            violations(lead(replacing: "classifiedId", with: #""75ZYXWVUTSRQ\n""#)).map(\.pointer) == ["/classifiedId"])
        #expect(
            violations(lead(replacing: "phoneNumbers", with: #"[{"number":"+33511223344\n"}]"#)).map(\.pointer)
                == ["/phoneNumbers/0/number"])
        #expect(
            violations(lead(replacing: "submittedDate", with: #""2025-03-14T09:26:53Z\n""#)).map(\.pointer)
                == ["/submittedDate"])
        #expect(violations(lead(replacing: "email", with: #""test@example.com\n""#)).map(\.pointer) == ["/email"])
    }

    @Test("rejections never repeat the values they judge")
    func rejectionsCarryNoPersonalData() throws {
        let text = lead(replacing: "email", with: #""jane.secret@@example.com""#)
            .replacingOccurrences(of: #""+33511223344""#, with: #""+33 6 SECRET""#)
        guard case .failure(let rejection) = decodePlain(text) else {
            Issue.record("expected a rejection")
            return
        }
        #expect(rejection.violations.count == 2)
        for text in [rejection.message, rejection.detailsJSON] {
            #expect(!text.contains("secret") && !text.contains("SECRET"))
        }
    }

    @Test("CloudEvents attributes and trace context are carried; the Kafka key plays no part")
    func cloudEventsAttributes() throws {
        let structured = """
            {"specversion":"1.0","id":"e-1","source":"/p","type":"lead.submitted","time":"2025-03-14T09:26:53Z",\
            "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":\(Self.minimalLead)}
            """
        let event = try LeadEventDecoder().decode(key: Array("k".utf8), value: Array(structured.utf8), headers: [])
            .get()
        #expect(event.shape == .structured && event.id == "e-1" && event.source == "/p")
        #expect(event.time == "2025-03-14T09:26:53Z" && event.traceparent?.hasPrefix("00-0af7") == true)
        #expect(event.dedupeKey == "ce:/p|e-1")

        let headers = [
            LeadEventHeader(key: "ce_specversion", value: Array("1.0".utf8)),
            LeadEventHeader(key: "ce_id", value: Array("b-1".utf8)),
            LeadEventHeader(key: "ce_source", value: Array("/q".utf8)),
            LeadEventHeader(key: "ce_type", value: Array("lead.created".utf8)),
        ]
        let custom = LeadEventDecoder(eventType: "lead.created")
        let binary = try custom.decode(key: nil, value: Array(Self.minimalLead.utf8), headers: headers).get()
        #expect(binary.shape == .binary && binary.dedupeKey == "ce:/q|b-1" && binary.type == "lead.created")
        guard
            case .failure(let rejection) = LeadEventDecoder().decode(
                key: nil, value: Array(Self.minimalLead.utf8), headers: headers)
        else {
            Issue.record("the default type must refuse lead.created")
            return
        }
        #expect(rejection.reason == .unsupportedType)
    }

    @Test("the event size limit is configurable")
    func sizeLimit() {
        let small = LeadEventDecoder(maxEventBytes: 100)
        guard case .failure(let rejection) = small.decode(key: nil, value: Array(Self.minimalLead.utf8), headers: [])
        else {
            Issue.record("expected malformed")
            return
        }
        #expect(rejection.reason == .malformed)
        #expect(LeadRequestValidator.violations(inRequestBody: Array(Self.minimalLead.utf8), maxBytes: 100).count == 1)
    }

    @Test("the request body validator reports every violation, and malformed bodies at the root")
    func requestBodyValidator() {
        #expect(LeadRequestValidator.violations(inRequestBody: Array(Self.minimalLead.utf8)).isEmpty)
        let broken = LeadRequestValidator.violations(inRequestBody: Array(#"{"lastName":""#.utf8))
        #expect(broken.map(\.pointer) == [""])
        let empty = LeadRequestValidator.violations(inRequestBody: Array("{}".utf8))
        #expect(
            empty.map(\.pointer) == [
                "/lastName", "/email", "/phoneNumbers", "/message", "/classifiedId", "/submittedDate",
            ])
        #expect(LeadRequestValidator.violations(inRequestBody: [0xFF]).map(\.pointer) == [""])
    }

    @Test("a file of events splits into JSON lines or the elements of one array")
    func batchSplitting() {
        let array = #" [ {"a":"x,]}"} , [1,[2]] ,"s", 3 ] "#
        #expect(
            LeadEventBatch.events(in: Array(array.utf8)).map { String(decoding: $0, as: UTF8.self) }
                == [#"{"a":"x,]}"}"#, "[1,[2]]", #""s""#, "3"])
        let lines = "{\"a\":1}\r\n\n  \n[1,2]\nnot json\n"
        #expect(
            LeadEventBatch.events(in: Array(lines.utf8)).map { String(decoding: $0, as: UTF8.self) }
                == [#"{"a":1}"#, "[1,2]", "not json"])
        #expect(LeadEventBatch.events(in: Array("[]".utf8)).isEmpty)
    }

    /// SplitMix64: a fixed seed gives the same bytes on every run.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var mixed = state
            mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
            return mixed ^ (mixed >> 31)
        }
    }

    @Test("random and mutated bytes never crash; accepted leads round-trip through canonical JSON")
    func randomBytesNeverCrash() throws {
        var generator = SeededGenerator(state: 0x1EAD_4E1A)
        let decoder = LeadEventDecoder()
        let seeds = FixtureCorpus.all.compactMap(\.valueBytes).filter { !$0.isEmpty && $0.count < 4096 }
        try #require(!seeds.isEmpty)
        var accepted = 0
        var rejected = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                bytes = (0..<Int.random(in: 0...256, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
            } else {
                bytes = seeds[Int.random(in: 0..<seeds.count, using: &generator)]
                for _ in 0..<Int.random(in: 0...3, using: &generator) {
                    let position = Int.random(in: 0..<bytes.count, using: &generator)
                    bytes[position] = "{}[]\",:\\0aZ@+-.\n ".utf8.randomElement(using: &generator) ?? 0
                }
            }
            let headers: [(key: String, value: [UInt8]?)] = round % 3 == 0 ? [("ce_id", Array(bytes.prefix(8)))] : []
            switch decoder.decode(key: nil, value: bytes, headers: headers) {
            case .success(let event):
                accepted += 1
                let again = try decoder.decode(key: nil, value: event.request.canonicalJSON(), headers: []).get()
                #expect(again.request == event.request)
            case .failure(let rejection):
                rejected += 1
                #expect(!rejection.violations.isEmpty && !rejection.message.contains("\n"))
            }
            _ = LeadRequestValidator.violations(inRequestBody: bytes)
        }
        #expect(accepted > 100 && rejected > 100)
    }
}
