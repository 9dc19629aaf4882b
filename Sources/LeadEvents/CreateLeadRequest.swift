import RelayPrimitives

/// The body of `POST /leads`: only the fields `createLeadRequest` defines, each value exactly as it
/// arrived. Absent optional fields stay absent (the schema's `language` default is never injected),
/// and the synthesized `Codable` omits them instead of writing nulls.
public struct CreateLeadRequest: Sendable, Equatable, Codable {
    public var firstName: String?
    public var lastName: String
    public var gender: String?
    public var email: String
    public var language: String?
    public var phoneNumbers: [PhoneNumber]
    public var message: String
    public var classifiedId: String
    public var submittedDate: String

    public struct PhoneNumber: Sendable, Equatable, Codable {
        public var number: String
        public var type: String?

        public init(number: String, type: String? = nil) {
            self.number = number
            self.type = type
        }
    }

    public init(
        firstName: String? = nil,
        lastName: String,
        gender: String? = nil,
        email: String,
        language: String? = nil,
        phoneNumbers: [PhoneNumber],
        message: String,
        classifiedId: String,
        submittedDate: String
    ) {
        self.firstName = firstName
        self.lastName = lastName
        self.gender = gender
        self.email = email
        self.language = language
        self.phoneNumbers = phoneNumbers
        self.message = message
        self.classifiedId = classifiedId
        self.submittedDate = submittedDate
    }

    /// RFC 8785 canonical JSON: members sorted by UTF-16 code units (all keys here are ASCII, so the
    /// order below is that order), no insignificant whitespace, only the escapes JSON requires.
    public func canonicalJSON() -> [UInt8] {
        var writer = JSONWriter()
        writer.bytes.reserveCapacity(256 + message.utf8.count)
        writer.beginObject()
        writer.member("classifiedId", classifiedId)
        writer.member("email", email)
        if let firstName { writer.member("firstName", firstName) }
        if let gender { writer.member("gender", gender) }
        if let language { writer.member("language", language) }
        writer.member("lastName", lastName)
        writer.member("message", message)
        writer.key("phoneNumbers")
        writer.beginArray()
        for phoneNumber in phoneNumbers {
            writer.separateElement()
            writer.beginObject()
            writer.member("number", phoneNumber.number)
            if let type = phoneNumber.type { writer.member("type", type) }
            writer.endObject()
        }
        writer.endArray()
        writer.member("submittedDate", submittedDate)
        writer.endObject()
        return writer.bytes
    }
}

/// Writes compact JSON, strings escaped as RFC 8785 requires (`JSONString`).
struct JSONWriter {
    var bytes: [UInt8] = []
    private var needsComma = false

    mutating func beginObject() {
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func beginArray() {
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    mutating func separateElement() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = false
    }

    mutating func key(_ name: String) {
        separateElement()
        string(name)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func member(_ name: String, _ value: String) {
        key(name)
        string(value)
        needsComma = true
    }

    mutating func string(_ value: String) {
        JSONString.append(value, to: &bytes)
    }
}
