import KVCluster
import KVCore
import KVStorage

/// The one interpreter of ``StorageCommand``s over any ``StorageEngine``: what a replica
/// does with a coordinated write, a replicated object, a hint, an anti-entropy repair or a
/// reap, and the row's anti-entropy entry written in the same batch.
///
/// The node runs it on its storage thread pool, draining queued commands into one synced
/// batch; the simulator runs it inline over the in-memory engine. Both therefore apply
/// the same rules: the table generation check, write conditions, increments, the row
/// limits and the anti-entropy index.
///
/// ## Concurrency
///
/// The store takes no row lock itself. ``apply(_:)`` is a read-modify-write of every row
/// it names, so its caller must keep other writers of those rows and catalog changes out
/// while it runs: the node holds every row lock around a drain (lock order: row locks in
/// index order, then the short locks inside the catalog, the sealer, the anti-entropy
/// index and the hint store, which never call out while held); the simulator runs one
/// event at a time. ``load(_:)`` takes no lock: a point read is atomic in the engine.
package final class ReplicaStore: Sendable {
    /// Defects the simulator plants to prove that its checkers catch them. Production
    /// never sets any.
    package struct Faults: Sendable {
        /// Replaces ``ReplicaRules/merge(_:_:)`` for replicated objects and repairs.
        package var merge: (@Sendable (_ stored: StoredObject, _ incoming: StoredObject) -> StoredObject?)?
        /// Acknowledges writes without storing anything.
        package var discardsWrites = false
        /// Applies writes whatever their condition (`If-Match`, `If-None-Match`).
        package var ignoresConditions = false
        /// Replaces a counter increment's delta.
        package var incrementDelta: (@Sendable (Int64) -> Int64)?

        /// No defect.
        package init() {}
    }

    /// The engine the rows live in.
    package let engine: any StorageEngine
    /// The actor this replica makes dots with.
    package let actor: ActorID
    /// The highest dot counter this actor issued, on any row (a new incarnation is a new
    /// actor, so this starts at 0 with every start).
    private let issuedCounter = Locked<UInt64>(0)
    /// The tables this replica knows, by name.
    package let catalog: Locked<[TableName: TableDescriptor]>
    /// Seals and opens contexts (for `If-Match`).
    package let sealer: Locked<ContextSealer>
    /// Row hashes and Merkle trees.
    package let antiEntropy: AntiEntropyIndex
    /// Hints held for down replicas.
    package let hints: HintStore
    /// The limits of one row.
    package let limits: RowLimits
    private let faults: Faults

    /// Creates a store over `engine`.
    package init(
        engine: any StorageEngine, actor: ActorID, catalog: Locked<[TableName: TableDescriptor]>,
        sealer: Locked<ContextSealer>, antiEntropy: AntiEntropyIndex, hints: HintStore, limits: RowLimits,
        faults: Faults = Faults()
    ) {
        self.engine = engine
        self.actor = actor
        self.catalog = catalog
        self.sealer = sealer
        self.antiEntropy = antiEntropy
        self.hints = hints
        self.limits = limits
        self.faults = faults
    }

    // MARK: - Reads

    /// Refuses a key whose table generation this replica's catalog does not have: the
    /// table was cleared, dropped or recreated (here or there), and a replica that
    /// stored or served it would undo that. Generation 0 means "not checked".
    package func checkGeneration(_ key: ReplicaKey) throws(KVError) {
        guard key.generation != 0 else { return }
        let known = catalog.withLockedValue { tables in
            tables.values.contains { $0.generation == key.generation }
        }
        guard known else {
            throw KVError(
                .tableChanged, "the table was cleared, dropped or recreated meanwhile; read again and retry")
        }
    }

    /// The stored object under `dataKey` (empty when absent).
    package func object(at dataKey: [UInt8]) throws(KVError) -> StoredObject {
        let stored: [UInt8]?
        do { stored = try engine.get(dataKey, in: .data) } catch { throw error.asKVError }
        return try object(decoding: stored, at: dataKey)
    }

    /// The stored object `encoded` (empty when `nil`) under `dataKey`.
    fileprivate func object(decoding encoded: [UInt8]?, at dataKey: [UInt8]) throws(KVError) -> StoredObject {
        guard let encoded else { return StoredObject() }
        let object = try StoredObjectCodec.decode(encoded)
        if ChunkChecks.isChunkRow(dataKey), !ChunkChecks.isSound(object) {
            // A damaged chunk counts as absent, so the next read repairs it (ChunkChecks).
            damagedChunksFound.withLockedValue { $0 += 1 }
            return StoredObject()
        }
        return object
    }

    /// How many damaged chunk rows reads have found (each is then repaired).
    package let damagedChunksFound = Locked<UInt64>(0)

    /// The chunk rows of large values written or deleted since the node last compacted
    /// them, value by value. A chunk reaches the engine as a flush of its own (a batch
    /// that large skips the log), in small table files that RocksDB's compactions only
    /// move, since a new value's keys overlap nothing; and a deleted value's bytes stay
    /// until a compaction reaches them. The node compacts each value's span
    /// (``StorageEngine/compact(_:in:)``) once 64 MiB of it was written and at every
    /// chunk collection pass, which merges the small files and returns the space.
    package let pendingCompactions = Locked(PendingCompactions())

    /// Runs ``StorageCommand/load(_:)``: the row's state, after the generation check.
    package func load(_ key: ReplicaKey) -> StorageOutcome {
        do throws(KVError) {
            try checkGeneration(key)
            return .object(try object(at: key.bytes))
        } catch {
            return .failed(error)
        }
    }

    // MARK: - Writes

    /// Applies commands in order and stores what changed in one synced batch: the rows,
    /// their anti-entropy entries and any hints. A later command on the same row sees the
    /// earlier ones. Each command succeeds or fails on its own, except that a failed
    /// batch write fails every command: any answer may rest on a row it did not store
    /// (a retry judged against a write of the same batch).
    package func apply(_ commands: [StorageCommand]) -> [StorageOutcome] {
        var pass = WritePass(store: self, readAhead: ReadAhead(for: commands, in: engine))
        let outcomes = commands.map { command -> StorageOutcome in
            do throws(KVError) {
                return .object(try pass.run(command))
            } catch {
                return .failed(error)
            }
        }
        guard !pass.batch.isEmpty, !faults.discardsWrites else { return outcomes }
        do {
            try engine.write(pass.batch, durability: .synced)
        } catch {
            return commands.map { _ in .failed(error.asKVError) }
        }
        antiEntropy.apply(pass.changes)
        hints.stored(pass.newHints)
        if !pass.chunkRows.isEmpty {
            pendingCompactions.withLockedValue { pending in
                for (key, bytes) in pass.chunkRows { pending.note(key, bytes: bytes) }
            }
        }
        return outcomes
    }

    /// The merge of a replicated object into the stored one, or `nil` when it changes
    /// nothing.
    fileprivate func merged(_ stored: StoredObject, _ incoming: StoredObject) -> StoredObject? {
        if let merge = faults.merge { return merge(stored, incoming) }
        return ReplicaRules.merge(stored, incoming)
    }

    /// The coordinating replica's step of a write, given what it holds: checks the
    /// table and the precondition, makes the dot and checks the row's limits. `nil`
    /// when the write changes nothing (a retry, a delete of an absent row).
    fileprivate func coordinateStep(_ key: ReplicaKey, _ write: ProposedWrite, stored: StoredObject)
        throws(KVError) -> StoredObject?
    {
        guard
            let descriptor = catalog.withLockedValue({ tables in
                tables.values.first { $0.generation == write.generation }
            })
        else {
            throw KVError(
                .tableChanged, "the table was dropped, cleared or recreated meanwhile; read again and retry")
        }
        // A retry of a write this replica already applied (same request id) is answered
        // with the row as it is, before its precondition, which the first try changed.
        if let requestID = write.sibling.requestID,
            stored.values.contains(where: { $0.requestID == requestID })
        {
            return nil
        }
        if !faults.ignoresConditions {
            try RowChecks.check(
                write.condition, against: stored,
                identity: RowChecks.identity(generation: descriptor.generation, dataKey: key.bytes),
                sealer: sealer.withLockedValue { $0 }, nowMilliseconds: write.sibling.timestampMilliseconds)
        }
        let updated: StoredObject?
        // Above every counter this actor issued on any row: a reaped row's clock is
        // gone, and a context from before the reap must not cover the next write's dot.
        let minimumCounter = issuedCounter.withLockedValue { $0 } + 1
        if let delta = write.increment {
            updated = try ReplicaRules.increment(
                stored, by: faults.incrementDelta?(delta) ?? delta, actor: actor,
                timestampMilliseconds: write.sibling.timestampMilliseconds,
                requestID: write.sibling.requestID, lastWriterWins: write.sibling.resolvesByLastWriter,
                minimumCounter: minimumCounter)
        } else {
            updated = ReplicaRules.coordinate(stored, write, actor: actor, minimumCounter: minimumCounter)
        }
        guard let updated else { return nil }
        try RowChecks.checkLimits(updated, limits)
        let issued = updated.context.counter(for: actor)
        // Only a faulty peer's counter comes near the limit; a row stored past it could
        // not be decoded again, so the write is refused and the row stays as it is.
        guard issued <= VersionVector.maximumCounter else {
            throw KVError(.invalidRequest, "the row's version counter for this node is exhausted")
        }
        issuedCounter.withLockedValue { $0 = max($0, issued) }
        return updated
    }
}

