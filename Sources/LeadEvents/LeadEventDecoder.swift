import Crypto

/// One Kafka record header; the value is raw bytes and may be absent.
public struct LeadEventHeader: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// How the record carried the event.
public enum LeadEventShape: String, Sendable {
    /// The value is a CloudEvents JSON object holding `specversion` and `data`.
    case structured
    /// CloudEvents attributes in `ce_` headers; the value is the request.
    case binary
    /// No CloudEvents attributes: the value is the request.
    case plain
}

/// A record that decoded and validated: what the relay submits and the key it deduplicates on.
public struct LeadEvent: Sendable {
    public var shape: LeadEventShape
    public var id: String?
    public var source: String?
    public var type: String?
    public var time: String?
    public var traceparent: String?
    public var request: CreateLeadRequest
    /// `ce:<source>|<id>` for CloudEvents, `sha256:<hex of the request's RFC 8785 JSON>` for plain events.
    public var dedupeKey: String
}

public enum LeadEventRejectionReason: String, Sendable {
    case malformed
    case unsupportedType = "unsupported-type"
    case schemaViolation = "schema-violation"
}

/// Why a record cannot become a lead. Nothing in it repeats a field's value.
public struct LeadEventRejection: Error, Sendable {
    public var reason: LeadEventRejectionReason
    /// `decode` for malformed and unsupported-type records, `validate` for schema violations.
    public var stage: String
    /// One line.
    public var message: String
    public var violations: [Violation]

    /// The violations as a JSON array of `{"pointer", "message"}` objects (the dead letter's details).
    public var detailsJSON: String { violations.detailsJSON }

    static func malformed(_ description: String, pointer: String = "") -> LeadEventRejection {
        LeadEventRejection(
            reason: .malformed, stage: "decode", message: "malformed event: " + description,
            violations: [Violation(pointer: pointer, message: description)])
    }

    static func unsupportedType(expected: String, pointer: String) -> LeadEventRejection {
        let description = "event type is not \(expected)"
        return LeadEventRejection(
            reason: .unsupportedType, stage: "decode", message: "unsupported event type: " + description,
            violations: [Violation(pointer: pointer, message: description)])
    }

    static func schemaViolation(_ violations: [Violation]) -> LeadEventRejection {
        let listed = violations.map { ($0.pointer.isEmpty ? "(event)" : $0.pointer) + " " + $0.message }
        return LeadEventRejection(
            reason: .schemaViolation, stage: "validate",
            message: "\(violations.count) schema violation\(violations.count == 1 ? "" : "s"): "
                + listed.joined(separator: "; "),
            violations: violations)
    }
}

/// Turns a Kafka record into a validated lead event, or says why it cannot be one. Pure and cheap:
/// one pass to check UTF-8, one to parse, one over the parsed fields.
public struct LeadEventDecoder: Sendable {
    public var eventType: String
    public var maxEventBytes: Int

    public init(eventType: String = "lead.submitted", maxEventBytes: Int = 65536) {
        self.eventType = eventType
        self.maxEventBytes = maxEventBytes
    }

    /// The record's key plays no part: shape, identity and dedupe key come from the value and headers.
    public func decode(
        key: [UInt8]?, value: [UInt8]?, headers: [(key: String, value: [UInt8]?)]
    ) -> Result<LeadEvent, LeadEventRejection> {
        guard let value else { return .failure(.malformed("record has no value")) }
        guard value.count <= maxEventBytes else {
            return .failure(.malformed("value is larger than \(maxEventBytes) bytes"))
        }
        let members: [JSONMember]
        switch JSONReader.parse(value) {
        case .failure(let error):
            return .failure(.malformed("value " + error.message))
        case .success(.object(let objectMembers)):
            members = objectMembers
        case .success(let other):
            return .failure(.malformed("value must be a JSON object (found \(other.typeName))"))
        }
        if members.contains(where: { $0.key == "specversion" }) {
            return decodeStructured(members)
        }
        switch BinaryAttributes.read(headers) {
        case .failure(let rejection):
            return .failure(rejection)
        case .success(let attributes?):
            return decodeBinary(attributes, data: .object(members))
        case .success(nil):
            return decodePlain(.object(members), traceparentHeader: BinaryAttributes.traceparent(in: headers))
        }
    }

