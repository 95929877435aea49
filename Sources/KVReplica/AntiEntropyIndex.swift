import KVCluster
import KVCore
import KVStorage

/// The anti-entropy state of one node: a persistent index of every row's object hash,
/// and in memory one ``MerkleTree`` per partition and the partition's tombstones.
///
/// The index lives in the anti-entropy keyspace under the row's data key, as the
/// object's hash (8 bytes), a flags byte (bit 0: the row is a tombstone, bit 1: every
/// value of the row expires) and, with bit 1, the time the last one expires (8 bytes,
/// wall-clock milliseconds). A row whose values have all expired is reaped like a
/// tombstone, by the same agreement of every replica. Every write
/// puts the row's new entry in the same atomic batch as the row, so the index never
/// disagrees with the data, even across crashes. The trees are not stored: at start the
/// node rebuilds them from the index in the background, one partition at a time under
/// the row locks (so no write slips between the scan and the tree). A data directory
/// whose index is incomplete (anti-entropy was off, or the directory predates it)
/// rebuilds the index from the rows first.
package final class AntiEntropyIndex: Sendable {
    /// The metadata record saying the index covers every row.
    package static let completeKey = MetadataKeys.antiEntropyIndexComplete

    /// A change of one row, applied to the trees once its batch is stored.
    package struct Change: Sendable {
        package var partition: PartitionID
        package var key: [UInt8]
        package var old: UInt64?
        package var new: UInt64?
        /// Since when the new state reads as absent for good (wall clock; `Int64.min` for
        /// a tombstone), or `nil` when it holds a value that does not expire.
        package var goneSince: Int64?
    }

    /// Monotonic counters, for status and tests.
    package struct Counters: Sendable {
        package var treesRebuilt: Int64 = 0
        /// Tombstones reaped on another member's word (the reaper counts its own).
        package var tombstonesReaped: Int64 = 0
    }

    private struct Trees: Sendable {
        var trees: [PartitionID: MerkleTree] = [:]
        var ready: Set<PartitionID> = []
        /// Each partition's tombstones and expiring rows: object hash, when this node saw
        /// the state first (monotonic milliseconds) and since when it reads as absent
        /// (wall clock; `Int64.min` for a tombstone).
        var tombstones: [PartitionID: [[UInt8]: Tombstone]] = [:]
        /// Whether the index on disk is known to cover every row.
        var indexComplete = false
    }

    /// A row that is, or will be, gone: a candidate for reaping.
    struct Tombstone: Sendable {
        var hash: UInt64
        var since: Int64
        var goneSince: Int64
    }

    private let box = Locked(Trees())
    package let counters = Locked(Counters())
    /// Whether the node maintains the index and exchanges trees at all.
    package let isEnabled: Bool

    /// Milliseconds of a clock that never goes back: how old a tombstone is. The node
    /// passes its monotonic clock, the simulator its virtual time.
    private let clock: @Sendable () -> Int64
    /// Milliseconds of the wall clock (the simulator's virtual time): when rows expire.
    private let wallClock: @Sendable () -> Int64

    package init(
        isEnabled: Bool, clock: @escaping @Sendable () -> Int64, wallClock: @escaping @Sendable () -> Int64
    ) {
        self.isEnabled = isEnabled
        self.clock = clock
        self.wallClock = wallClock
    }

    /// The wall clock this index judges expiry by.
    package func wallMilliseconds() -> Int64 { wallClock() }

    // MARK: - The index value

    /// The index entry of a row: its hash and, when the row is or will be gone, since when.
    package static func indexValue(hash: UInt64, goneSince: Int64?) -> [UInt8] {
        var writer = BinaryWriter(capacity: 17)
        writer.writeFixed(hash)
        switch goneSince {
        case nil: writer.write(0)
        case Int64.min: writer.write(1)
        case let expiry?:
            writer.write(2)
            writer.writeFixed(UInt64(bitPattern: expiry))
        }
        return writer.bytes
    }

    package static func parseIndexValue(_ bytes: [UInt8]) -> (hash: UInt64, goneSince: Int64?)? {
        guard bytes.count == 9 || bytes.count == 17 else { return nil }
        var reader = BinaryReader(bytes)
        guard let hash = try? reader.readFixed(), let flags = try? reader.readByte() else { return nil }
        if flags & 1 != 0 { return (hash, Int64.min) }
        if flags & 2 != 0, let expiry: UInt64 = try? reader.readFixed() {
            return (hash, Int64(bitPattern: expiry))
        }
        return (hash, nil)
    }

    package static func hash(_ object: StoredObject) -> UInt64? {
        object.entries.isEmpty ? nil : MerkleTree.objectHash(object)
    }

    // MARK: - Writes

    /// Puts a row's new index entry into `batch` (its write) and returns the change to
    /// apply once the batch is stored. `old` is the object the engine holds now (the
    /// index agrees with it), `new` the one written (`nil` or empty: the row goes).
    package func record(
        _ key: ReplicaKey, old: StoredObject, new: StoredObject?, into batch: inout WriteBatch
    )
        -> Change?
    {
        guard isEnabled else { return nil }
        let newHash = new.flatMap(Self.hash)
        let goneSince = new?.goneSinceMilliseconds
        if let newHash {
            batch.put(key.bytes, Self.indexValue(hash: newHash, goneSince: goneSince), in: .antiEntropy)
        } else {
            batch.delete(key.bytes, in: .antiEntropy)
        }
        return Change(
            partition: key.partition, key: key.bytes, old: Self.hash(old), new: newHash, goneSince: goneSince)
    }

    /// Applies stored changes to the trees of ready partitions. Call it under the row
    /// locks of the changed rows, after the batch is stored.
    package func apply(_ changes: [Change]) {
        guard isEnabled, !changes.isEmpty else { return }
        let now = clock()
        box.withLockedValue { state in
            for change in changes where state.ready.contains(change.partition) {
                state.trees[change.partition, default: MerkleTree()].update(
                    change.key, from: change.old, to: change.new)
                if let hash = change.new, let goneSince = change.goneSince {
                    state.tombstones[change.partition, default: [:]][change.key] = Tombstone(
                        hash: hash, since: now, goneSince: goneSince)
                } else {
                    state.tombstones[change.partition]?[change.key] = nil
                }
            }
        }
    }

    // MARK: - Rebuilding

    /// Whether `partition`'s tree is built.
    package func isReady(_ partition: PartitionID) -> Bool {
        box.withLockedValue { $0.ready.contains(partition) }
    }

    /// How many partitions have built trees.
    package var readyCount: Int { box.withLockedValue { $0.ready.count } }

    /// Whether the index on disk covers every row.
    package var indexComplete: Bool { box.withLockedValue { $0.indexComplete } }

    package func markIndexComplete(_ complete: Bool) {
        box.withLockedValue { $0.indexComplete = complete }
    }

    /// Forgets every tree, so each is rebuilt from the index (after a clear or drop
    /// deleted rows by range).
    package func invalidateAll() {
        box.withLockedValue { state in
            state.ready = []
            state.trees = [:]
            state.tombstones = [:]
        }
    }

    /// Builds `partition`'s tree: from the index, or, when the index is incomplete, by
    /// rewriting the partition's index from its rows first. Call it holding every row
    /// lock.
    package func rebuild(_ partition: PartitionID, engine: any StorageEngine) throws(KVError) {
        var tree = MerkleTree()
        var tombstones: [[UInt8]: Tombstone] = [:]
        let complete = indexComplete
        // A tombstone found at a rebuild counts as seen now: its age before the start
        // is unknown.
        let now = clock()
        try storageWork("rebuilding an anti-entropy tree") {
            let range = StorageLayout.partitionRange(partition)
            if complete {
                let cursor = try engine.cursor(over: range, in: .antiEntropy, direction: .forward)
                while let entry = try cursor.next() {
                    guard let value = Self.parseIndexValue(entry.value) else { continue }
                    tree.update(entry.key, from: nil, to: value.hash)
                    if let goneSince = value.goneSince {
                        tombstones[entry.key] = Tombstone(hash: value.hash, since: now, goneSince: goneSince)
                    }
                }
            } else {
                var batch = WriteBatch()
                batch.deleteRange(range, in: .antiEntropy)
                let cursor = try engine.cursor(over: range, in: .data, direction: .forward)
                while let entry = try cursor.next() {
                    let object = try StoredObjectCodec.decode(entry.value)
                    guard let hash = Self.hash(object) else { continue }
                    let goneSince = object.goneSinceMilliseconds
                    batch.put(entry.key, Self.indexValue(hash: hash, goneSince: goneSince), in: .antiEntropy)
                    tree.update(entry.key, from: nil, to: hash)
                    if let goneSince {
                        tombstones[entry.key] = Tombstone(hash: hash, since: now, goneSince: goneSince)
                    }
                }
                // Buffered: the index can always be rebuilt from the rows again, and
                // the completeness record is only written once every partition is done.
                try engine.write(batch, durability: .buffered)
            }
        }
        box.withLockedValue { state in
            state.trees[partition] = tree
            state.tombstones[partition] = tombstones
            state.ready.insert(partition)
        }
        counters.withLockedValue { $0.treesRebuilt += 1 }
    }

    // MARK: - Reading

    /// The tree of `partition`, if built.
    package func tree(of partition: PartitionID) -> MerkleTree? {
        box.withLockedValue { state in
            state.ready.contains(partition) ? state.trees[partition] ?? MerkleTree() : nil
        }
    }

    /// Up to `limit` tombstones of `partition` (key and object hash) that this node has
    /// held for at least `minimumAge` milliseconds, and expired rows whose last value
    /// expired at least `minimumAge` milliseconds ago, starting at the `start`-th in key
    /// order (so passes rotate through a partition's tombstones instead of retrying the
    /// same ones).
    package func tombstones(of partition: PartitionID, limit: Int, minimumAge: Int64, start: Int) -> [KeyHash]
    {
        let now = clock()
        let wallNow = wallClock()
        let old = box.withLockedValue { state in
            (state.tombstones[partition] ?? [:]).filter {
                now - $0.value.since >= minimumAge && $0.value.goneSince <= wallNow - minimumAge
            }.map { KeyHash(key: $0.key, hash: $0.value.hash) }
        }.sorted { $0.key.lexicographicallyPrecedes($1.key) }
        guard !old.isEmpty else { return [] }
        let first = start % old.count
        return Array((old[first...] + old[..<first]).prefix(limit))
    }

    /// The tombstone hash of a row, or `nil` when the row is not a tombstone (or its
    /// partition's tree is not built, so this node cannot tell).
    package func tombstoneHash(_ key: [UInt8], in partition: PartitionID) -> UInt64? {
        let wallNow = wallClock()
        return box.withLockedValue { state in
            state.tombstones[partition]?[key].flatMap { $0.goneSince <= wallNow ? $0.hash : nil }
        }
    }

    /// Tombstones held in built trees.
    package var tombstoneCount: Int {
        box.withLockedValue { $0.tombstones.values.reduce(0) { $0 + $1.count } }
    }

    /// The index entries of `partition` in `leaves`, in key order after `after`
    /// (exclusive), at most `limit` of them. Blocks.
    package static func keyHashes(
        in partition: PartitionID, leaves: [Int], after: [UInt8]?, engine: any StorageEngine,
        limit: Int
    ) throws(KVError) -> (entries: [KeyHash], truncated: Bool) {
        // A release lists every leaf on every page, as `MerkleTree.everyLeaf`, which needs
        // no table. Its own copy compares equal at once (the arrays share storage); one
        // decoded from a peer's request costs 1,024 comparisons, about what the table
        // would. Otherwise a table of every leaf rather than a set: hashing 1,024 leaves on
        // each page cost more than the listing.
        var wanted: [Bool]? = nil
        if leaves != MerkleTree.everyLeaf {
            var table = [Bool](repeating: false, count: MerkleTree.leafCount)
            for leaf in leaves where table.indices.contains(leaf) { table[leaf] = true }
            wanted = table
        }
        return try storageWork("listing anti-entropy keys") {
            var range = StorageLayout.partitionRange(partition)
            if let after, range.lowerBound.lexicographicallyPrecedes(after + [0]) {
                range.lowerBound = after + [0]
            }
            let cursor = try engine.cursor(over: range, in: .antiEntropy, direction: .forward)
            var entries: [KeyHash] = []
            while let entry = try cursor.next() {
                guard wanted?[MerkleTree.leaf(of: entry.key)] ?? true,
                    let value = parseIndexValue(entry.value)
                else { continue }
                if entries.count == limit { return (entries, true) }
                entries.append(KeyHash(key: entry.key, hash: value.hash))
            }
            return (entries, false)
        }
    }
}