/// One ``ReplicaStore/apply(_:)``: the batch being built and the rows it already changed.
private struct WritePass {
    let store: ReplicaStore
    var batch = WriteBatch()
    /// Rows this pass changed, so later commands on them see the change.
    var overlay: [[UInt8]: StoredObject] = [:]
    var changes: [AntiEntropyIndex.Change] = []
    var newHints: [HintRecord] = []
    /// Chunk rows this pass wrote or deleted, with the bytes written.
    var chunkRows: [(key: [UInt8], bytes: Int)] = []
    /// Stored rows read before the pass, for passes that merge many.
    let readAhead: ReadAhead

    init(store: ReplicaStore, readAhead: ReadAhead) {
        self.store = store
        self.readAhead = readAhead
    }

    func current(_ key: ReplicaKey) throws(KVError) -> StoredObject {
        if let pending = overlay[key.bytes] { return pending }
        if let encoded = readAhead.encoded(at: key.bytes) {
            return try store.object(decoding: encoded, at: key.bytes)
        }
        return try store.object(at: key.bytes)
    }

    /// Runs one command; returns the row's state afterwards.
    mutating func run(_ command: StorageCommand) throws(KVError) -> StoredObject {
        switch command {
        case .coordinate(let key, let write):
            let stored = try current(key)
            return put(key, try store.coordinateStep(key, write, stored: stored), over: stored)
        case .merge(let key, let incoming):
            try store.checkGeneration(key)
            let stored = try current(key)
            return put(key, store.merged(stored, incoming), over: stored)
        case .load(let key):
            return try current(key)
        case .storeHint(let target, let key, let object):
            try store.checkGeneration(key)
            newHints.append(
                store.hints.add(HintRecord(target: target, key: key, object: object), into: &batch))
            return object
        case .reconcile(let key, let incoming):
            try store.checkGeneration(key)
            let stored = try current(key)
            let merged = store.merged(stored, incoming)
            if merged == nil { try mendIndexEntry(key, stored) }
            return put(key, merged, over: stored)
        case .reap(let key, let hash):
            let stored = try current(key)
            guard stored.isGone(at: store.antiEntropy.wallMilliseconds()),
                AntiEntropyIndex.hash(stored) == hash
            else { return stored }
            batch.delete(key.bytes)
            if let change = store.antiEntropy.record(key, old: stored, new: nil, into: &batch) {
                changes.append(change)
            }
            overlay[key.bytes] = StoredObject()
            return StoredObject()
        }
    }

