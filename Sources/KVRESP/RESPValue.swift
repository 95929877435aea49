import NIOCore

/// A reply of the Redis serialization protocol, in RESP3's vocabulary. Encoding for a
/// RESP2 client maps the types RESP2 lacks onto its own (a map becomes a flat array, a
/// null a null bulk string, a double a bulk string, a boolean an integer), as Redis does.
public indirect enum RESPValue: Hashable, Sendable {
    /// `+OK`: a short status line, no CR or LF inside.
    case simple(String)
    /// `-ERR message`: the first word is the error's kind.
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$3\r\nfoo`: binary-safe bytes.
    case bulk([UInt8])
    /// The absence of a value (`_` in RESP3, `$-1` in RESP2).
    case null
    /// The absence of an array (`_` in RESP3, `*-1` in RESP2).
    case nullArray
    /// `*2\r\n…`.
    case array([RESPValue])
    /// `%1\r\n…` in RESP3; a flat array of keys and values in RESP2.
    case map([(RESPValue, RESPValue)])
    /// `,3.14` in RESP3; a bulk string in RESP2.
    case double(Double)
    /// `#t` in RESP3; `:1` in RESP2.
    case boolean(Bool)
    /// `=15\r\ntxt:…` in RESP3 (text for humans, such as INFO); a bulk string in RESP2.
    case verbatim(String)

    /// `+OK`.
    public static let ok = RESPValue.simple("OK")

    /// A bulk string of UTF-8 text.
    public static func bulk(_ text: String) -> RESPValue { .bulk(Array(text.utf8)) }

    public static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case (.simple(let a), .simple(let b)), (.error(let a), .error(let b)),
            (.verbatim(let a), .verbatim(let b)):
            return a == b
        case (.integer(let a), .integer(let b)): return a == b
        case (.bulk(let a), .bulk(let b)): return a == b
        case (.null, .null), (.nullArray, .nullArray): return true
        case (.array(let a), .array(let b)): return a == b
        case (.map(let a), .map(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.double(let a), .double(let b)): return a == b || (a.isNaN && b.isNaN)
        case (.boolean(let a), .boolean(let b)): return a == b
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .simple(let text), .error(let text), .verbatim(let text): hasher.combine(text)
        case .integer(let number): hasher.combine(number)
        case .bulk(let bytes): hasher.combine(bytes)
        case .null, .nullArray: hasher.combine(0)
        case .array(let items): hasher.combine(items)
        case .map(let pairs):
            for (key, value) in pairs {
                hasher.combine(key)
                hasher.combine(value)
            }
        case .double(let number): hasher.combine(number)
        case .boolean(let flag): hasher.combine(flag)
        }
    }

    /// Appends the reply's wire form for a client speaking `protocolVersion` (2 or 3).
    public func write(to buffer: inout ByteBuffer, protocolVersion: Int) {
        let resp3 = protocolVersion >= 3
        switch self {
        case .simple(let text): Self.line(UInt8(ascii: "+"), text, &buffer)
        case .error(let text): Self.line(UInt8(ascii: "-"), text, &buffer)
        case .integer(let number): Self.line(UInt8(ascii: ":"), String(number), &buffer)
        case .bulk(let bytes):
            Self.line(UInt8(ascii: "$"), String(bytes.count), &buffer)
            buffer.writeBytes(bytes)
            buffer.writeStaticString("\r\n")
        case .null: buffer.writeStaticString(resp3 ? "_\r\n" : "$-1\r\n")
        case .nullArray: buffer.writeStaticString(resp3 ? "_\r\n" : "*-1\r\n")
        case .array(let items):
            Self.line(UInt8(ascii: "*"), String(items.count), &buffer)
            for item in items { item.write(to: &buffer, protocolVersion: protocolVersion) }
        case .map(let pairs):
            Self.line(
                resp3 ? UInt8(ascii: "%") : UInt8(ascii: "*"), String(resp3 ? pairs.count : pairs.count * 2),
                &buffer)
            for (key, value) in pairs {
                key.write(to: &buffer, protocolVersion: protocolVersion)
                value.write(to: &buffer, protocolVersion: protocolVersion)
            }
        case .double(let number):
            let text = Self.doubleText(number)
            if resp3 {
                Self.line(UInt8(ascii: ","), text, &buffer)
            } else {
                RESPValue.bulk(text).write(to: &buffer, protocolVersion: protocolVersion)
            }
        case .boolean(let flag):
            if resp3 {
                buffer.writeStaticString(flag ? "#t\r\n" : "#f\r\n")
            } else {
                RESPValue.integer(flag ? 1 : 0).write(to: &buffer, protocolVersion: protocolVersion)
            }
        case .verbatim(let text):
            if resp3 {
                let bytes = Array(text.utf8)
                Self.line(UInt8(ascii: "="), String(bytes.count + 4), &buffer)
                buffer.writeStaticString("txt:")
                buffer.writeBytes(bytes)
                buffer.writeStaticString("\r\n")
            } else {
                RESPValue.bulk(text).write(to: &buffer, protocolVersion: protocolVersion)
            }
        }
    }

    private static func line(_ type: UInt8, _ text: String, _ buffer: inout ByteBuffer) {
        buffer.writeInteger(type)
        buffer.writeString(text)
        buffer.writeStaticString("\r\n")
    }

    /// A double as Redis writes it: `inf`, `-inf`, `nan`, or the shortest text that reads
    /// back as the same number.
    static func doubleText(_ number: Double) -> String {
        if number.isNaN { return "nan" }
        if number.isInfinite { return number < 0 ? "-inf" : "inf" }
        return RESPNumbers.text(number)
    }
}
