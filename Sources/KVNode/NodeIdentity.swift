import KVCore
import KVStorage

/// Who a node is, as recorded in its metadata keyspace when its data directory is
/// created: its permanent id, incarnation, the secret that seals causal contexts and the
/// partition count of its key space.
public struct NodeIdentity: Sendable, Hashable {
    /// The metadata key of the record.
    static let metadataKey = Array("node/identity".utf8)
    static let formatVersion: UInt8 = 1

    /// The node's permanent id.
    public var nodeID: NodeID
    /// The incarnation under which this node coordinates writes.
    public var incarnation: UInt32
    /// The 16-byte key of ``ContextSealer``.
    public var contextSecret: [UInt8]
    /// Partitions of the key space.
    public var partitionCount: Int

    /// The actor id of this node's writes.
    public var actor: ActorID { ActorID(node: nodeID, incarnation: incarnation) }

    func encoded() -> [UInt8] {
        var writer = BinaryWriter()
        writer.write(Self.formatVersion)
        writer.writeFixed(nodeID.rawValue)
        writer.writeVarint(UInt64(incarnation))
        writer.writeLengthPrefixed(contextSecret)
        writer.writeVarint(UInt64(partitionCount))
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) throws(KVError) -> NodeIdentity {
        do {
            var reader = BinaryReader(bytes)
            guard try reader.readByte() == formatVersion else {
                throw KVError(.corruptObject, "the node identity record has an unknown format")
            }
            let node = NodeID(rawValue: try reader.readFixed())
            let incarnation = try reader.readVarint()
            let secret = try reader.readLengthPrefixed(maximumLength: 16)
            let partitions = try reader.readVarint()
            guard secret.count == 16, incarnation <= UInt64(UInt32.max), partitions <= 1 << 16, reader.isAtEnd
            else {
                throw KVError(.corruptObject, "the node identity record is invalid")
            }
            return NodeIdentity(
                nodeID: node, incarnation: UInt32(incarnation), contextSecret: secret,
                partitionCount: Int(partitions))
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.corruptObject, "the node identity record is truncated", underlying: error)
        }
    }

    /// Reads the identity from `engine`, or creates and stores a new one (a fresh node id
    /// and secret from `random`, incarnation 1) when the data directory is new.
    ///
    /// A node whose directory is empty therefore never reuses an earlier identity's
    /// counters: it is a new actor.
    public static func loadOrCreate<Random: RandomNumberGenerator>(
        from engine: any StorageEngine, partitionCount: Int, random: inout Random
    ) throws(KVError) -> NodeIdentity {
        try storageWork("loading the node identity") {
            if let stored = try engine.get(metadataKey, in: .metadata) {
                return try decode(stored)
            }
            let identity = NodeIdentity(
                nodeID: NodeID(rawValue: random.next()), incarnation: 1,
                contextSecret: (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) },
                partitionCount: partitionCount)
            var batch = WriteBatch()
            batch.put(metadataKey, identity.encoded(), in: .metadata)
            try engine.write(batch)
            return identity
        }
    }
}