    /// Stores `updated` over `stored` with its index entry, or keeps `stored` when the
    /// command changed nothing.
    private mutating func put(_ key: ReplicaKey, _ updated: StoredObject?, over stored: StoredObject)
        -> StoredObject
    {
        guard let updated else { return stored }
        if PendingCompactions.isChunkRow(key.bytes) {
            let written = updated.valueBytes
            if written != stored.valueBytes { chunkRows.append((key.bytes, written)) }
        }
        overlay[key.bytes] = updated
        batch.put(key.bytes, StoredObjectCodec.encode(updated))
        if let change = store.antiEntropy.record(key, old: stored, new: updated, into: &batch) {
            changes.append(change)
        }
        return updated
    }

    /// Anti-entropy's repair also mends the row's index entry if it ever disagreed with
    /// the row, so a stale entry cannot keep two trees apart forever.
    private mutating func mendIndexEntry(_ key: ReplicaKey, _ stored: StoredObject) throws(KVError) {
        guard store.antiEntropy.isEnabled, overlay[key.bytes] == nil else { return }
        let recorded = try storageWork("reading an anti-entropy entry") {
            try store.engine.get(key.bytes, in: .antiEntropy)
        }.flatMap(AntiEntropyIndex.parseIndexValue)
        guard recorded?.hash != AntiEntropyIndex.hash(stored) else { return }
        if var change = store.antiEntropy.record(key, old: StoredObject(), new: stored, into: &batch) {
            change.old = recorded?.hash
            changes.append(change)
        }
    }
}

