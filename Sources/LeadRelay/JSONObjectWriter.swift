import RelayPrimitives

/// Writes one flat JSON object field by field. The per-record path publishes a result for every
/// record, and this costs a fraction of what `JSONEncoder` does for the same object.
struct JSONObjectWriter {
    private var text = "{"
    private var isEmpty = true

    mutating func field(_ name: String, string value: String?) {
        guard let value else { return field(name, rawJSON: "null") }
        appendName(name)
        JSONString.append(value, to: &text)
    }

    mutating func field(_ name: String, integer value: Int) {
        field(name, rawJSON: String(value))
    }

    mutating func field(_ name: String, rawJSON value: String) {
        appendName(name)
        text += value
    }

    mutating func finish() -> String {
        text += "}"
        return text
    }

    private mutating func appendName(_ name: String) {
        if !isEmpty { text += "," }
        isEmpty = false
        JSONString.append(name, to: &text)
        text += ":"
    }
}
