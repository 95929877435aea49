import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory
import KVTestSupport
import Testing

/// A write pass that merges many rows reads their span with one cursor first
/// (``ReadAhead``); these tests hold it to what point reads would have answered.
@Suite("Read-ahead of a write pass")
struct ReadAheadTests {
    static let keyCount = 400

    static func name(_ index: Int) -> String {
        "k" + String(String(index + 1000).dropFirst())
    }

    static func key(_ index: Int) -> ReplicaKey {
        ReplicaStoreTests.key(name(index))
    }

    /// The replica store of the suite's table for actor `node`.
    static func store(actor node: UInt64, engine: MemoryStorageEngine = MemoryStorageEngine()) throws
        -> ReplicaStore
    {
        try ReplicaStoreTests.store(
            actor: ActorID(node: NodeID(rawValue: node), incarnation: 1), engine: engine)
    }

    /// A row as a replica with actor `node` wrote it: one value, or two in a row.
    static func written(_ index: Int, by node: UInt64, random: inout SeededRandom) throws -> StoredObject {
        let writer = try store(actor: node)
        let key = key(index)
        var object = StoredObject()
        for _ in 0...Int.random(in: 0...1, using: &random) {
            let text = "\(node)-\(index)-\(random.next() % 1000)"
            object = try #require(
                ReplicaStoreTests.object(writer.apply([.coordinate(key, ReplicaStoreTests.put(text))])[0]))
        }
        return object
    }

    /// Every entry of a keyspace.
    static func contents(_ engine: MemoryStorageEngine, _ keyspace: Keyspace) throws -> [StorageEntry] {
        let cursor = try engine.cursor(over: .all, in: keyspace, direction: .forward)
        var entries: [StorageEntry] = []
        while let entry = try cursor.next() { entries.append(entry) }
        return entries
    }

    @Test("a pass that reads ahead answers and stores what a pass per command does", arguments: 0..<24)
    func sameAsPointReads(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let fastEngine = MemoryStorageEngine()
        let slowEngine = MemoryStorageEngine()
        let fast = try Self.store(actor: 1, engine: fastEngine)
        let slow = try Self.store(actor: 1, engine: slowEngine)
        // About half the keys are held already, as another replica wrote them.
        var held: [Int: StoredObject] = [:]
        for index in 0..<Self.keyCount where random.chance(0.5) {
            held[index] = try Self.written(index, by: 2, random: &random)
        }
        let seeding = held.sorted { $0.key < $1.key }.map { StorageCommand.merge(Self.key($0.key), $0.value) }
        for start in stride(from: 0, to: seeding.count, by: ReadAhead.minimumRows - 1) {
            let part = Array(seeding[start..<min(start + ReadAhead.minimumRows - 1, seeding.count)])
            _ = fast.apply(part)
            _ = slow.apply(part)
        }
        // A dense run of keys (a handoff batch) or keys scattered over the whole span
        // (repairs), more than the read-ahead reaches.
        let named: [Int]
        if seed % 2 == 0 {
            let first = Int.random(in: 0..<(Self.keyCount - 120), using: &random)
            named = Array(first..<(first + Int.random(in: 32...120, using: &random)))
        } else {
            named = Array(
                (0..<Self.keyCount).shuffled(using: &random).prefix(Int.random(in: 32...60, using: &random)))
        }
        var commands: [StorageCommand] = []
        for index in named {
            let incoming: StoredObject
            switch random.next() % 3 {
            case 0: incoming = held[index] ?? StoredObject()
            case 1: incoming = try Self.written(index, by: 2, random: &random)
            default: incoming = try Self.written(index, by: 3, random: &random)
            }
            commands.append(
                random.chance(0.5) ? .reconcile(Self.key(index), incoming) : .merge(Self.key(index), incoming)
            )
            // A coordinated write and a load among the merges, on a named row.
            if random.chance(0.05) {
                commands.append(.coordinate(Self.key(index), ReplicaStoreTests.put("c")))
            }
            if random.chance(0.05) { commands.append(.load(Self.key(index))) }
        }
        let together = fast.apply(commands)
        let oneByOne = commands.map { slow.apply([$0])[0] }
        #expect(together.count == oneByOne.count)
        let differing = zip(together, oneByOne).enumerated().filter { $0.element.0 != $0.element.1 }.map(
            \.offset)
        #expect(differing.isEmpty, "commands answered otherwise: \(differing)")
        #expect(try Self.contents(fastEngine, .data) == Self.contents(slowEngine, .data))
        #expect(try Self.contents(fastEngine, .antiEntropy) == Self.contents(slowEngine, .antiEntropy))
        #expect(
            fast.antiEntropy.tree(of: ReplicaStoreTests.partition)?.segmentHashes
                == slow.antiEntropy.tree(of: ReplicaStoreTests.partition)?.segmentHashes)
    }

    @Test(
        "it vouches for the named span when it reads it all, and only through its last row when it stops early"
    )
    func reach() throws {
        var random = SeededRandom(seed: 7)
        let engine = MemoryStorageEngine()
        let store = try Self.store(actor: 1, engine: engine)
        // Every even key is held.
        let held = Array(stride(from: 0, to: Self.keyCount, by: 2))
        for start in stride(from: 0, to: held.count, by: 20) {
            _ = store.apply(
                try held[start..<min(start + 20, held.count)].map {
                    .merge(Self.key($0), try Self.written($0, by: 2, random: &random))
                })
        }
        func merges(_ indexes: some Sequence<Int>) -> [StorageCommand] {
            indexes.map { .merge(Self.key($0), StoredObject()) }
        }
        // Too few rows: nothing read ahead.
        let few = ReadAhead(for: merges(100..<(100 + ReadAhead.minimumRows - 1)), in: engine)
        #expect(few.encoded(at: Self.key(100).bytes) == nil)
        // A dense run: every key in it answered, held or not; none outside it.
        let dense = ReadAhead(for: merges(100..<150), in: engine)
        for index in 100..<150 {
            let answer = try #require(dense.encoded(at: Self.key(index).bytes))
            #expect((answer != nil) == (index % 2 == 0))
            #expect(answer == (try engine.get(Self.key(index).bytes, in: .data)))
        }
        #expect(dense.encoded(at: Self.key(99).bytes) == nil)
        #expect(dense.encoded(at: Self.key(150).bytes) == nil)
        // Keys 0 and 399 with 30 between, over a span of 200 held rows: it reads
        // 2 × 32 + 64 = 128 rows, through key 254, and no further.
        let scattered = merges([0] + Array(200..<230) + [399])
        let sparse = ReadAhead(for: scattered, in: engine)
        let reach = (ReadAhead.minimumRows * ReadAhead.rowsPerNamedRow + ReadAhead.extraRows - 1) * 2
        #expect(try #require(sparse.encoded(at: Self.key(reach).bytes)) != nil)
        #expect(try #require(sparse.encoded(at: Self.key(reach - 1).bytes)) == nil)
        #expect(sparse.encoded(at: Self.key(reach + 1).bytes) == nil)
        #expect(sparse.encoded(at: Self.key(399).bytes) == nil)
        // Coordinated writes, loads and reaps name no row to read ahead.
        let coordinated = ReadAhead(
            for: (0..<64).map { .coordinate(Self.key($0), ReplicaStoreTests.put("x")) }, in: engine)
        #expect(coordinated.encoded(at: Self.key(0).bytes) == nil)
        // An engine whose cursors fetch pages or copy their range is never read ahead.
        let paged = ReadAhead(for: merges(100..<150), in: PagedEngine(engine))
        #expect(paged.encoded(at: Self.key(100).bytes) == nil)
    }

    @Test("it stops once it holds its bytes, and vouches only for the rows it read")
    func byteBound() throws {
        let engine = MemoryStorageEngine()
        var batch = WriteBatch()
        // 40 held rows of 300 KiB: 8 MiB is reached with the 28th.
        let rowBytes = 300 << 10
        for index in 0..<40 {
            batch.put(Self.key(index).bytes, Array(repeating: UInt8(index), count: rowBytes))
        }
        try engine.write(batch)
        let readAhead = ReadAhead(
            for: (0..<40).map { .reconcile(Self.key($0), StoredObject()) }, in: engine)
        let held = (ReadAhead.maximumBytes + rowBytes - 1) / rowBytes
        for index in 0..<held {
            #expect(try #require(readAhead.encoded(at: Self.key(index).bytes))?.count == rowBytes)
        }
        #expect(readAhead.encoded(at: Self.key(held).bytes) == nil)
    }
}

/// The memory engine, saying its cursors cannot stop anywhere (as the database engines'
/// cannot).
private final class PagedEngine: StorageEngine {
    let base: MemoryStorageEngine
    init(_ base: MemoryStorageEngine) { self.base = base }
    func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try base.get(key, in: keyspace)
    }
    func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError) -> any StorageCursor
    {
        try base.cursor(over: range, in: keyspace, direction: direction)
    }
    func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        try base.write(batch, durability: durability)
    }
    func snapshot() throws(StorageError) -> any StorageSnapshot { try base.snapshot() }
    func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        try base.estimateSize(of: range, in: keyspace)
    }
    func close() throws(StorageError) { try base.close() }
}