/// The chunk rows a replica has written or deleted since the node last compacted them,
/// by large value.
package struct PendingCompactions: Sendable {
    /// One value's rows.
    package struct Value: Sendable {
        /// The span of the rows noted.
        package var span: KeySpan
        /// The value bytes written to them.
        package var bytes: Int
    }

    /// By the data key prefix the value's chunk rows share (all but the chunk index).
    package private(set) var values: [[UInt8]: Value] = [:]

    /// A value's span is compacted without waiting for the next pass once this much of
    /// it was written: about 64 one-chunk table files merged into one.
    package static let triggerBytes = 64 << 20

    /// The encoded chunk index that ends a chunk row's key (an int64: 8 bytes).
    private static let indexBytes = 8

    package init() {}

    /// Whether `key` is the data key of a chunk row (in any partition).
    package static func isChunkRow(_ key: [UInt8]) -> Bool {
        let table = chunkTablePrefix
        guard key.count == 4 + table.count + 16 + indexBytes else { return false }
        return key[4..<(4 + table.count)].elementsEqual(table)
    }

    /// The chunk table's namespace and table, as they follow the partition in a data key.
    private static let chunkTablePrefix: [UInt8] = Array(
        StorageLayout.tablePrefix(
            partition: PartitionID(rawValue: 0), namespace: LargeValue.chunkTable.name.namespace,
            table: LargeValue.chunkTable.name.table
        ).dropFirst(4))

    /// Notes a write of `written` bytes to the chunk row `key`.
    package mutating func note(_ key: [UInt8], bytes written: Int) {
        let value = Array(key.dropLast(Self.indexBytes))
        if values[value] == nil {
            values[value] = Value(span: KeySpan(key), bytes: written)
        } else {
            values[value]!.span.include(key)
            values[value]!.bytes += written
        }
    }

    /// Whether a value's span is due for compaction before the next pass.
    package var hasDue: Bool { values.values.contains { $0.bytes >= Self.triggerBytes } }

    /// Takes the spans of the values with at least `minimumBytes` written (every value
    /// with 0), forgetting them.
    package mutating func take(minimumBytes: Int) -> [KeySpan] {
        let taken = values.filter { $0.value.bytes >= minimumBytes }
        for key in taken.keys { values[key] = nil }
        return taken.keys.sorted { $0.lexicographicallyPrecedes($1) }.map { taken[$0]!.span }
    }
}

/// The lowest and highest of a set of keys.
package struct KeySpan: Sendable, Hashable {
    /// The lowest key.
    package private(set) var lowest: [UInt8]
    /// The highest key.
    package private(set) var highest: [UInt8]

    /// The span of one key.
    package init(_ key: [UInt8]) {
        lowest = key
        highest = key
    }

    /// Widens the span to hold `key`.
    package mutating func include(_ key: [UInt8]) {
        if key.lexicographicallyPrecedes(lowest) { lowest = key }
        if highest.lexicographicallyPrecedes(key) { highest = key }
    }

    /// The range from the lowest key to just past the highest.
    package var range: EncodedKeyRange { EncodedKeyRange(lowerBound: lowest, upperBound: highest + [0]) }
}

extension DottedVersionVectorSet where Element == Sibling {
    /// The bytes of every value held, tombstones counting none.
    fileprivate var valueBytes: Int { values.reduce(0) { $0 + ($1.value?.bytes.count ?? 0) } }
}
