import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory
import KVTestSupport
import Testing

/// The replica store, command in, outcome out, over the in-memory engine: the rules both
/// the node and the simulator now run.
@Suite("Replica store")
struct ReplicaStoreTests {
    static let table = TableDescriptor(
        name: try! TableName(namespace: "ns", table: "t"), schema: try! KeySchema([.string]), generation: 11)
    static let actor = ActorID(node: NodeID(rawValue: 1), incarnation: 1)
    static let partition = PartitionID(rawValue: 2)

    static func key(_ name: String, generation: UInt64 = table.generation) -> ReplicaKey {
        ReplicaKey(
            partition: partition,
            bytes: StorageLayout.dataKey(
                partition: partition, namespace: "ns", table: "t", key: KeyEncoding.encode([.string(name)])),
            generation: generation)
    }

    static func store(
        actor: ActorID = actor,
        limits: RowLimits = RowLimits(maximumRowBytes: 1 << 20, maximumSiblings: 8),
        faults: ReplicaStore.Faults = ReplicaStore.Faults(),
        engine: MemoryStorageEngine = MemoryStorageEngine()
    ) throws -> ReplicaStore {
        let antiEntropy = AntiEntropyIndex(isEnabled: true, clock: { 0 }, wallClock: { 0 })
        antiEntropy.markIndexComplete(true)
        try antiEntropy.rebuild(partition, engine: engine)
        return ReplicaStore(
            engine: engine, actor: actor, catalog: Locked([table.name: table]),
            sealer: Locked(ContextSealer(secret: Array(repeating: 3, count: 16))), antiEntropy: antiEntropy,
            hints: try HintStore(engine: engine), limits: limits, faults: faults)
    }

    static func put(_ text: String, context: VersionVector? = nil, condition: WriteCondition = .none)
        -> ProposedWrite
    {
        ProposedWrite(
            sibling: Sibling(value: RowValue(bytes: Array(text.utf8)), timestampMilliseconds: 5),
            context: context, condition: condition, generation: table.generation)
    }

    static func object(_ outcome: StorageOutcome) -> StoredObject? {
        if case .object(let object) = outcome { return object }
        return nil
    }

    static func error(_ outcome: StorageOutcome) -> KVError.Code? {
        if case .failed(let error) = outcome { return error.code }
        return nil
    }

    @Test("a coordinated write makes a dot, is stored, and a later command of the same batch sees it")
    func coordinateAndSee() throws {
        let store = try Self.store()
        let key = Self.key("a")
        let outcomes = store.apply([.coordinate(key, Self.put("one")), .load(key)])
        let written = try #require(Self.object(outcomes[0]))
        #expect(written.liveValues.map(\.value?.bytes) == [Array("one".utf8)])
        #expect(Self.object(outcomes[1]) == written)
        #expect(Self.object(store.load(key)) == written)
    }

    @Test("a key or write of a table generation the catalog lacks is refused with table.changed")
    func generations() throws {
        let store = try Self.store()
        let stale = Self.key("a", generation: 99)
        var write = Self.put("x")
        write.generation = 99
        let outcomes = store.apply([
            .coordinate(Self.key("a"), write), .merge(stale, StoredObject()),
            .storeHint(target: NodeID(rawValue: 2), key: stale, object: StoredObject()),
            .reconcile(stale, StoredObject()),
        ])
        #expect(outcomes.map(Self.error) == Array(repeating: .tableChanged, count: 4))
        #expect(Self.error(store.load(stale)) == .tableChanged)
        // Generation 0 is "not checked".
        #expect(Self.object(store.load(Self.key("a", generation: 0))) == StoredObject())
    }

