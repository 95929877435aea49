import KVCore

/// An access token as cluster metadata: its record and the stamp of the change that
/// made it, so that concurrent changes (a revocation on one node, a copy arriving late
/// on another) resolve the same way on every node.
public struct AccessTokenEntry: Hashable, Sendable {
    /// The token's stored record (a hash, never the token).
    public var record: AccessTokenRecord
    /// The stamp of the change that made this entry.
    public var stamp: MetadataStamp

    /// Creates an entry.
    public init(record: AccessTokenRecord, stamp: MetadataStamp) {
        self.record = record
        self.stamp = stamp
    }

    /// Whether this entry replaces `other` (of the same token) when two copies meet: the
    /// later stamp wins; at equal stamps (only restored backups make them) a revocation
    /// wins, then the encoding decides, the same on every node.
    public func supersedes(_ other: AccessTokenEntry) -> Bool {
        if stamp != other.stamp { return stamp > other.stamp }
        if record.revoked != other.record.revoked { return record.revoked }
        var mine = BinaryWriter(capacity: 128)
        var theirs = BinaryWriter(capacity: 128)
        encode(into: &mine)
        other.encode(into: &theirs)
        return theirs.bytes.lexicographicallyPrecedes(mine.bytes)
    }

    func encode(into writer: inout BinaryWriter) {
        writer.writeLengthPrefixed(Array(record.id.utf8))
        writer.writeLengthPrefixed(Array(record.name.utf8))
        writer.writeLengthPrefixed(record.hash)
        let levels = record.grants.levels.sorted { $0.key < $1.key }
        writer.writeVarint(UInt64(levels.count))
        for (scope, level) in levels {
            writer.writeLengthPrefixed(Array(scope.utf8))
            writer.write(level.rawValue)
        }
        writer.writeFixed(UInt64(bitPattern: record.createdAtMilliseconds))
        writer.writeFixed(UInt64(bitPattern: record.expiresAtMilliseconds ?? 0))
        writer.write(record.revoked ? 1 : 0)
        ClusterMetadata.encode(stamp, into: &writer)
    }

    static func decode(_ reader: inout BinaryReader) throws -> AccessTokenEntry {
        let id = try ClusterMetadata.text(&reader, maximumBytes: 16)
        let name = try ClusterMetadata.text(&reader, maximumBytes: AccessTokenRecord.maximumNameBytes)
        let hash = try reader.readLengthPrefixed(maximumLength: 32)
        guard hash.count == 32 else { throw KVError(.corruptObject, "a token's hash is not 32 bytes") }
        var levels: [String: AccessLevel] = [:]
        for _ in 0..<(try ClusterMetadata.count(&reader, atMost: AccessGrants.maximumScopes, "grants")) {
            let scope = try ClusterMetadata.text(&reader)
            guard let level = AccessLevel(rawValue: try reader.readByte()) else {
                throw KVError(.corruptObject, "a token has an unknown access level")
            }
            levels[scope] = level
        }
        let created = Int64(bitPattern: try reader.readFixed())
        let expires = Int64(bitPattern: try reader.readFixed())
        let revoked = try reader.readByte() == 1
        let stamp = MetadataStamp(
            time: try ClusterMetadata.counter(&reader, "stamp"),
            node: NodeID(rawValue: try reader.readFixed()))
        return AccessTokenEntry(
            record: AccessTokenRecord(
                id: id, name: name, hash: hash, grants: try AccessGrants(levels),
                createdAtMilliseconds: created,
                expiresAtMilliseconds: expires == 0 ? nil : expires, revoked: revoked),
            stamp: stamp)
    }
}

extension ClusterMetadata {
    /// Records a new token, or a change of one (its revocation), made by `node`.
    public mutating func record(_ token: AccessTokenRecord, by node: NodeID) throws(KVError) {
        if tokens[token.id] == nil, tokens.count >= Self.maximumTokens {
            throw KVError(
                .invalidRequest,
                "the cluster keeps at most \(Self.maximumTokens) token records, revoked ones included")
        }
        clock = Self.next(after: clock)
        tokens[token.id] = AccessTokenEntry(record: token, stamp: MetadataStamp(time: clock, node: node))
    }
}
