/// The type of one part of a table's key tuple.
public enum KeyPartType: String, Sendable, Hashable, CaseIterable, Codable {
    /// A Unicode string, compared by its UTF-8 bytes.
    case string
    /// Arbitrary bytes, compared lexicographically.
    case bytes
    /// A signed 64-bit integer, compared numerically.
    case int64
    /// A UUID, compared by its 16 bytes.
    case uuid
}

/// One typed part of a key tuple.
public enum KeyPart: Hashable, Sendable, CustomStringConvertible {
    /// A string part.
    case string(String)
    /// A bytes part.
    case bytes([UInt8])
    /// An integer part.
    case int64(Int64)
    /// A UUID part.
    case uuid(UUIDValue)

    /// The type of this part.
    public var type: KeyPartType {
        switch self {
        case .string: .string
        case .bytes: .bytes
        case .int64: .int64
        case .uuid: .uuid
        }
    }

    public var description: String {
        switch self {
        case .string(let text): "\"\(text)\""
        case .bytes(let data):
            "0x"
                + data.map { byte in
                    let digits = Array("0123456789abcdef")
                    return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
                }.joined()
        case .int64(let number): String(number)
        case .uuid(let id): id.description
        }
    }
}

/// The key schema of a table: a fixed-length tuple of typed parts, of which the
/// leading ``partitionKeyLength`` parts form the partition key.
///
/// The partition key decides placement: every row that shares it lives in the same
/// partition, so a scan within one partition key touches one replica set. By default
/// the partition key is the whole key.
public struct KeySchema: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The largest number of parts a key may have.
    public static let maximumPartCount = 16

    /// The type of each part, in order.
    public let parts: [KeyPartType]
    /// How many leading parts form the partition key (1...parts.count).
    public let partitionKeyLength: Int

    /// Creates a schema, checking that it has 1...16 parts and a partition key of
    /// 1...parts.count of them.
    public init(_ parts: [KeyPartType], partitionKeyLength: Int? = nil) throws(KVError) {
        guard !parts.isEmpty, parts.count <= Self.maximumPartCount else {
            throw KVError(
                .invalidSchema,
                "a key schema has 1 to \(Self.maximumPartCount) parts, not \(parts.count)")
        }
        let length = partitionKeyLength ?? parts.count
        guard (1...parts.count).contains(length) else {
            throw KVError(
                .invalidSchema,
                "the partition key is 1 to \(parts.count) leading parts, not \(length)")
        }
        self.parts = parts
        self.partitionKeyLength = length
    }

    public var description: String {
        "(" + parts.map(\.rawValue).joined(separator: ", ") + "), partition key: \(partitionKeyLength)"
    }

    /// Checks that `key` has exactly this schema's arity and part types.
    public func validate(_ key: [KeyPart]) throws(KVError) {
        guard key.count == parts.count else {
            throw KVError(.keyArity, "the key has \(key.count) parts; the table's schema has \(parts.count)")
        }
        try validatePrefix(key)
    }

    /// Checks that `prefix` is no longer than the schema and that each part has its type.
    public func validatePrefix(_ prefix: [KeyPart]) throws(KVError) {
        guard prefix.count <= parts.count else {
            throw KVError(
                .keyArity, "the key prefix has \(prefix.count) parts; the table's schema has \(parts.count)")
        }
        for (index, part) in prefix.enumerated() where part.type != parts[index] {
            throw KVError(
                .keyPartType,
                "key part \(index + 1) is a \(part.type.rawValue); the schema says \(parts[index].rawValue)")
        }
    }
}

