/// One broken rule: where (a JSON Pointer into the validated value, "" for the value itself) and what,
/// in words that never repeat the offending value.
public struct Violation: Sendable, Equatable, Codable {
    public var pointer: String
    public var message: String

    public init(pointer: String, message: String) {
        self.pointer = pointer
        self.message = message
    }
}

extension [Violation] {
    /// A JSON array of `{"pointer": ..., "message": ...}` objects.
    var detailsJSON: String {
        var writer = JSONWriter()
        writer.beginArray()
        for violation in self {
            writer.separateElement()
            writer.beginObject()
            writer.member("pointer", violation.pointer)
            writer.member("message", violation.message)
            writer.endObject()
        }
        writer.endArray()
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}

/// Validates a raw `createLeadRequest` body, as `POST /leads` does.
public enum LeadRequestValidator {
    public static let genders: Set<String> = ["MALE", "FEMALE", "OTHER", "PREFER_NOT_TO_DISCLOSE"]
    public static let languages: Set<String> = ["DE", "EN", "ES", "FR", "HE", "IT", "NL", "PT", "RU"]
    public static let phoneNumberTypes: Set<String> = ["MOBILE", "LANDLINE"]

    /// Every violation of the body, `[]` when it is valid. A body that is too large, not UTF-8, not
    /// JSON or too deep gives one violation at "".
    public static func violations(inRequestBody bytes: [UInt8], maxBytes: Int = 65536) -> [Violation] {
        guard bytes.count <= maxBytes else {
            return [Violation(pointer: "", message: "request body is larger than \(maxBytes) bytes")]
        }
        switch JSONReader.parse(bytes) {
        case .failure(let error):
            return [Violation(pointer: "", message: "request body " + error.message)]
        case .success(let value):
            var violations: [Violation] = []
            _ = RequestValidation.request(from: value, at: "", into: &violations)
            return violations
        }
    }
}

/// Checks a parsed value against `createLeadRequest`, adding every violation it finds, and builds the
/// request when there is none.
enum RequestValidation {
    static func request(from value: JSONValue, at pointer: String, into violations: inout [Violation])
        -> CreateLeadRequest?
    {
        guard case .object(let members) = value else {
            violations.append(Violation(pointer: pointer, message: "must be an object (found \(value.typeName))"))
            return nil
        }
        var firstName, lastName, gender, email, language, phoneNumbers, message, classifiedId, submittedDate: JSONValue?
        for member in members {
            switch member.key {
            case "firstName": firstName = member.value
            case "lastName": lastName = member.value
            case "gender": gender = member.value
            case "email": email = member.value
            case "language": language = member.value
            case "phoneNumbers": phoneNumbers = member.value
            case "message": message = member.value
            case "classifiedId": classifiedId = member.value
            case "submittedDate": submittedDate = member.value
            default: continue
            }
        }
        var check = FieldChecker(base: pointer, violations: violations)
        let request = CreateLeadRequest(
            firstName: check.name(firstName, "firstName", required: false),
            lastName: check.name(lastName, "lastName", required: true) ?? "",
            gender: check.oneOf(
                gender, "gender", LeadRequestValidator.genders, listed: "MALE, FEMALE, OTHER, PREFER_NOT_TO_DISCLOSE"),
            email: check.string(
                email, "email", required: true, format: LeadFormats.isEmail, "is not a valid email address") ?? "",
            language: check.oneOf(
                language, "language", LeadRequestValidator.languages, listed: "DE, EN, ES, FR, HE, IT, NL, PT, RU"),
            phoneNumbers: check.phoneNumbers(phoneNumbers),
            message: check.string(message, "message", required: true) ?? "",
            classifiedId: check.string(
                classifiedId, "classifiedId", required: true, format: LeadFormats.isClassifiedId,
                "does not match ^([0-9]{2})([1-9A-NP-Z]{10})$") ?? "",
            submittedDate: check.string(
                submittedDate, "submittedDate", required: true, format: LeadFormats.isDateTime,
                "is not an RFC 3339 date-time with a time zone offset and a real calendar day") ?? ""
        )
        let valid = check.violations.count == violations.count
        violations = check.violations
        return valid ? request : nil
    }
}

/// Field-level checks that append to one list of violations; pointers are only built when a check fails.
struct FieldChecker {
    let base: String
    var violations: [Violation]

    init(base: String, violations: [Violation]) {
        self.base = base
        self.violations = violations
    }

    mutating func add(_ field: @autoclosure () -> String, _ message: String) {
        violations.append(Violation(pointer: base + "/" + field(), message: message))
    }

    /// The string value of a field, or nil after recording why it is missing or not a string.
    mutating func string(
        _ value: JSONValue?, _ field: @autoclosure () -> String, required: Bool,
        format: ((String) -> Bool)? = nil, _ formatMessage: String = ""
    ) -> String? {
        guard let value else {
            if required { add(field(), "is required") }
            return nil
        }
        guard case .string(let text) = value else {
            add(field(), "must be a string (found \(value.typeName))")
            return nil
        }
        if let format, !format(text) {
            add(field(), formatMessage)
        }
        return text
    }

    /// A first or last name: 1 to 100 code points.
    mutating func name(_ value: JSONValue?, _ field: String, required: Bool) -> String? {
        guard let text = string(value, field, required: required) else { return nil }
        // A code point takes 1 to 4 UTF-8 bytes, so the byte count settles most cases without counting.
        let byteCount = text.utf8.count
        if byteCount == 0 {
            add(field, "must be at least 1 character long (found 0)")
        } else if byteCount > 100 {
            let codePoints = LeadFormats.codePointCount(text)
            if codePoints > 100 { add(field, "must be at most 100 characters long (found \(codePoints))") }
        }
        return text
    }

    mutating func oneOf(
        _ value: JSONValue?, _ field: @autoclosure () -> String, _ allowed: Set<String>, listed: String
    ) -> String? {
        guard let text = string(value, field(), required: false) else { return nil }
        if !allowed.contains(text) { add(field(), "must be one of " + listed) }
        return text
    }

    mutating func phoneNumbers(_ value: JSONValue?) -> [CreateLeadRequest.PhoneNumber] {
        guard let value else {
            add("phoneNumbers", "is required")
            return []
        }
        guard case .array(let items) = value else {
            add("phoneNumbers", "must be an array (found \(value.typeName))")
            return []
        }
        if items.isEmpty { add("phoneNumbers", "must hold at least 1 item") }
        var result: [CreateLeadRequest.PhoneNumber] = []
        result.reserveCapacity(items.count)
        for (position, item) in items.enumerated() {
            guard case .object(let members) = item else {
                add("phoneNumbers/\(position)", "must be an object (found \(item.typeName))")
                continue
            }
            var number, type: JSONValue?
            for member in members {
                switch member.key {
                case "number": number = member.value
                case "type": type = member.value
                default: continue
                }
            }
            let numberText = string(
                number, "phoneNumbers/\(position)/number", required: true, format: LeadFormats.isPhoneNumber,
                "does not match ^[+]?[0-9() \\/.\\-]{6,21}[0-9]$")
            let typeText = oneOf(
                type, "phoneNumbers/\(position)/type", LeadRequestValidator.phoneNumberTypes, listed: "MOBILE, LANDLINE"
            )
            result.append(CreateLeadRequest.PhoneNumber(number: numberText ?? "", type: typeText))
        }
        return result
    }
}
