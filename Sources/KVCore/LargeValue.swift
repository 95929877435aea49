/// A value kept in chunks instead of inline: what a row's version records of it.
///
/// A large value's bytes live in fixed-size chunks, each a row of the system chunk table
/// (``LargeValue/chunkTable``) keyed by the value's ``id`` and the chunk's index, so the
/// cluster replicates, hands off, repairs and moves chunks like any row. The row that
/// names the value holds only this record: it is written after every chunk is durable on
/// `w` replicas, so no reader ever sees a value whose chunks are not there.
public struct LargeValue: Hashable, Sendable {
    /// The chunk size new values are cut into.
    public static let defaultChunkBytes = 1 << 20
    /// A streamed value up to this size is stored inline, as before; a larger one in chunks.
    public static let defaultInlineThreshold = 1 << 20
    /// The namespace of the store's own tables. User names cannot start with `_`.
    public static let systemNamespace = "_kv"
    /// The table that holds every chunk, keyed by `(value id: uuid, index: int64)` and
    /// partitioned by the id alone, so a value's chunks live together on its replicas
    /// (as minikeyvalue keeps a value whole on its volumes). Index `-1` holds the
    /// upload's ``UploadRecord``.
    public static let chunkTableName = "chunks"

    /// Names this value's chunks; fresh for every upload, so chunks are never shared
    /// between versions and an overwrite never touches the chunks of the old one.
    public var id: UUIDValue
    /// The value's length in bytes.
    public var length: Int64
    /// The size of every chunk but the last.
    public var chunkBytes: Int
    /// The MD5 of the whole value (HTTP `Content-MD5`, minikeyvalue's `Content-Md5`).
    public var md5: [UInt8]
    /// How many replicas its chunks were written to (the write's `n`).
    public var replicas: Int

    /// Creates a record.
    public init(id: UUIDValue, length: Int64, chunkBytes: Int, md5: [UInt8], replicas: Int) {
        self.id = id
        self.length = length
        self.chunkBytes = chunkBytes
        self.md5 = md5
        self.replicas = replicas
    }

    /// How many chunks the value has.
    public var chunkCount: Int {
        length == 0 ? 0 : Int((length - 1) / Int64(chunkBytes)) + 1
    }

    /// The byte range of chunk `index` within the value.
    public func chunkRange(_ index: Int) -> Range<Int64> {
        let start = Int64(index) * Int64(chunkBytes)
        // A record from a faulty peer may claim a length near the largest integer.
        let (end, overflow) = start.addingReportingOverflow(Int64(chunkBytes))
        return start..<(overflow ? length : min(length, end))
    }

    /// The chunk index under which an upload's ``UploadRecord`` is kept.
    public static let uploadRecordIndex = -1

    /// The key parts of chunk `index` in the chunk table.
    public func chunkKeyParts(_ index: Int) -> [KeyPart] {
        [.uuid(id), .int64(Int64(index))]
    }

    /// The MD5 as lowercase hexadecimal (minikeyvalue's form).
    public var md5Hex: String { Hexadecimal.lowercase(md5) }

    /// The stored form: format byte `1`, the 16-byte id, length, chunk size and replica
    /// count as LEB128, then the 16-byte MD5.
    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 48)
        writer.write(1)
        writer.writeRaw(id.bytes)
        writer.writeVarint(UInt64(length))
        writer.writeVarint(UInt64(chunkBytes))
        writer.writeVarint(UInt64(replicas))
        writer.writeRaw(md5)
        return writer.bytes
    }

    /// Reads ``encoded``; anything else is `storage.corrupt_object`.
    public init(encoded bytes: [UInt8]) throws(KVError) {
        do {
            var reader = BinaryReader(bytes)
            guard try reader.readByte() == 1, let id = UUIDValue(bytes: try reader.readRaw(count: 16)) else {
                throw KVError(.corruptObject, "a large value record has an unknown format")
            }
            let length = try reader.readVarint()
            let chunkBytes = try reader.readVarint()
            let replicas = try reader.readVarint()
            let md5 = try reader.readRaw(count: 16)
            guard reader.isAtEnd, length <= UInt64(Int64.max), (1...(1 << 30)).contains(chunkBytes),
                (1...UInt64(ReplicationDefaults.maximumReplicas)).contains(replicas)
            else {
                throw KVError(.corruptObject, "a large value record is malformed")
            }
            self.init(
                id: id, length: Int64(length), chunkBytes: Int(chunkBytes), md5: md5, replicas: Int(replicas))
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.corruptObject, "a large value record is truncated")
        }
    }

    /// The descriptor of the chunk table every node knows without being told: its
    /// generation is fixed, so replicas accept chunk writes before any metadata arrives.
    public static let chunkTable = TableDescriptor(
        name: TableName(systemNamespace: systemNamespace, table: chunkTableName),
        schema: try! KeySchema([.uuid, .int64], partitionKeyLength: 1),
        defaults: ReplicationDefaults(),
        generation: 0x6b76_5f63_6875_6e6b)
}

extension TableName {
    /// A name in the store's own namespace, which user names cannot reach (they cannot
    /// start with `_`).
    init(systemNamespace namespace: String, table: String) {
        self.init(uncheckedNamespace: namespace, table: table)
    }

    /// Whether the name belongs to the store itself, not to a user.
    public var isSystem: Bool { namespace.hasPrefix("_") }
}

