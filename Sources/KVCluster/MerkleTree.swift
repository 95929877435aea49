import KVCore

/// The anti-entropy hash tree of one partition on one replica.
///
/// Every row contributes `hash(key, objectHash)` to one of ``leafCount`` leaves (chosen
/// by a hash of its key). A leaf's hash is the XOR of its rows' contributions, a
/// segment's the XOR of its ``leavesPerSegment`` leaves, and the root the XOR of every
/// leaf. XOR makes every update O(1) and order-free: a write XORs the row's old
/// contribution out and its new one in, so the tree never needs a full rebuild while
/// the node runs, and two replicas holding the same rows have the same tree whatever
/// order the writes came in.
///
/// Replicas compare roots, then segments, then leaves, and exchange keys only for the
/// leaves that differ.
public struct MerkleTree: Hashable, Sendable {
    /// Leaves per tree.
    public static let leafCount = 1024
    /// Leaves per segment.
    public static let leavesPerSegment = 32
    /// Segments per tree.
    public static let segmentCount = leafCount / leavesPerSegment
    /// Every leaf, in order: what a listing of a whole partition asks for. One shared
    /// array, so that a listing given it can tell at once that it wants every leaf.
    public static let everyLeaf = Array(0..<leafCount)

    /// The leaf hashes.
    public private(set) var leaves: [UInt64]
    /// Rows in the tree.
    public private(set) var count = 0

    /// An empty tree.
    public init() {
        leaves = Array(repeating: 0, count: Self.leafCount)
    }

    /// The hash of an object as anti-entropy compares it: its causal structure (dots,
    /// timestamps, request ids, tombstones, content types), without value bytes. A dot
    /// names one write, so replicas with the same dots hold the same values; leaving the
    /// bytes out keeps hashing a 16 MiB row as cheap as a small one.
    public static func objectHash(_ object: StoredObject) -> UInt64 {
        StableHash.hash(StoredObjectCodec.encodeWithoutValueBytes(object))
    }

    /// The leaf of a row.
    public static func leaf(of key: [UInt8]) -> Int {
        Int(StableHash.hash(key) % UInt64(leafCount))
    }

    /// What a row adds to its leaf.
    static func contribution(_ key: [UInt8], _ objectHash: UInt64) -> UInt64 {
        var writer = BinaryWriter(capacity: key.count + 8)
        writer.writeFixed(objectHash)
        writer.writeRaw(key[...])
        // Never 0, so a row always changes its leaf.
        return StableHash.hash(writer.bytes) | 1
    }

    /// Records that a row changed from `old` to `new` object hash (`nil`: absent).
    public mutating func update(_ key: [UInt8], from old: UInt64?, to new: UInt64?) {
        guard old != new else { return }
        let leaf = Self.leaf(of: key)
        if let old {
            leaves[leaf] ^= Self.contribution(key, old)
            count -= 1
        }
        if let new {
            leaves[leaf] ^= Self.contribution(key, new)
            count += 1
        }
    }

    /// The root hash.
    public var root: UInt64 { leaves.reduce(0, ^) }

    /// The hash of every segment.
    public var segmentHashes: [UInt64] {
        (0..<Self.segmentCount).map { segment in
            leaves[segment * Self.leavesPerSegment..<(segment + 1) * Self.leavesPerSegment].reduce(0, ^)
        }
    }

    /// The leaf hashes of `segments`, concatenated in the given order.
    public func leafHashes(of segments: [Int]) -> [UInt64] {
        segments.flatMap { segment in
            leaves[segment * Self.leavesPerSegment..<(segment + 1) * Self.leavesPerSegment]
        }
    }

    /// The segments whose hashes differ from `theirs` (every segment when the count is
    /// wrong, which only a faulty peer sends).
    public func differingSegments(_ theirs: [UInt64]) -> [Int] {
        let mine = segmentHashes
        guard theirs.count == mine.count else { return Array(0..<Self.segmentCount) }
        return mine.indices.filter { mine[$0] != theirs[$0] }
    }

    /// The leaves of `segments` whose hashes differ from `theirs` (as
    /// ``leafHashes(of:)`` lays them out).
    public func differingLeaves(in segments: [Int], _ theirs: [UInt64]) -> [Int] {
        let mine = leafHashes(of: segments)
        let leaves = segments.flatMap { segment in
            (segment * Self.leavesPerSegment)..<((segment + 1) * Self.leavesPerSegment)
        }
        guard theirs.count == mine.count else { return leaves }
        return mine.indices.filter { mine[$0] != theirs[$0] }.map { leaves[$0] }
    }

    /// The keys whose objects differ between two replicas' listings of the same leaves,
    /// sorted: present on one side only, or with different hashes.
    public static func differingKeys(_ mine: [KeyHash], _ theirs: [KeyHash]) -> [[UInt8]] {
        var byKey: [[UInt8]: UInt64] = [:]
        for entry in mine { byKey[entry.key] = entry.hash }
        var differing: Set<[UInt8]> = []
        for entry in theirs {
            if let hash = byKey.removeValue(forKey: entry.key) {
                if hash != entry.hash { differing.insert(entry.key) }
            } else {
                differing.insert(entry.key)
            }
        }
        differing.formUnion(byKey.keys)
        return differing.sorted { $0.lexicographicallyPrecedes($1) }
    }
}

/// A hint as a fallback keeps it: the primary it is for, the row and the object.
///
/// Stored in the hints keyspace under `StorageLayout.hintKey(target:sequence:)`, so one
/// target's hints are one range and delivery in key order is delivery in write order.
public struct HintRecord: Hashable, Sendable {
    /// The primary the hint is for.
    public var target: NodeID
    /// The row.
    public var key: ReplicaKey
    /// The object to merge into the primary.
    public var object: StoredObject

    /// Creates a record.
    public init(target: NodeID, key: ReplicaKey, object: StoredObject) {
        self.target = target
        self.key = key
        self.object = object
    }

    static let formatVersion: UInt8 = 1

    /// The stored value.
    public func encoded() -> [UInt8] {
        var writer = BinaryWriter()
        writer.write(Self.formatVersion)
        writer.writeFixed(target.rawValue)
        writer.writeVarint(UInt64(key.partition.rawValue))
        writer.writeVarint(key.generation)
        writer.writeLengthPrefixed(key.bytes)
        StoredObjectCodec.write(object, to: &writer)
        return writer.bytes
    }

    /// Decodes a stored value.
    public static func decode(_ bytes: [UInt8]) throws(KVError) -> HintRecord {
        do {
            var reader = BinaryReader(bytes)
            guard try reader.readByte() == formatVersion else {
                throw KVError(.corruptObject, "a hint has an unknown format")
            }
            let target = NodeID(rawValue: try reader.readFixed())
            let partition = try reader.readVarint()
            let generation = try reader.readVarint()
            let key = try reader.readLengthPrefixed(maximumLength: 1 << 20)
            guard partition <= UInt64(UInt32.max) else { throw KVError(.corruptObject, "a hint is invalid") }
            let object = try StoredObjectCodec.decode(Array(bytes[(bytes.count - reader.remainingCount)...]))
            return HintRecord(
                target: target,
                key: ReplicaKey(
                    partition: PartitionID(rawValue: UInt32(partition)), bytes: key, generation: generation),
                object: object)
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.corruptObject, "a hint is truncated", underlying: error)
        }
    }
}
