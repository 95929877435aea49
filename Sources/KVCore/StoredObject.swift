/// The causal state of one row as stored by a replica: its siblings and their history.
public typealias StoredObject = DottedVersionVectorSet<Sibling>

extension DottedVersionVectorSet where Element == Sibling {
    /// The values a read returns: every live sibling that is not a tombstone.
    public var liveValues: [Sibling] { values.filter { !$0.isTombstone } }

    /// Whether every live sibling is a tombstone (or nothing was ever written), so a read
    /// answers "absent".
    public var isDeleted: Bool { values.allSatisfy(\.isTombstone) }

    /// The same causal state with every value's bytes left out (content types, timestamps
    /// and tombstones kept): what a keys-only scan needs to merge replicas.
    public var withoutValueBytes: StoredObject {
        let stripped = entries.map { entry in
            Entry(
                actor: entry.actor, counter: entry.counter,
                values: entry.values.map { sibling in
                    var copy = sibling
                    if let value = sibling.value, value.largeValue == nil {
                        copy.value = RowValue(bytes: [], contentType: value.contentType)
                    }
                    return copy
                })
        }
        return StoredObject(validatedEntries: stripped) ?? self
    }
}

/// The binary storage format of a ``StoredObject``: what every engine holds as the
/// value of a data row and what replicas exchange.
///
/// `0x01` (format version), LEB128 entry count, then per entry: node id (8 bytes,
/// big-endian), incarnation (LEB128), counter (LEB128), value count (LEB128), then per
/// value a flags byte (bit 0: tombstone, bit 1: a client request id follows, bit 2: the
/// bytes are a ``LargeValue`` record, bit 3: an expiry follows, bit 4: last-writer-wins),
/// the timestamp (zigzag LEB128), the expiry (zigzag LEB128) if flagged, the request id
/// if flagged and, unless a tombstone, the content type and the bytes, each
/// length-prefixed. Objects without expiries or last-writer-wins versions encode exactly
/// as before those bits existed.
///
/// Decoding validates everything (order, counts, UTF-8) and reports
/// `storage.corrupt_object` rather than trusting the bytes.
public enum StoredObjectCodec {
    /// The format version written and accepted.
    public static let formatVersion: UInt8 = 1

    /// Encodes `object`, into a buffer of exactly its size.
    public static func encode(_ object: StoredObject) -> [UInt8] {
        var writer = BinaryWriter(capacity: encodedCount(object))
        write(object, to: &writer)
        return writer.bytes
    }

    /// Encodes `object` as ``encode(_:)`` encodes `object.withoutValueBytes`, without
    /// building that copy first: what every write hashes for the anti-entropy index.
    public static func encodeWithoutValueBytes(_ object: StoredObject) -> [UInt8] {
        var writer = BinaryWriter(capacity: encodedCount(object, valueBytes: false))
        write(object, to: &writer, valueBytes: false)
        return writer.bytes
    }

    /// Appends `object` as ``encode(_:)`` encodes it, with no buffer of its own: the
    /// node-to-node protocol writes objects straight into a frame after
    /// ``encodedCount(_:)``.
    public static func write(_ object: StoredObject, to writer: inout BinaryWriter) {
        write(object, to: &writer, valueBytes: true)
    }

    /// The number of bytes ``encode(_:)`` makes of `object`, counted without encoding.
    public static func encodedCount(_ object: StoredObject) -> Int {
        encodedCount(object, valueBytes: true)
    }

    /// With `valueBytes` false, each inline value's bytes are written as empty (large
    /// value records are kept), exactly as for ``StoredObject/withoutValueBytes``.
    private static func write(_ object: StoredObject, to writer: inout BinaryWriter, valueBytes: Bool) {
        writer.write(formatVersion)
        writer.writeVarint(UInt64(object.entries.count))
        for entry in object.entries {
            writer.writeFixed(entry.actor.node.rawValue)
            writer.writeVarint(UInt64(entry.actor.incarnation))
            writer.writeVarint(entry.counter)
            writer.writeVarint(UInt64(entry.values.count))
            for sibling in entry.values { write(sibling, to: &writer, valueBytes: valueBytes) }
        }
    }

    /// What ``write(_:to:valueBytes:)`` appends, counted; it must follow every branch
    /// of the writers (a property test compares the two).
    private static func encodedCount(_ object: StoredObject, valueBytes: Bool) -> Int {
        var count = 1 + varintCount(UInt64(object.entries.count))
        for entry in object.entries {
            count += 8 + varintCount(UInt64(entry.actor.incarnation)) + varintCount(entry.counter)
            count += varintCount(UInt64(entry.values.count))
            for sibling in entry.values {
                count += encodedCount(sibling, valueBytes: valueBytes)
            }
        }
        return count
    }

    private static func encodedCount(_ sibling: Sibling, valueBytes: Bool) -> Int {
        var count = 1 + varintCount(zigzag(sibling.timestampMilliseconds))
        if !sibling.isTombstone, let expiry = sibling.expiresAtMilliseconds {
            count += varintCount(zigzag(expiry))
        }
        if let requestID = sibling.requestID { count += lengthPrefixedCount(requestID.utf8.count) }
        if let value = sibling.value {
            count += lengthPrefixedCount(value.contentType.utf8.count)
            if let large = value.largeValue {
                count += lengthPrefixedCount(large.encoded.count)
            } else {
                count += lengthPrefixedCount(valueBytes ? value.bytes.count : 0)
            }
        }
        return count
    }

    /// The bytes of `value` as LEB128.
    private static func varintCount(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }

    private static func lengthPrefixedCount(_ length: Int) -> Int {
        varintCount(UInt64(length)) + length
    }

    private static func zigzag(_ value: Int64) -> UInt64 {
        UInt64(bitPattern: (value << 1) ^ (value >> 63))
    }

    /// Appends one sibling: a flags byte (bit 0: tombstone, bit 1: request id, bit 2:
    /// large value record, bit 3: expiry, bit 4: last-writer-wins), the timestamp (zigzag
    /// LEB128), the expiry if any, the request id if any and, unless a tombstone, the
    /// content type and the bytes, each length-prefixed. The node-to-node protocol
    /// carries proposed writes the same way.
    public static func write(_ sibling: Sibling, to writer: inout BinaryWriter) {
        write(sibling, to: &writer, valueBytes: true)
    }

    private static func write(_ sibling: Sibling, to writer: inout BinaryWriter, valueBytes: Bool) {
        let large = sibling.value?.largeValue
        let expiry = sibling.isTombstone ? nil : sibling.expiresAtMilliseconds
        writer.write(
            (sibling.isTombstone ? 1 : 0) | (sibling.requestID == nil ? 0 : 2) | (large == nil ? 0 : 4)
                | (expiry == nil ? 0 : 8) | (sibling.resolvesByLastWriter ? 16 : 0))
        writer.writeSignedVarint(sibling.timestampMilliseconds)
        if let expiry { writer.writeSignedVarint(expiry) }
        if let requestID = sibling.requestID { writer.writeLengthPrefixed(requestID.utf8) }
        if let value = sibling.value {
            writer.writeLengthPrefixed(value.contentType.utf8)
            if let large {
                writer.writeLengthPrefixed(large.encoded)
            } else if valueBytes {
                writer.writeLengthPrefixed(value.bytes)
            } else {
                writer.writeVarint(0)
            }
        }
    }

    /// Reads what ``write(_:to:)`` wrote. Invalid contents are `storage.corrupt_object`;
    /// a truncated input is a ``BinaryReader/Failure``.
    public static func readSibling(from reader: inout BinaryReader) throws -> Sibling {
        let flags = try reader.readByte()
        guard flags <= 31, flags & 5 != 5, flags & 9 != 9 else {
            throw KVError(.corruptObject, "stored sibling has unknown flags \(flags)")
        }
        let timestamp = try reader.readSignedVarint()
        // Last-writer-wins raises a new write's timestamp above the latest stored one.
        guard Sibling.timestampRange.contains(timestamp) else {
            throw KVError(.corruptObject, "stored sibling has the timestamp \(timestamp)")
        }
        let expiry: Int64? = flags & 8 != 0 ? try reader.readSignedVarint() : nil
        let lastWriterWins = flags & 16 != 0
        var requestID: String?
        if flags & 2 != 0 {
            let bytes = try reader.readLengthPrefixed(maximumLength: Sibling.maximumRequestIDBytes)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw KVError(.corruptObject, "stored request id is not UTF-8")
            }
            requestID = text
        }
        if flags & 1 != 0 {
            return .tombstone(at: timestamp, requestID: requestID, resolvesByLastWriter: lastWriterWins)
        }
        let contentTypeBytes = try reader.readLengthPrefixed(maximumLength: 1024)
        guard let contentType = String(validating: contentTypeBytes, as: UTF8.self) else {
            throw KVError(.corruptObject, "stored content type is not UTF-8")
        }
        let data = try reader.readLengthPrefixed()
        let value =
            flags & 4 != 0
            ? RowValue(largeValue: try LargeValue(encoded: data), contentType: contentType)
            : RowValue(bytes: data, contentType: contentType)
        return Sibling(
            value: value, timestampMilliseconds: timestamp, requestID: requestID,
            expiresAtMilliseconds: expiry,
            resolvesByLastWriter: lastWriterWins)
    }

    /// Decodes bytes written by ``encode(_:)``.
    public static func decode(_ bytes: [UInt8]) throws(KVError) -> StoredObject {
        do {
            var reader = BinaryReader(bytes)
            let version = try reader.readByte()
            guard version == formatVersion else {
                throw KVError(.corruptObject, "unknown stored object format version \(version)")
            }
            let entryCount = try reader.readVarint()
            // Each entry takes at least 11 bytes, so a larger count cannot be genuine.
            guard entryCount <= UInt64(reader.remainingCount / 11) else {
                throw KVError(.corruptObject, "stored object claims \(entryCount) entries")
            }
            var entries: [StoredObject.Entry] = []
            for _ in 0..<entryCount {
                let node = NodeID(rawValue: try reader.readFixed())
                let incarnation = try reader.readVarint()
                let counter = try reader.readVarint()
                let valueCount = try reader.readVarint()
                guard incarnation <= UInt64(UInt32.max), valueCount <= counter,
                    counter <= VersionVector.maximumCounter,
                    valueCount <= UInt64(reader.remainingCount / 2)
                else {
                    throw KVError(.corruptObject, "stored object has an invalid entry")
                }
                var values: [Sibling] = []
                for _ in 0..<valueCount { values.append(try readSibling(from: &reader)) }
                entries.append(
                    StoredObject.Entry(
                        actor: ActorID(node: node, incarnation: UInt32(incarnation)), counter: counter,
                        values: values))
            }
            guard reader.isAtEnd else { throw KVError(.corruptObject, "stored object has trailing bytes") }
            guard let object = StoredObject(validatedEntries: entries) else {
                throw KVError(.corruptObject, "stored object's entries are not in actor order")
            }
            return object
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.corruptObject, "stored object is truncated or malformed", underlying: error)
        }
    }
}