    @Test("conditions are checked against what the replica holds")
    func conditions() throws {
        let store = try Self.store()
        let key = Self.key("a")
        let first = store.apply([.coordinate(key, Self.put("one", condition: .ifAbsent))])
        let object = try #require(Self.object(first[0]))
        let again = store.apply([.coordinate(key, Self.put("two", condition: .ifAbsent))])
        #expect(Self.error(again[0]) == .preconditionFailed)
        let identity = RowChecks.identity(generation: Self.table.generation, dataKey: key.bytes)
        let etag = RowChecks.version(
            of: object, identity: identity, sealer: ContextSealer(secret: Array(repeating: 3, count: 16))
        ).etag
        let matched = store.apply([.coordinate(key, Self.put("two", condition: .ifMatch(etag)))])
        #expect(Self.object(matched[0])?.liveValues.count == 2)
        let stale = store.apply([.coordinate(key, Self.put("three", condition: .ifMatch(etag)))])
        #expect(Self.error(stale[0]) == .preconditionFailed)
    }

    @Test("a conditional write retried with its request id answers the row, not a failed precondition")
    func retriedConditionalWrite() throws {
        let store = try Self.store()
        let key = Self.key("r")
        var write = Self.put("once", condition: .ifAbsent)
        write.sibling.requestID = "update-1"
        let first = try #require(Self.object(store.apply([.coordinate(key, write)])[0]))
        // The first try made the row present, so its If-None-Match would now fail.
        let retried = store.apply([.coordinate(key, write)])
        #expect(Self.object(retried[0]) == first)
        var other = Self.put("other", condition: .ifAbsent)
        other.sibling.requestID = "update-2"
        #expect(Self.error(store.apply([.coordinate(key, other)])[0]) == .preconditionFailed)
    }

    @Test("increments add to the counter, and a retried request id adds nothing")
    func increments() throws {
        let store = try Self.store()
        let key = Self.key("c")
        func increment(_ delta: Int64, request: String) -> ProposedWrite {
            var sibling = Sibling.tombstone(at: 9)
            sibling.requestID = request
            return ProposedWrite(
                sibling: sibling, context: nil, generation: Self.table.generation, increment: delta)
        }
        let outcomes = store.apply([
            .coordinate(key, increment(5, request: "r1")), .coordinate(key, increment(-2, request: "r2")),
            .coordinate(key, increment(-2, request: "r2")),
        ])
        let values = try outcomes.map { try CounterState.merged(Self.object($0)?.liveValues ?? [])?.value }
        #expect(values == [5, 3, 3])
    }

    @Test("a write beyond the row's limits is refused and nothing is stored")
    func rowLimits() throws {
        let store = try Self.store(limits: RowLimits(maximumRowBytes: 4, maximumSiblings: 1))
        let key = Self.key("a")
        #expect(Self.error(store.apply([.coordinate(key, Self.put("too long"))])[0]) == .rowTooLarge)
        #expect(Self.object(store.apply([.coordinate(key, Self.put("ok"))])[0]) != nil)
        // A blind write beside the first makes two siblings.
        #expect(Self.error(store.apply([.coordinate(key, Self.put("no"))])[0]) == .tooManySiblings)
        #expect(Self.object(store.load(key))?.liveValues.count == 1)
    }

    @Test("every stored row has an index entry, and the partition's tree follows it")
    func antiEntropyIndex() throws {
        let engine = MemoryStorageEngine()
        let store = try Self.store(engine: engine)
        let key = Self.key("a")
        let object = try #require(Self.object(store.apply([.coordinate(key, Self.put("one"))])[0]))
        let entry = try #require(try engine.get(key.bytes, in: .antiEntropy))
        #expect(AntiEntropyIndex.parseIndexValue(entry)?.hash == MerkleTree.objectHash(object))
        var expected = MerkleTree()
        expected.update(key.bytes, from: nil, to: MerkleTree.objectHash(object))
        #expect(store.antiEntropy.tree(of: Self.partition)?.segmentHashes == expected.segmentHashes)
    }

    @Test("a reconcile mends an index entry that disagrees with its row")
    func reconcileMendsTheIndex() throws {
        let engine = MemoryStorageEngine()
        let store = try Self.store(engine: engine)
        let key = Self.key("a")
        let object = try #require(Self.object(store.apply([.coordinate(key, Self.put("one"))])[0]))
        var batch = WriteBatch()
        batch.put(key.bytes, AntiEntropyIndex.indexValue(hash: 1, goneSince: nil), in: .antiEntropy)
        try engine.write(batch)
        #expect(Self.object(store.apply([.reconcile(key, object)])[0]) == object)
        let entry = try #require(try engine.get(key.bytes, in: .antiEntropy))
        #expect(AntiEntropyIndex.parseIndexValue(entry)?.hash == MerkleTree.objectHash(object))
    }