/// The order-preserving byte encoding of key tuples.
///
/// For any two tuples of one schema, comparing their encodings byte by byte gives the
/// same order as comparing the tuples part by part, and the encoding of a prefix is a
/// byte prefix of the encoding of every tuple that extends it.
///
/// - `string` and `bytes`: each `0x00` is escaped as `0x00 0xFF`, then `0x00 0x01`
///   terminates the part. A terminator sorts before any continuation, so `"a"` sorts
///   before `"a\0"` and `"ab"`, and because `0x00` is always followed by `0xFF` or
///   `0x01`, decoding is unambiguous. The terminator also makes the prefix `("a",)`
///   cover `("a", …)` but never `("ab", …)`.
/// - `int64`: the sign bit flipped, then 8 bytes big-endian.
/// - `uuid`: the 16 bytes.
public enum KeyEncoding {
    /// Encodes the parts of a tuple or a tuple prefix.
    public static func encode(_ parts: [KeyPart]) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(parts.count * 12)
        for part in parts { append(part, to: &output) }
        return output
    }

    /// Appends the encoding of one part.
    public static func append(_ part: KeyPart, to output: inout [UInt8]) {
        switch part {
        case .string(let text): appendEscaped(text.utf8, to: &output)
        case .bytes(let data): appendEscaped(data, to: &output)
        case .int64(let number):
            let biased = UInt64(bitPattern: number) ^ (1 << 63)
            for shift in stride(from: 56, through: 0, by: -8) {
                output.append(UInt8(truncatingIfNeeded: biased >> UInt64(shift)))
            }
        case .uuid(let id): output.append(contentsOf: id.bytes)
        }
    }

    private static func appendEscaped<Bytes: Sequence<UInt8>>(_ data: Bytes, to output: inout [UInt8]) {
        for byte in data {
            output.append(byte)
            if byte == 0 { output.append(0xFF) }
        }
        output.append(0x00)
        output.append(0x01)
    }

    /// Decodes a full tuple of `schema` from `bytes`, which must hold exactly one.
    public static func decode(_ bytes: [UInt8], schema: KeySchema) throws(KVError) -> [KeyPart] {
        var offset = 0
        var parts: [KeyPart] = []
        parts.reserveCapacity(schema.parts.count)
        for type in schema.parts {
            parts.append(try decodePart(type, from: bytes, at: &offset))
        }
        guard offset == bytes.count else {
            throw KVError(.corruptKey, "\(bytes.count - offset) bytes follow the last key part")
        }
        return parts
    }

    private static func decodePart(_ type: KeyPartType, from bytes: [UInt8], at offset: inout Int)
        throws(KVError)
        -> KeyPart
    {
        switch type {
        case .string, .bytes:
            var data: [UInt8] = []
            while true {
                guard offset < bytes.count else { throw KVError(.corruptKey, "a key part has no terminator") }
                let byte = bytes[offset]
                offset += 1
                if byte != 0 {
                    data.append(byte)
                    continue
                }
                guard offset < bytes.count else {
                    throw KVError(.corruptKey, "a key part ends inside an escape")
                }
                let marker = bytes[offset]
                offset += 1
                if marker == 0xFF {
                    data.append(0)
                } else if marker == 0x01 {
                    break
                } else {
                    throw KVError(
                        .corruptKey, "invalid escape 0x00 0x\(String(marker, radix: 16)) in a key part")
                }
            }
            if type == .bytes { return .bytes(data) }
            guard let text = String(validating: data, as: UTF8.self) else {
                throw KVError(.corruptKey, "a string key part is not valid UTF-8")
            }
            return .string(text)
        case .int64:
            guard bytes.count - offset >= 8 else {
                throw KVError(.corruptKey, "an int64 key part is truncated")
            }
            var biased: UInt64 = 0
            for index in offset..<(offset + 8) { biased = (biased << 8) | UInt64(bytes[index]) }
            offset += 8
            return .int64(Int64(bitPattern: biased ^ (1 << 63)))
        case .uuid:
            guard bytes.count - offset >= 16 else {
                throw KVError(.corruptKey, "a uuid key part is truncated")
            }
            let id = UUIDValue(bytes: Array(bytes[offset..<(offset + 16)]))!
            offset += 16
            return .uuid(id)
        }
    }

    /// The smallest byte string greater than every string that starts with `prefix`,
    /// or `nil` when no such string exists (the prefix is empty or all `0xFF`).
    public static func prefixSuccessor(_ prefix: [UInt8]) -> [UInt8]? {
        var result = prefix
        while let last = result.last {
            if last == 0xFF {
                result.removeLast()
            } else {
                result[result.count - 1] = last + 1
                return result
            }
        }
        return nil
    }
}

/// A half-open range of encoded keys: `lowerBound <= key < upperBound`, where a `nil`
/// upper bound means "to the end".
public struct EncodedKeyRange: Hashable, Sendable {
    /// The smallest key in the range.
    public var lowerBound: [UInt8]
    /// The first key past the range, or `nil` for no upper limit.
    public var upperBound: [UInt8]?

    /// Creates a range from explicit bounds.
    public init(lowerBound: [UInt8], upperBound: [UInt8]?) {
        self.lowerBound = lowerBound
        self.upperBound = upperBound
    }

    /// Every key.
    public static let all = EncodedKeyRange(lowerBound: [], upperBound: nil)

    /// Every key that starts with `prefix`.
    public static func prefixed(by prefix: [UInt8]) -> EncodedKeyRange {
        EncodedKeyRange(lowerBound: prefix, upperBound: KeyEncoding.prefixSuccessor(prefix))
    }

    /// Whether `key` lies in the range.
    public func contains(_ key: [UInt8]) -> Bool {
        guard !key.lexicographicallyPrecedes(lowerBound) else { return false }
        guard let upperBound else { return true }
        return key.lexicographicallyPrecedes(upperBound)
    }

    /// Whether the range can hold no key.
    public var isEmpty: Bool {
        guard let upperBound else { return false }
        return !lowerBound.lexicographicallyPrecedes(upperBound)
    }
}

/// A scan range over a table in kvlayer's sense: both ends inclusive, either end open,
/// and a bound shorter than the key (a prefix) covers every key with that prefix.
///
/// `start: ["a"]` begins at the first key whose first part is `"a"`; `end: ["c"]`
/// includes every key whose first part is `"c"`. `["a"]` never covers `["ab", …]`.
public struct KeyRange: Hashable, Sendable {
    /// The inclusive, possibly partial, lower bound; `nil` is open.
    public var start: [KeyPart]?
    /// The inclusive, possibly partial, upper bound; `nil` is open.
    public var end: [KeyPart]?

    /// Creates a range from two optional bounds.
    public init(start: [KeyPart]? = nil, end: [KeyPart]? = nil) {
        self.start = start
        self.end = end
    }

    /// Every key with `prefix` (the empty prefix means every key).
    public static func prefix(_ prefix: [KeyPart]) -> KeyRange {
        KeyRange(start: prefix, end: prefix)
    }

    /// The encoded range, after checking both bounds against `schema`.
    public func encoded(for schema: KeySchema) throws(KVError) -> EncodedKeyRange {
        if let start { try schema.validatePrefix(start) }
        if let end { try schema.validatePrefix(end) }
        let lower = start.map(KeyEncoding.encode) ?? []
        let upper = end.flatMap { KeyEncoding.prefixSuccessor(KeyEncoding.encode($0)) }
        return EncodedKeyRange(lowerBound: lower, upperBound: upper)
    }
}
