/// Splits a file of events, as `lead-relay validate` reads it, into one byte sequence per event.
public enum LeadEventBatch {
    /// The events of `input`: the elements of one top-level JSON array when the whole input is one,
    /// otherwise its non-blank lines (JSON lines; a trailing `\r` is dropped). Each event is judged on
    /// its own later, so an array element that is not valid JSON still counts as one event.
    public static func events(in input: [UInt8]) -> [ArraySlice<UInt8>] {
        if let elements = arrayElements(in: input) { return elements }
        var events: [ArraySlice<UInt8>] = []
        for line in input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            let content = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
            if content.contains(where: { !isWhitespace($0) }) { events.append(content) }
        }
        return events
    }

    /// The elements of a top-level array, found by tracking strings and bracket depth without parsing,
    /// so that a deep or broken element cannot hide its neighbours. nil when the input is not one array.
    private static func arrayElements(in input: [UInt8]) -> [ArraySlice<UInt8>]? {
        guard let open = input.firstIndex(where: { !isWhitespace($0) }), input[open] == UInt8(ascii: "[") else {
            return nil
        }
        var elements: [ArraySlice<UInt8>] = []
        var depth = 1
        var elementStart: Int?
        var inString = false
        var index = open + 1
        func closeElement(at end: Int) -> Bool {
            guard let start = elementStart else { return false }
            var last = end
            while last > start, isWhitespace(input[last - 1]) { last -= 1 }
            elements.append(input[start..<last])
            elementStart = nil
            return true
        }
        while index < input.count {
            let byte = input[index]
            if inString {
                if byte == UInt8(ascii: "\\") {
                    index += 1
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                index += 1
                continue
            }
            switch byte {
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                if elementStart == nil { elementStart = index }
                depth += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth -= 1
                if depth == 0 {
                    if elementStart != nil || !elements.isEmpty {
                        guard closeElement(at: index) else { return nil }
                    }
                    let rest = input[(index + 1)...]
                    return rest.allSatisfy(isWhitespace) ? elements : nil
                }
            case UInt8(ascii: ",") where depth == 1:
                guard closeElement(at: index) else { return nil }
            case UInt8(ascii: "\""):
                if elementStart == nil { elementStart = index }
                inString = true
            default:
                if elementStart == nil, !isWhitespace(byte) { elementStart = index }
            }
            index += 1
        }
        return nil
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }
}
