import Glibc
import KVCore
import KVReplica
import KVStorage

/// Who a node is, as recorded in its metadata keyspace when its data directory is
/// created: its permanent id, incarnation, the secret that seals causal contexts and the
/// partition count of its key space.
public struct NodeIdentity: Sendable, Hashable {
    /// The metadata key of the record.
    static let metadataKey = MetadataKeys.nodeIdentity
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

    /// The node id of a named node: the stable hash of its name, so a node rebuilt on an
    /// empty disk under the same name takes its old place in the cluster.
    public static func nodeID(named name: String) -> NodeID {
        NodeID(rawValue: max(1, StableHash.hash(Array("node-name:\(name)".utf8))))
    }

    /// Reads the identity from `engine`, or creates one when the data directory is new
    /// (the id of `nodeName`, or a random one; a fresh secret from `random`), then takes
    /// a new incarnation and stores it before anything is served.
    ///
    /// Every start takes a new incarnation, at least the wall-clock second
    /// (`clockMilliseconds`) and above the stored one. A named node on an empty directory
    /// may be a wiped node whose previous life began this very second, so it waits for
    /// the next second first (at most one, only then). The incarnation is part of the actor id that
    /// makes dots, and a node cannot tell a directory that lost writes (wiped, restored
    /// from a backup, on a disk that dropped its cache) from one that did not: counters
    /// of an earlier life on other replicas would otherwise be reused for new writes, and
    /// a reused dot silently hides one of the two writes. The cost is one more entry in
    /// the clocks of rows written after each restart.
    public static func loadOrCreate<Random: RandomNumberGenerator>(
        from engine: any StorageEngine, partitionCount: Int, nodeName: String? = nil,
        clockMilliseconds: () -> Int64, random: inout Random
    ) throws(KVError) -> NodeIdentity {
        let named = nodeName.map(nodeID(named:))
        let stored = try storageWork("loading the node identity") {
            try engine.get(metadataKey, in: .metadata)
        }
        var identity: NodeIdentity
        var startSeconds = UInt32(clamping: clockMilliseconds() / 1000)
        if stored == nil, named != nil {
            let now = clockMilliseconds()
            usleep(UInt32(clamping: (1000 - now % 1000) * 1000))
            startSeconds = UInt32(clamping: now / 1000 + 1)
        }
        if let stored {
            identity = try decode(stored)
            if let named, named != identity.nodeID {
                throw KVError(
                    .invalidRequest,
                    "the data directory belongs to node \(identity.nodeID), not to the node named '\(nodeName ?? "")' (\(named)); give its own directory"
                )
            }
            guard identity.incarnation < UInt32.max else {
                throw KVError(.corruptObject, "the node identity record has run out of incarnations")
            }
            identity.incarnation = max(identity.incarnation + 1, startSeconds)
        } else {
            identity = NodeIdentity(
                nodeID: named ?? NodeID(rawValue: random.next()), incarnation: max(1, startSeconds),
                contextSecret: (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) },
                partitionCount: partitionCount)
        }
        var batch = WriteBatch()
        batch.put(metadataKey, identity.encoded(), in: .metadata)
        try storageWork("storing the node identity") { try engine.write(batch) }
        return identity
    }
}
