/// A parsed JSON value, kept as small as validation needs: numbers keep no value because no field of
/// the contract is numeric, and objects keep their members in input order for pointer-stable reports.
enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number
    case string(String)
    case array([JSONValue])
    case object([JSONMember])

    /// The JSON Schema name of the value's type, for messages that must not echo the value itself.
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

struct JSONMember: Sendable, Equatable {
    var key: String
    var value: JSONValue
}

/// Why a byte sequence is not one acceptable JSON document; `offset` is the byte where reading stopped.
struct JSONReadError: Error, Equatable {
    enum Kind: Equatable {
        case invalidUTF8
        case unexpectedEnd
        case unexpectedByte
        case invalidEscape
        case loneSurrogate
        case controlCharacterInString
        case tooDeep
        case duplicateKey
        case trailingContent
    }

    var kind: Kind
    var offset: Int

    var message: String {
        switch kind {
        case .invalidUTF8: "is not valid UTF-8 (byte offset \(offset))"
        case .unexpectedEnd: "is not JSON: input ends early (byte offset \(offset))"
        case .unexpectedByte: "is not JSON: unexpected byte at offset \(offset)"
        case .invalidEscape: "is not JSON: invalid escape sequence at byte offset \(offset)"
        case .loneSurrogate: "is not JSON: unpaired UTF-16 surrogate escape at byte offset \(offset)"
        case .controlCharacterInString: "is not JSON: unescaped control character in a string at byte offset \(offset)"
        case .tooDeep: "is nested deeper than \(JSONReader.maxDepth) levels (byte offset \(offset))"
        case .duplicateKey: "has a duplicate object key at byte offset \(offset)"
        case .trailingContent: "is not JSON: content after the value at byte offset \(offset)"
        }
    }
}

/// A strict RFC 8259 reader over raw bytes. Every byte is looked at a bounded number of times, nesting
/// is checked before each recursion, and duplicate keys are refused (hash set once an object grows) so
/// no input costs more than linear time or unbounded stack.
struct JSONReader {
    /// Deep enough for any event (the structured shape nests four levels), shallow enough for the stack.
    static let maxDepth = 32
    /// Below this many members a linear scan finds duplicate keys faster than hashing.
    private static let duplicateScanLimit = 16

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    static func parse(_ input: [UInt8]) -> Result<JSONValue, JSONReadError> {
        input.withUnsafeBufferPointer { parse($0) }
    }

    static func parse(_ input: UnsafeBufferPointer<UInt8>) -> Result<JSONValue, JSONReadError> {
        if let badOffset = UTF8Validation.firstInvalidOffset(in: input) {
            return .failure(JSONReadError(kind: .invalidUTF8, offset: badOffset))
        }
        var reader = JSONReader(bytes: input)
        do throws(JSONReadError) {
            reader.skipWhitespace()
            let value = try reader.readValue(depth: 0)
            reader.skipWhitespace()
            guard reader.index == input.count else {
                throw JSONReadError(kind: .trailingContent, offset: reader.index)
            }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private func fail(_ kind: JSONReadError.Kind, at offset: Int? = nil) -> JSONReadError {
        JSONReadError(kind: kind, offset: offset ?? index)
    }

    private func peek() throws(JSONReadError) -> UInt8 {
        guard index < bytes.count else { throw fail(.unexpectedEnd) }
        return bytes[index]
    }

    private mutating func readValue(depth: Int) throws(JSONReadError) -> JSONValue {
        switch try peek() {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw fail(.tooDeep) }
            return try readObject(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw fail(.tooDeep) }
            return try readArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: "t"):
            try readLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try readLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try readLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try readNumber()
            return .number
        default:
            throw fail(.unexpectedByte)
        }
    }

    private mutating func readLiteral(_ literal: StaticString) throws(JSONReadError) {
        let count = literal.utf8CodeUnitCount
        let start = literal.utf8Start
        for offset in 0..<count {
            guard index < bytes.count else { throw fail(.unexpectedEnd) }
            guard bytes[index] == start[offset] else { throw fail(.unexpectedByte) }
            index += 1
        }
    }