    @Test("a reap removes only the very tombstone it names")
    func reap() throws {
        let engine = MemoryStorageEngine()
        let store = try Self.store(engine: engine)
        let key = Self.key("a")
        let value = try #require(Self.object(store.apply([.coordinate(key, Self.put("one"))])[0]))
        // A value is never reaped.
        #expect(Self.object(store.apply([.reap(key, objectHash: MerkleTree.objectHash(value))])[0]) == value)
        let delete = ProposedWrite(
            sibling: .tombstone(at: 6), context: value.context, generation: Self.table.generation)
        let tombstone = try #require(Self.object(store.apply([.coordinate(key, delete)])[0]))
        #expect(tombstone.isDeleted)
        #expect(store.antiEntropy.tombstoneHash(key.bytes, in: Self.partition) != nil)
        // Another hash (a newer tombstone elsewhere) leaves it alone.
        #expect(Self.object(store.apply([.reap(key, objectHash: 1)])[0]) == tombstone)
        #expect(
            Self.object(store.apply([.reap(key, objectHash: MerkleTree.objectHash(tombstone))])[0])
                == StoredObject())
        #expect(try engine.get(key.bytes, in: .data) == nil)
        #expect(try engine.get(key.bytes, in: .antiEntropy) == nil)
        #expect(store.antiEntropy.tombstoneHash(key.bytes, in: Self.partition) == nil)
    }

    @Test("a hint is stored durably and counted for its row and target")
    func hints() throws {
        let engine = MemoryStorageEngine()
        let store = try Self.store(engine: engine)
        let key = Self.key("a")
        let object = try #require(Self.object(store.apply([.coordinate(key, Self.put("one"))])[0]))
        let target = NodeID(rawValue: 3)
        #expect(Self.object(store.apply([.storeHint(target: target, key: key, object: object)])[0]) == object)
        #expect(store.hints.holdsHint(for: key.bytes))
        let held = try HintStore.oldest(for: target, limit: 10, engine: engine)
        #expect(held.map(\.record?.object) == [object])
        // A restart counts it again from disk.
        #expect(try HintStore(engine: engine).pendingCount == 1)
    }

    /// Only a faulty peer's object comes near the counter limit; a write that would pass
    /// it is refused, so the row stays one that decodes.
    @Test("a write whose dot would pass the counter limit is refused and the row stays readable")
    func counterAtTheLimit() throws {
        let engine = MemoryStorageEngine()
        let store = try Self.store(engine: engine)
        let key = Self.key("a")
        let worn = try #require(
            StoredObject(validatedEntries: [
                StoredObject.Entry(actor: Self.actor, counter: VersionVector.maximumCounter, values: [])
            ]))
        #expect(Self.object(store.apply([.merge(key, worn)])[0]) == worn)
        #expect(Self.error(store.apply([.coordinate(key, Self.put("one"))])[0]) == .invalidRequest)
        #expect(Self.object(store.load(key)) == worn)
        // Another row of the same actor is written as usual.
        #expect(Self.object(store.apply([.coordinate(Self.key("b"), Self.put("two"))])[0]) != nil)
    }

    @Test("a damaged hint key with the largest sequence does not stop the next hint")
    func hintSequenceAtTheLimit() throws {
        let engine = MemoryStorageEngine()
        let target = NodeID(rawValue: 3)
        let record = HintRecord(target: target, key: Self.key("a"), object: StoredObject())
        var batch = WriteBatch()
        batch.put(StorageLayout.hintKey(target: target, sequence: .max), record.encoded(), in: .hints)
        try engine.write(batch, durability: .synced)
        let hints = try HintStore(engine: engine)
        var next = WriteBatch()
        _ = hints.add(record, into: &next)
        _ = hints.add(record, into: &next)
        try engine.write(next, durability: .synced)
        #expect(try HintStore(engine: engine).pendingCount == 3)
    }

    @Test("when the batch cannot be stored, no command of it is acknowledged, not even a load")
    func failedBatch() throws {
        // A read-only device: reads like an empty memory engine, fails every write.
        let engine = WriteHookedEngine { () throws(StorageError) in
            throw StorageError(.io, "the device is read-only")
        }
        let antiEntropy = AntiEntropyIndex(isEnabled: true, clock: { 0 }, wallClock: { 0 })
        let store = ReplicaStore(
            engine: engine, actor: Self.actor, catalog: Locked([Self.table.name: Self.table]),
            sealer: Locked(ContextSealer(secret: Array(repeating: 3, count: 16))), antiEntropy: antiEntropy,
            hints: try HintStore(engine: engine), limits: RowLimits(maximumRowBytes: 100, maximumSiblings: 2))
        #expect(Self.object(store.apply([.load(Self.key("b"))])[0]) == StoredObject())
        let outcomes = store.apply([.coordinate(Self.key("a"), Self.put("one")), .load(Self.key("b"))])
        #expect(outcomes.map(Self.error) == [.storageIO, .storageIO])
    }

    @Test("a row whose values all expired is reaped like a tombstone: once expired long enough, on agreement")
    func expiredRowsAreReaped() throws {
        let engine = MemoryStorageEngine()
        let clock = Locked<Int64>(0)
        let antiEntropy = AntiEntropyIndex(
            isEnabled: true, clock: { clock.withLockedValue { $0 } },
            wallClock: { clock.withLockedValue { $0 } })
        antiEntropy.markIndexComplete(true)
        try antiEntropy.rebuild(Self.partition, engine: engine)
        let store = ReplicaStore(
            engine: engine, actor: Self.actor, catalog: Locked([Self.table.name: Self.table]),
            sealer: Locked(ContextSealer(secret: Array(repeating: 3, count: 16))), antiEntropy: antiEntropy,
            hints: try HintStore(engine: engine),
            limits: RowLimits(maximumRowBytes: 1 << 20, maximumSiblings: 8))
        let key = Self.key("expiring")
        var write = Self.put("soon gone")
        write.sibling.expiresAtMilliseconds = 10_000
        let written = try #require(Self.object(store.apply([.coordinate(key, write)])[0]))
        let hash = try #require(AntiEntropyIndex.hash(written))
        func candidates() -> [[UInt8]] {
            antiEntropy.tombstones(of: Self.partition, limit: 10, minimumAge: 1000, start: 0).map(\.key)
        }
        clock.withLockedValue { $0 = 5_000 }
        #expect(candidates().isEmpty)
        #expect(store.holding(of: key).entry?.isTombstone == false)
        #expect(
            Self.object(store.apply([.reap(key, objectHash: hash)])[0]) == written, "a live row is not reaped"
        )
        clock.withLockedValue { $0 = 10_500 }
        #expect(candidates().isEmpty, "expired, but not for the minimum age yet")
        #expect(
            store.holding(of: key).entry?.isTombstone == true, "expired: it may be reaped on another's word")
        clock.withLockedValue { $0 = 11_000 }
        #expect(candidates() == [key.bytes])
        // A rebuilt index finds the expiring row again.
        try antiEntropy.rebuild(Self.partition, engine: engine)
        clock.withLockedValue { $0 = 12_000 }
        #expect(candidates() == [key.bytes])
        #expect(Self.object(store.apply([.reap(key, objectHash: hash)])[0]) == StoredObject())
        #expect(Self.object(store.load(key)) == StoredObject())
        #expect(candidates().isEmpty)
    }

    @Test("the simulator's planted defects act through the fault hook")
    func faults() throws {
        var faults = ReplicaStore.Faults()
        faults.discardsWrites = true
        let store = try Self.store(faults: faults)
        let key = Self.key("a")
        #expect(Self.object(store.apply([.coordinate(key, Self.put("one"))])[0]) != nil)
        #expect(Self.object(store.load(key)) == StoredObject())
    }
}