    public func decode<Headers: Sequence<LeadEventHeader>>(
        key: [UInt8]?, value: [UInt8]?, headers: Headers
    ) -> Result<LeadEvent, LeadEventRejection> {
        decode(key: key, value: value, headers: headers.map { (key: $0.key, value: $0.value) })
    }

    private func decodeStructured(_ members: [JSONMember]) -> Result<LeadEvent, LeadEventRejection> {
        var specversion, id, source, type, time, datacontenttype, traceparent, data: JSONValue?
        for member in members {
            switch member.key {
            case "specversion": specversion = member.value
            case "id": id = member.value
            case "source": source = member.value
            case "type": type = member.value
            case "time": time = member.value
            case "datacontenttype": datacontenttype = member.value
            case "traceparent": traceparent = member.value
            case "data": data = member.value
            default: continue
            }
        }
        if case .string(let typeText)? = type, typeText != eventType {
            return .failure(.unsupportedType(expected: eventType, pointer: "/type"))
        }
        var check = FieldChecker(base: "", violations: [])
        if let version = check.string(specversion, "specversion", required: true), version != "1.0" {
            check.add("specversion", "must be 1.0")
        }
        let idText = check.nonEmpty(id, "id")
        let sourceText = check.nonEmpty(source, "source")
        let typeText = check.string(type, "type", required: true)
        let timeText = check.string(time, "time", required: false, format: LeadFormats.isDateTime, Self.timeMessage)
        _ = check.string(
            datacontenttype, "datacontenttype", required: false, format: LeadFormats.isJSONMediaType,
            "must be application/json, optionally with parameters")
        let traceparentText = check.string(
            traceparent, "traceparent", required: false, format: LeadFormats.isTraceparent, Self.traceparentMessage)
        var violations = check.violations
        let request: CreateLeadRequest?
        if let data {
            request = RequestValidation.request(from: data, at: "/data", into: &violations)
        } else {
            violations.append(Violation(pointer: "/data", message: "is required"))
            request = nil
        }
        guard violations.isEmpty, let request, let idText, let sourceText else {
            return .failure(.schemaViolation(violations))
        }
        return .success(
            LeadEvent(
                shape: .structured, id: idText, source: sourceText, type: typeText, time: timeText,
                traceparent: traceparentText, request: request, dedupeKey: Self.cloudEventsKey(sourceText, idText)))
    }

    private func decodeBinary(_ attributes: BinaryAttributes, data: JSONValue) -> Result<LeadEvent, LeadEventRejection>
    {
        if let type = attributes.type, type != eventType {
            return .failure(.unsupportedType(expected: eventType, pointer: ""))
        }
        var violations: [Violation] = []
        func requireHeader(_ text: String?, _ name: String) {
            if text?.isEmpty ?? true {
                violations.append(Violation(pointer: "", message: "header \(name) is required"))
            }
        }
        requireHeader(attributes.specversion, "ce_specversion")
        if let version = attributes.specversion, !version.isEmpty, version != "1.0" {
            violations.append(Violation(pointer: "", message: "header ce_specversion must be 1.0"))
        }
        requireHeader(attributes.id, "ce_id")
        requireHeader(attributes.source, "ce_source")
        requireHeader(attributes.type, "ce_type")
        if let time = attributes.time, !LeadFormats.isDateTime(time) {
            violations.append(Violation(pointer: "", message: "header ce_time " + Self.timeMessage))
        }
        if let traceparent = attributes.traceparent, !LeadFormats.isTraceparent(traceparent) {
            violations.append(Violation(pointer: "", message: "header traceparent " + Self.traceparentMessage))
        }
        let request = RequestValidation.request(from: data, at: "", into: &violations)
        guard violations.isEmpty, let request, let id = attributes.id, let source = attributes.source else {
            return .failure(.schemaViolation(violations))
        }
        return .success(
            LeadEvent(
                shape: .binary, id: id, source: source, type: attributes.type, time: attributes.time,
                traceparent: attributes.traceparent, request: request, dedupeKey: Self.cloudEventsKey(source, id)))
    }