/// One chunk of a large value as its row holds it: format byte `1`, the SHA-256 of the
/// data (checked on every read, so a chunk damaged on disk is noticed and read from
/// another replica), when its upload began, then the data.
public struct ChunkRecord: Hashable, Sendable {
    /// The SHA-256 of ``data``.
    public var checksum: [UInt8]
    /// When the upload that wrote it began (milliseconds since the Unix epoch): orphaned
    /// chunks are collected only long after.
    public var uploadStartedMilliseconds: Int64
    /// The chunk's bytes.
    public var data: [UInt8]

    /// Creates a record.
    public init(checksum: [UInt8], uploadStartedMilliseconds: Int64, data: [UInt8]) {
        self.checksum = checksum
        self.uploadStartedMilliseconds = uploadStartedMilliseconds
        self.data = data
    }

    /// Bytes before the data.
    public static let headerBytes = 1 + 32 + 8

    /// The stored form.
    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: Self.headerBytes + data.count)
        writer.write(1)
        writer.writeRaw(checksum)
        writer.writeFixed(UInt64(bitPattern: uploadStartedMilliseconds))
        writer.writeRaw(data)
        return writer.bytes
    }

    /// The start of a record built in place: the header, with room for `dataCapacity`
    /// bytes of data to be appended and the checksum to be filled in by
    /// ``seal(_:checksum:)``. A chunk's bytes are then copied once, into the buffer the
    /// stored row is made from.
    public static func startEncoding(uploadStartedMilliseconds: Int64, dataCapacity: Int) -> [UInt8] {
        var writer = BinaryWriter(capacity: headerBytes + dataCapacity)
        writer.write(1)
        writer.writeRaw([UInt8](repeating: 0, count: 32))
        writer.writeFixed(UInt64(bitPattern: uploadStartedMilliseconds))
        return writer.bytes
    }

    /// Fills in the checksum of a record built with ``startEncoding(uploadStartedMilliseconds:dataCapacity:)``.
    public static func seal(_ encoded: inout [UInt8], checksum: [UInt8]) {
        encoded.replaceSubrange(1..<33, with: checksum)
    }

    /// The checksum and upload start of an encoded record, without copying its data;
    /// `nil` when the bytes are not a chunk record at all.
    public static func header(of bytes: [UInt8]) -> (
        checksum: ArraySlice<UInt8>, uploadStartedMilliseconds: Int64
    )? {
        guard bytes.count >= headerBytes, bytes[0] == 1 else { return nil }
        let started = bytes[33..<41].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return (bytes[1..<33], Int64(bitPattern: started))
    }

    /// Reads ``encoded``; `nil` when the bytes are not a chunk record at all.
    public init?(encoded bytes: [UInt8]) {
        guard bytes.count >= Self.headerBytes, bytes[0] == 1 else { return nil }
        var reader = BinaryReader(bytes)
        _ = try? reader.readByte()
        guard let checksum = try? reader.readRaw(count: 32), let started = try? reader.readFixed() else {
            return nil
        }
        self.init(
            checksum: checksum, uploadStartedMilliseconds: Int64(bitPattern: started),
            data: Array(bytes[Self.headerBytes...]))
    }
}

/// What a node collecting orphaned chunks needs to know of an upload, written before
/// its first chunk: the row it was for and when it began.
///
/// Chunks are collected once no version of that row names the value any more, and
/// only long after the upload began (uploads give up well before), so an upload still
/// running never loses its chunks.
public struct UploadRecord: Hashable, Sendable {
    /// The row the value was written for.
    public var table: TableName
    /// Its encoded key.
    public var encodedKey: [UInt8]
    /// When the upload began (milliseconds since the Unix epoch, the coordinator's clock).
    public var startedMilliseconds: Int64
    /// How many replicas the chunks were written to.
    public var replicas: Int

    /// Creates a record.
    public init(table: TableName, encodedKey: [UInt8], startedMilliseconds: Int64, replicas: Int) {
        self.table = table
        self.encodedKey = encodedKey
        self.startedMilliseconds = startedMilliseconds
        self.replicas = replicas
    }

    /// The stored form: format byte `1`, the start (8 bytes), the replica count (LEB128),
    /// then namespace, table and key, each length-prefixed.
    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 32 + encodedKey.count)
        writer.write(1)
        writer.writeFixed(UInt64(bitPattern: startedMilliseconds))
        writer.writeVarint(UInt64(replicas))
        writer.writeLengthPrefixed(Array(table.namespace.utf8))
        writer.writeLengthPrefixed(Array(table.table.utf8))
        writer.writeLengthPrefixed(encodedKey)
        return writer.bytes
    }

    /// Reads ``encoded``; `nil` for anything else.
    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard (try? reader.readByte()) == 1, let started = try? reader.readFixed(),
            let replicas = try? reader.readVarint(), (1...16).contains(replicas),
            let namespace = try? reader.readLengthPrefixed(maximumLength: 64),
            let table = try? reader.readLengthPrefixed(maximumLength: 64),
            let key = try? reader.readLengthPrefixed(maximumLength: 1 << 20), reader.isAtEnd,
            let name = try? TableName(
                namespace: String(decoding: namespace, as: UTF8.self),
                table: String(decoding: table, as: UTF8.self))
        else { return nil }
        self.init(
            table: name, encodedKey: key, startedMilliseconds: Int64(bitPattern: started),
            replicas: Int(replicas))
    }
}

/// The bytes of a value that arrives in pieces (an HTTP body read as it comes).
public protocol ValueBody: Sendable {
    /// The next piece, or `nil` at the end. Throws `request.incomplete_body` when the
    /// sender stopped before the end.
    func next() async throws(KVError) -> [UInt8]?
}

/// Receives the pieces of a value read back, in order; waiting in it slows the reader
/// down (backpressure).
public typealias ValueSink = @Sendable (ArraySlice<UInt8>) async throws(KVError) -> Void
