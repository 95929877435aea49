/// Appends the fixed- and variable-length integers and length-prefixed byte strings
/// used by every binary format of the store (contexts, stored objects, later the RPC).
///
/// Integers are big-endian when fixed-width, LEB128 when variable-length.
public struct BinaryWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    /// Creates an empty writer, reserving `capacity` bytes.
    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends one byte.
    public mutating func write(_ byte: UInt8) {
        bytes.append(byte)
    }

    /// Appends `value` as 8 big-endian bytes.
    public mutating func writeFixed(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// Appends `value` as LEB128.
    public mutating func writeVarint(_ value: UInt64) {
        var remaining = value
        while remaining >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: remaining) | 0x80)
            remaining >>= 7
        }
        bytes.append(UInt8(remaining))
    }

    /// Appends `value` zigzag-encoded as LEB128, so small negative numbers stay short.
    public mutating func writeSignedVarint(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    /// Appends the length of `data` as LEB128, then `data`.
    public mutating func writeLengthPrefixed<Bytes: Collection<UInt8>>(_ data: Bytes) {
        writeVarint(UInt64(data.count))
        bytes.append(contentsOf: data)
    }

    /// Replaces the four bytes at `offset` with `value`, big-endian: a length known only
    /// once what it measures is written.
    public mutating func overwriteFixed32(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= bytes.count, "overwriting past the bytes written")
        for index in 0..<4 {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> UInt32(24 - 8 * index))
        }
    }

    /// Appends raw bytes with no length.
    public mutating func writeRaw<Bytes: Sequence<UInt8>>(_ data: Bytes) {
        bytes.append(contentsOf: data)
    }
}

/// Reads what ``BinaryWriter`` wrote, checking every bound: malformed input is a
/// thrown ``BinaryReader/Failure``, never a crash or an out-of-bounds read.
public struct BinaryReader: Sendable {
    /// Why a read failed.
    public enum Failure: Error, Equatable, Sendable {
        /// The input ended before the value did.
        case truncated
        /// A LEB128 integer ran past 64 bits.
        case varintOverflow
        /// A length was larger than the limit the caller allowed.
        case lengthTooLarge(UInt64)
    }

    private let bytes: [UInt8]
    /// The offset of the next unread byte.
    public private(set) var offset: Int

    /// Creates a reader over `bytes`, starting at the beginning.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
    }

    /// Whether every byte has been read.
    public var isAtEnd: Bool { offset == bytes.count }

    /// The number of bytes not yet read.
    public var remainingCount: Int { bytes.count - offset }

    /// Reads one byte.
    public mutating func readByte() throws(Failure) -> UInt8 {
        guard offset < bytes.count else { throw .truncated }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// Reads 8 big-endian bytes.
    public mutating func readFixed() throws(Failure) -> UInt64 {
        guard remainingCount >= 8 else { throw .truncated }
        var value: UInt64 = 0
        for index in offset..<(offset + 8) {
            value = (value << 8) | UInt64(bytes[index])
        }
        offset += 8
        return value
    }

    /// Reads a LEB128 integer of at most 64 bits.
    public mutating func readVarint() throws(Failure) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readByte()
            if shift == 63 && byte > 1 { throw .varintOverflow }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 { throw .varintOverflow }
        }
    }

    /// Reads a zigzag LEB128 integer.
    public mutating func readSignedVarint() throws(Failure) -> Int64 {
        let raw = try readVarint()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// Reads a LEB128 length of at most `maximumLength`, then that many bytes.
    public mutating func readLengthPrefixed(maximumLength: Int = Int(Int32.max)) throws(Failure) -> [UInt8] {
        let length = try readVarint()
        guard length <= UInt64(maximumLength) else { throw .lengthTooLarge(length) }
        return try readRaw(count: Int(length))
    }

    /// Reads exactly `count` bytes.
    public mutating func readRaw(count: Int) throws(Failure) -> [UInt8] {
        guard count >= 0, remainingCount >= count else { throw .truncated }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }
}
