import KVCluster
import KVCore

/// The node-to-node protocol's pieces below a message: transfer and scan pages, keys,
/// objects, proposed writes, quorums, errors and the bounded readers every decoder
/// uses. ``WireCodec``'s message switch (WireCodec.swift) is built from these.
extension WireCodec {
    static func encode(_ page: PartitionScanPage, into writer: inout BinaryWriter) {
        writer.write(page.truncated ? 1 : 0)
        if let error = page.error {
            writer.write(1)
            encode(error, into: &writer)
        } else {
            writer.write(0)
        }
        writer.writeVarint(UInt64(page.rows.count))
        for row in page.rows {
            writer.writeLengthPrefixed(row.key)
            writeObject(row.object, into: &writer)
        }
    }

    static func decodePage(_ reader: inout BinaryReader) throws -> PartitionScanPage {
        let truncated = try readBool(&reader)
        let error: KVError? = try readBool(&reader) ? try decodeError(&reader) : nil
        let count = try reader.readVarint()
        // Each row takes at least two length bytes and an object's format byte.
        guard count <= UInt64(reader.remainingCount / 3) else {
            throw WireProtocolError.malformed("\(count) scanned rows")
        }
        var rows: [(key: [UInt8], object: StoredObject)] = []
        for _ in 0..<count {
            let key = try reader.readLengthPrefixed(maximumLength: 64 << 10)
            rows.append((key, try decodeObject(&reader)))
        }
        return PartitionScanPage(rows: rows, truncated: truncated, error: error)
    }

    static func readPartition(_ reader: inout BinaryReader) throws -> PartitionID {
        let partition = try reader.readVarint()
        guard partition <= UInt64(UInt32.max) else {
            throw WireProtocolError.malformed("partition \(partition)")
        }
        return PartitionID(rawValue: UInt32(partition))
    }

    /// A counted list of distinct indexes below `limit`, in ascending order.
    static func readIndexes(_ reader: inout BinaryReader, below limit: Int) throws -> [Int] {
        let count = try reader.readVarint()
        guard count <= UInt64(limit) else { throw WireProtocolError.malformed("\(count) indexes") }
        var indexes: [Int] = []
        for _ in 0..<count {
            let index = try reader.readVarint()
            guard index < UInt64(limit), indexes.last.map({ UInt64($0) < index }) ?? true else {
                throw WireProtocolError.malformed("index \(index) out of order or range")
            }
            indexes.append(Int(index))
        }
        return indexes
    }

    // MARK: - Fields

    static func encode(_ key: ReplicaKey, into writer: inout BinaryWriter) {
        writer.writeVarint(UInt64(key.partition.rawValue))
        writer.writeLengthPrefixed(key.bytes)
        writer.writeVarint(key.generation)
    }

    static func decodeKey(_ reader: inout BinaryReader) throws -> ReplicaKey {
        let partition = try reader.readVarint()
        guard partition <= UInt64(UInt32.max) else {
            throw WireProtocolError.malformed("partition \(partition)")
        }
        // Engine keys are bounded by the key limit plus the table and partition prefix.
        let bytes = try reader.readLengthPrefixed(maximumLength: 64 << 10)
        return ReplicaKey(
            partition: PartitionID(rawValue: UInt32(partition)), bytes: bytes,
            generation: try reader.readVarint())
    }

    /// An object, length-prefixed, written straight into the frame rather than encoded
    /// on its own and copied in.
    static func writeObject(_ object: StoredObject, into writer: inout BinaryWriter) {
        writer.writeVarint(UInt64(StoredObjectCodec.encodedCount(object)))
        StoredObjectCodec.write(object, to: &writer)
    }

    static func decodeObject(_ reader: inout BinaryReader) throws -> StoredObject {
        try StoredObjectCodec.decode(try reader.readLengthPrefixed())
    }

    static func encode(_ write: ProposedWrite, into writer: inout BinaryWriter) {
        StoredObjectCodec.write(write.sibling, to: &writer)
        if let context = write.context {
            writer.write(1)
            context.write(to: &writer)
        } else {
            writer.write(0)
        }
        switch write.condition {
        case .none: writer.write(0)
        case .ifAbsent: writer.write(1)
        case .ifMatch(let tag):
            writer.write(2)
            writer.writeLengthPrefixed(Array(tag.utf8))
        }
        writer.writeFixed(write.generation)
        if let delta = write.increment {
            writer.write(1)
            writer.writeSignedVarint(delta)
        } else {
            writer.write(0)
        }
    }

    static func decodeWrite(_ reader: inout BinaryReader) throws -> ProposedWrite {
        let sibling = try StoredObjectCodec.readSibling(from: &reader)
        var context: VersionVector?
        if try readBool(&reader) {
            context = try VersionVector.read(
                from: &reader, maximumEntries: ContextSealer.maximumEntryCount, invalid: .invalidContext)
        }
        let condition: WriteCondition
        switch try reader.readByte() {
        case 0: condition = .none
        case 1: condition = .ifAbsent
        case 2: condition = .ifMatch(try readText(&reader, maximumBytes: 8192))
        case let tag: throw WireProtocolError.malformed("unknown write condition \(tag)")
        }
        let generation = try reader.readFixed()
        let increment: Int64? = try readBool(&reader) ? try reader.readSignedVarint() : nil
        return ProposedWrite(
            sibling: sibling, context: context, condition: condition, generation: generation,
            increment: increment)
    }

    static func encode(_ quorum: Quorum, into writer: inout BinaryWriter) {
        for number in [quorum.n, quorum.r, quorum.w, quorum.dw, quorum.pr, quorum.pw] {
            writer.writeVarint(UInt64(number))
        }
    }

    static func decodeQuorum(_ reader: inout BinaryReader) throws -> Quorum {
        var numbers: [Int] = []
        for _ in 0..<6 {
            let number = try reader.readVarint()
            guard number <= UInt64(ReplicationDefaults.maximumReplicas) else {
                throw WireProtocolError.malformed("quorum value \(number)")
            }
            numbers.append(Int(number))
        }
        return Quorum(
            n: numbers[0], r: numbers[1], w: numbers[2], dw: numbers[3], pr: numbers[4], pw: numbers[5])
    }

    static func encode(_ error: KVError, into writer: inout BinaryWriter) {
        writer.writeLengthPrefixed(Array(error.code.rawValue.utf8))
        writer.writeLengthPrefixed(Array(error.message.utf8))
    }

    static func decodeError(_ reader: inout BinaryReader) throws -> KVError {
        let code = try readText(&reader, maximumBytes: 128)
        return KVError(KVError.Code(rawValue: code), try readText(&reader, maximumBytes: 16 << 10))
    }

    static func readText(_ reader: inout BinaryReader, maximumBytes: Int) throws -> String {
        let bytes = try reader.readLengthPrefixed(maximumLength: maximumBytes)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw WireProtocolError.malformed("text is not UTF-8")
        }
        return text
    }

    /// A nonce or MAC of the handshake: exactly ``PeerHandshake/tokenBytes`` bytes.
    static func readHandshakeBytes(_ reader: inout BinaryReader) throws -> [UInt8] {
        let bytes = try reader.readLengthPrefixed(maximumLength: PeerHandshake.tokenBytes)
        guard bytes.count == PeerHandshake.tokenBytes else {
            throw WireProtocolError.malformed("a handshake field of \(bytes.count) bytes")
        }
        return bytes
    }

    static func readBool(_ reader: inout BinaryReader) throws -> Bool {
        switch try reader.readByte() {
        case 0: return false
        case 1: return true
        case let byte: throw WireProtocolError.malformed("flag byte \(byte)")
        }
    }
}