    private func decodePlain(_ data: JSONValue, traceparentHeader: String?) -> Result<LeadEvent, LeadEventRejection> {
        var violations: [Violation] = []
        guard let request = RequestValidation.request(from: data, at: "", into: &violations) else {
            return .failure(.schemaViolation(violations))
        }
        return .success(
            LeadEvent(
                shape: .plain, id: nil, source: nil, type: nil, time: nil, traceparent: traceparentHeader,
                request: request, dedupeKey: Self.contentKey(request)))
    }

    private static let timeMessage = "is not an RFC 3339 date-time with a time zone offset and a real calendar day"
    private static let traceparentMessage = "is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, lower case)"

    static func cloudEventsKey(_ source: String, _ id: String) -> String {
        "ce:" + source + "|" + id
    }

    static func contentKey(_ request: CreateLeadRequest) -> String {
        let digest = SHA256.hash(data: request.canonicalJSON())
        let hexDigits = Array("0123456789abcdef".utf8)
        var text = Array("sha256:".utf8)
        text.reserveCapacity(7 + 64)
        for byte in digest {
            text.append(hexDigits[Int(byte >> 4)])
            text.append(hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

extension FieldChecker {
    mutating func nonEmpty(_ value: JSONValue?, _ field: String) -> String? {
        guard let text = string(value, field, required: true) else { return nil }
        if text.isEmpty { add(field, "must not be empty") }
        return text
    }
}

/// The CloudEvents attributes of a binary-mode record, read from its `ce_` headers.
struct BinaryAttributes {
    var specversion: String?
    var id: String?
    var source: String?
    var type: String?
    var time: String?
    var traceparent: String?

    /// nil when no header starts with `ce_` (the record is not binary CloudEvents). A repeated
    /// attribute header is refused: which copy counts would be a guess, and the id feeds the dedupe key.
    static func read(
        _ headers: [(key: String, value: [UInt8]?)]
    ) -> Result<BinaryAttributes?, LeadEventRejection> {
        guard headers.contains(where: { $0.key.hasPrefix("ce_") }) else { return .success(nil) }
        var attributes = BinaryAttributes()
        for header in headers {
            let slot: WritableKeyPath<BinaryAttributes, String?>
            switch header.key {
            case "ce_specversion": slot = \.specversion
            case "ce_id": slot = \.id
            case "ce_source": slot = \.source
            case "ce_type": slot = \.type
            case "ce_time": slot = \.time
            case "traceparent": slot = \.traceparent
            default: continue
            }
            guard attributes[keyPath: slot] == nil else {
                return .failure(.malformed("header \(header.key) appears more than once"))
            }
            let bytes = header.value ?? []
            guard UTF8Validation.isValid(bytes) else {
                return .failure(.malformed("header \(header.key) is not valid UTF-8"))
            }
            attributes[keyPath: slot] = String(decoding: bytes, as: UTF8.self)
        }
        return .success(attributes)
    }

    /// A plain event's trace context: taken when the header is well formed, ignored otherwise, since
    /// tracing must never decide whether a lead is delivered.
    static func traceparent(in headers: [(key: String, value: [UInt8]?)]) -> String? {
        guard let header = headers.last(where: { $0.key == "traceparent" }), let bytes = header.value,
            UTF8Validation.isValid(bytes)
        else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        return LeadFormats.isTraceparent(text) ? text : nil
    }
}