    private mutating func readDigits() throws(JSONReadError) {
        let start = index
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
            index += 1
        }
        guard index > start else { throw index < bytes.count ? fail(.unexpectedByte) : fail(.unexpectedEnd) }
    }

    private mutating func readNumber() throws(JSONReadError) {
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        if try peek() == UInt8(ascii: "0") {
            index += 1
        } else {
            try readDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            try readDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            try readDigits()
        }
    }

    private mutating func readArray(depth: Int) throws(JSONReadError) -> JSONValue {
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if try peek() == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try readValue(depth: depth))
            skipWhitespace()
            switch try peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                return .array(elements)
            default: throw fail(.unexpectedByte)
            }
        }
    }

    private mutating func readObject(depth: Int) throws(JSONReadError) -> JSONValue {
        index += 1
        var members: [JSONMember] = []
        var seenKeys: Set<String>?
        skipWhitespace()
        if try peek() == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            let keyOffset = index
            guard try peek() == UInt8(ascii: "\"") else { throw fail(.unexpectedByte) }
            let key = try readString()
            if var keys = seenKeys {
                seenKeys = nil
                guard keys.insert(key).inserted else { throw fail(.duplicateKey, at: keyOffset) }
                seenKeys = keys
            } else {
                if members.contains(where: { $0.key == key }) { throw fail(.duplicateKey, at: keyOffset) }
                if members.count + 1 >= Self.duplicateScanLimit {
                    seenKeys = Set(members.map(\.key) + [key])
                }
            }
            skipWhitespace()
            guard try peek() == UInt8(ascii: ":") else { throw fail(.unexpectedByte) }
            index += 1
            skipWhitespace()
            members.append(JSONMember(key: key, value: try readValue(depth: depth)))
            skipWhitespace()
            switch try peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                return .object(members)
            default: throw fail(.unexpectedByte)
            }
        }
    }

    /// Reads a string whose opening quote is at `index`. The input is already known to be valid UTF-8,
    /// so only escapes and control characters need checking here.
    private mutating func readString() throws(JSONReadError) -> String {
        index += 1
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { return try readEscapedString(from: start) }
            if byte < 0x20 { throw fail(.controlCharacterInString) }
            index += 1
        }
        throw fail(.unexpectedEnd)
    }

    private mutating func readEscapedString(from start: Int) throws(JSONReadError) -> String {
        var decoded = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return String(decoding: decoded, as: UTF8.self)
            case UInt8(ascii: "\\"):
                try readEscape(into: &decoded)
            case 0..<0x20:
                throw fail(.controlCharacterInString)
            default:
                decoded.append(byte)
                index += 1
            }
        }
        throw fail(.unexpectedEnd)
    }

    private mutating func readEscape(into decoded: inout [UInt8]) throws(JSONReadError) {
        let escapeOffset = index
        index += 1
        let code = try peek()
        index += 1
        switch code {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(code)
        case UInt8(ascii: "b"): decoded.append(0x08)
        case UInt8(ascii: "f"): decoded.append(0x0C)
        case UInt8(ascii: "n"): decoded.append(0x0A)
        case UInt8(ascii: "r"): decoded.append(0x0D)
        case UInt8(ascii: "t"): decoded.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try readHex4())
            if scalar >= 0xD800, scalar <= 0xDBFF {
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                else { throw fail(.loneSurrogate, at: escapeOffset) }
                index += 2
                let low = UInt32(try readHex4())
                guard low >= 0xDC00, low <= 0xDFFF else { throw fail(.loneSurrogate, at: escapeOffset) }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if scalar >= 0xDC00, scalar <= 0xDFFF {
                throw fail(.loneSurrogate, at: escapeOffset)
            }
            guard let unicodeScalar = Unicode.Scalar(scalar) else { throw fail(.loneSurrogate, at: escapeOffset) }
            UTF8.encode(unicodeScalar) { decoded.append($0) }
        default:
            throw fail(.invalidEscape, at: escapeOffset)
        }
    }

    private mutating func readHex4() throws(JSONReadError) -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = try peek()
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail(.invalidEscape)
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }
}

/// Exact UTF-8 well-formedness (Unicode 15, table 3-7): no overlongs, no surrogates, nothing above U+10FFFF.
enum UTF8Validation {
    static func firstInvalidOffset(in bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            let length: Int
            var secondRange: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0:
                length = 3
                secondRange = 0xA0...0xBF
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED:
                length = 3
                secondRange = 0x80...0x9F
            case 0xF0:
                length = 4
                secondRange = 0x90...0xBF
            case 0xF1...0xF3: length = 4
            case 0xF4:
                length = 4
                secondRange = 0x80...0x8F
            default: return index
            }
            guard index + 1 < count, secondRange.contains(bytes[index + 1]) else { return index }
            for continuation in 2..<length {
                guard index + continuation < count, bytes[index + continuation] & 0xC0 == 0x80 else { return index }
            }
            index += length
        }
        return nil
    }

    static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { firstInvalidOffset(in: $0) == nil }
    }
}
