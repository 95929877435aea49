import KVCore
import KVStorage
import Testing

/// The behaviour every ``StorageEngine`` must have. Each test runs once per engine.
@Suite("Storage engine conformance")
struct StorageConformanceTests {
    @Test(arguments: EngineKind.allCases)
    func getReturnsNilForMissingKeys(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        #expect(try engine.get(bytes("missing"), in: .data) == nil)
    }

    @Test(arguments: EngineKind.allCases)
    func putOverwriteAndDelete(kind: EngineKind) throws {
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        batch.put(bytes("k"), bytes("v1"))
        try engine.write(batch)
        #expect(try engine.get(bytes("k"), in: .data) == bytes("v1"))
        batch = WriteBatch()
        batch.put(bytes("k"), bytes("v2"))
        try engine.write(batch)
        #expect(try engine.get(bytes("k"), in: .data) == bytes("v2"))
        batch = WriteBatch()
        batch.delete(bytes("k"))
        batch.delete(bytes("never-existed"))
        try engine.write(batch)
        #expect(try engine.get(bytes("k"), in: .data) == nil)
    }

    @Test(arguments: EngineKind.allCases)
    func batchAppliesOperationsInOrder(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        batch.put(bytes("a"), bytes("1"))
        batch.delete(bytes("a"))
        batch.put(bytes("b"), bytes("1"))
        batch.put(bytes("b"), bytes("2"))
        try engine.write(batch, durability: .buffered)
        #expect(try engine.get(bytes("a"), in: .data) == nil)
        #expect(try engine.get(bytes("b"), in: .data) == bytes("2"))
        try engine.write(WriteBatch())  // an empty batch is a no-op
    }

    @Test(arguments: EngineKind.allCases)
    func keyspacesAreIsolated(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        for keyspace in Keyspace.allCases {
            batch.put(bytes("same"), bytes(keyspace.rawValue), in: keyspace)
        }
        try engine.write(batch)
        for keyspace in Keyspace.allCases {
            #expect(try engine.get(bytes("same"), in: keyspace) == bytes(keyspace.rawValue))
            #expect(try engine.entries(in: .all, of: keyspace).count == 1)
        }
        batch = WriteBatch()
        batch.deleteRange(.all, in: .hints)
        try engine.write(batch)
        #expect(try engine.get(bytes("same"), in: .hints) == nil)
        #expect(try engine.get(bytes("same"), in: .data) == bytes("data"))
    }

    @Test(arguments: EngineKind.allCases)
    func binaryKeysAndValuesRoundTrip(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        let all = (0...255).map { UInt8($0) }
        var batch = WriteBatch()
        batch.put(all, all.reversed())
        batch.put([0], [])
        batch.put([0xFF, 0xFF], [0])
        batch.put(bytes("large"), [UInt8](repeating: 7, count: 1 << 20))
        try engine.write(batch)
        #expect(try engine.get(all, in: .data) == all.reversed())
        #expect(try engine.get([0], in: .data) == [])
        #expect(try engine.get([0xFF, 0xFF], in: .data) == [0])
        #expect(try engine.get(bytes("large"), in: .data)?.count == 1 << 20)
    }

    @Test(arguments: EngineKind.allCases)
    func cursorsWalkRangesInBothDirections(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        let keys: [[UInt8]] = [[0], [0, 0], [0, 1], [1], [1, 0], [2], [0xFF], [0xFF, 0xFF]]
        var batch = WriteBatch()
        for key in keys.shuffled() { batch.put(key, key) }
        try engine.write(batch)

        let everything = try engine.entries(in: .all, of: .data).map(\.key)
        #expect(everything == keys)
        #expect(try engine.entries(in: .all, of: .data, direction: .reverse).map(\.key) == keys.reversed())

        // Lower bound inclusive, upper bound exclusive.
        let middle = EncodedKeyRange(lowerBound: [0, 1], upperBound: [2])
        #expect(try engine.entries(in: middle, of: .data).map(\.key) == [[0, 1], [1], [1, 0]])
        #expect(
            try engine.entries(in: middle, of: .data, direction: .reverse).map(\.key) == [
                [1, 0], [1], [0, 1],
            ])
        // Open upper bound.
        let tail = EncodedKeyRange(lowerBound: [1, 0], upperBound: nil)
        #expect(try engine.entries(in: tail, of: .data).map(\.key) == [[1, 0], [2], [0xFF], [0xFF, 0xFF]])
        #expect(
            try engine.entries(in: tail, of: .data, direction: .reverse).map(\.key) == [
                [0xFF, 0xFF], [0xFF], [2], [1, 0],
            ])
        // Prefix ranges, including one whose successor does not exist.
        #expect(try engine.entries(in: .prefixed(by: [0]), of: .data).map(\.key) == [[0], [0, 0], [0, 1]])
        #expect(
            try engine.entries(in: .prefixed(by: [0xFF]), of: .data, direction: .reverse).map(\.key) == [
                [0xFF, 0xFF], [0xFF],
            ])
        // Empty and inverted ranges yield nothing.
        #expect(try engine.entries(in: EncodedKeyRange(lowerBound: [3], upperBound: [4]), of: .data).isEmpty)
        #expect(try engine.entries(in: EncodedKeyRange(lowerBound: [2], upperBound: [1]), of: .data).isEmpty)
        #expect(
            try engine.entries(
                in: EncodedKeyRange(lowerBound: [2], upperBound: [1]), of: .data, direction: .reverse
            ).isEmpty)
        // A limit stops early, and abandoning a cursor halfway is harmless.
        #expect(try engine.entries(in: .all, of: .data, limit: 3).count == 3)
        let abandoned = try engine.cursor(over: .all, in: .data, direction: .forward)
        _ = try abandoned.next()
        batch = WriteBatch()
        batch.put([3], [3])
        try engine.write(batch)
        #expect(try engine.get([3], in: .data) == [3])
    }

    @Test(arguments: EngineKind.allCases)
    func interleavedCursorsAreIndependent(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        for index in 0..<100 { batch.put([UInt8(index)], [UInt8(index)]) }
        try engine.write(batch)
        let first = try engine.cursor(over: .all, in: .data, direction: .forward)
        let second = try engine.cursor(over: .all, in: .data, direction: .reverse)
        for index in 0..<100 {
            #expect(try first.next()?.key == [UInt8(index)])
            #expect(try second.next()?.key == [UInt8(99 - index)])
        }
        #expect(try first.next() == nil)
        #expect(try second.next() == nil)
    }

    @Test(arguments: EngineKind.allCases)
    func deleteRangeRemovesExactlyTheRange(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        for index in 0..<10 { batch.put([UInt8(index)], [1]) }
        batch.put([5, 5], [1])
        batch.put([0xFF, 0xFF, 0xFF], [1])
        try engine.write(batch)
        batch = WriteBatch()
        batch.deleteRange(EncodedKeyRange(lowerBound: [2], upperBound: [5]))
        batch.deleteRange(.prefixed(by: [0xFF]))
        batch.deleteRange(EncodedKeyRange(lowerBound: [9], upperBound: [8]))  // inverted: no-op
        try engine.write(batch)
        let remaining = try engine.entries(in: .all, of: .data).map(\.key)
        #expect(remaining == [[0], [1], [5], [5, 5], [6], [7], [8], [9]])
        batch = WriteBatch()
        batch.deleteRange(EncodedKeyRange(lowerBound: [5, 5], upperBound: nil))
        try engine.write(batch)
        #expect(try engine.entries(in: .all, of: .data).map(\.key) == [[0], [1], [5]])
    }

    @Test(arguments: EngineKind.allCases)
    func snapshotsAreConsistent(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        batch.put(bytes("a"), bytes("old"))
        batch.put(bytes("b"), bytes("old"))
        try engine.write(batch)
        let snapshot = try engine.snapshot()
        let cursorBeforeWrite = try engine.cursor(over: .all, in: .data, direction: .forward)
        batch = WriteBatch()
        batch.put(bytes("a"), bytes("new"))
        batch.delete(bytes("b"))
        batch.put(bytes("c"), bytes("new"))
        try engine.write(batch)

        #expect(try snapshot.get(bytes("a"), in: .data) == bytes("old"))
        #expect(try snapshot.get(bytes("b"), in: .data) == bytes("old"))
        #expect(try snapshot.get(bytes("c"), in: .data) == nil)
        #expect(try snapshot.entries(in: .all, of: .data).map(\.value) == [bytes("old"), bytes("old")])
        // A cursor sees the state at its creation, like a snapshot.
        var seen: [StorageEntry] = []
        while let entry = try cursorBeforeWrite.next() { seen.append(entry) }
        #expect(seen.map(\.key) == [bytes("a"), bytes("b")])
        #expect(seen.map(\.value) == [bytes("old"), bytes("old")])
        // The engine itself sees the new state.
        #expect(try engine.entries(in: .all, of: .data).map(\.key) == [bytes("a"), bytes("c")])
    }

    @Test(arguments: EngineKind.allCases)
    func partitionIterationSeesOnlyThatPartition(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        var batch = WriteBatch()
        for partition in [0, 1, 2, 255, 256, UInt32.max] {
            for row in 0..<3 {
                let key = StorageLayout.dataKey(
                    partition: PartitionID(rawValue: partition), namespace: "ns", table: "t",
                    key: KeyEncoding.encode([.int64(Int64(row))]))
                batch.put(key, [UInt8(row)])
            }
        }
        try engine.write(batch)
        for partition in [0, 1, 255, 256, UInt32.max] {
            let rows = try engine.rows(inPartition: PartitionID(rawValue: partition))
            var values: [[UInt8]] = []
            while let entry = try rows.next() {
                #expect(
                    entry.key.starts(with: StorageLayout.partitionPrefix(PartitionID(rawValue: partition))))
                values.append(entry.value)
            }
            #expect(values == [[0], [1], [2]])
        }
        #expect(
            try engine.entries(in: StorageLayout.partitionRange(PartitionID(rawValue: 7)), of: .data).isEmpty)
    }

    @Test(arguments: EngineKind.allCases)
    func sizeEstimatesGrowWithData(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        let empty = try engine.estimateSize(of: .all, in: .data)
        #expect(empty.keyCount == 0)
        var batch = WriteBatch()
        for index in 0..<2000 {
            batch.put(bytes("key-\(index)"), [UInt8](repeating: UInt8(index % 251), count: 100))
        }
        try engine.write(batch)
        let full = try engine.estimateSize(of: .all, in: .data)
        // Estimates are approximate; they must still see that data arrived.
        #expect(full.keyCount >= 1000 && full.keyCount <= 4000, "\(full)")
        #expect(full.bytes > 0, "\(full)")
        let nothing = try engine.estimateSize(of: .prefixed(by: bytes("zzz")), in: .data)
        #expect(nothing.keyCount < 100, "\(nothing)")
    }

    @Test(arguments: EngineKind.allCases)
    func closedEngineRefusesEveryOperation(kind: EngineKind) throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        try engine.close()
        try engine.close()  // idempotent
        #expect(throws: StorageError.closed) { try engine.get([1], in: .data) }
        #expect(throws: StorageError.closed) { try engine.write(WriteBatch()) }
        #expect(throws: StorageError.closed) { try engine.snapshot() }
        #expect(throws: StorageError.closed) { try engine.cursor(over: .all, in: .data, direction: .forward) }
        #expect(throws: StorageError.closed) { try engine.estimateSize(of: .all, in: .data) }
    }

    @Test(arguments: EngineKind.allCases)
    func dataSurvivesCloseAndReopen(kind: EngineKind) throws {
        let fixture = EngineFixture(kind)
        var engine = try fixture.open()
        var batch = WriteBatch()
        batch.put(bytes("kept"), bytes("1"))
        batch.put(bytes("meta"), bytes("2"), in: .metadata)
        batch.put(bytes("gone"), bytes("3"))
        try engine.write(batch)
        batch = WriteBatch()
        batch.delete(bytes("gone"))
        try engine.write(batch)
        try engine.close()
        engine = try fixture.open()
        defer { try? engine.close() }
        #expect(try engine.get(bytes("kept"), in: .data) == bytes("1"))
        #expect(try engine.get(bytes("meta"), in: .metadata) == bytes("2"))
        #expect(try engine.get(bytes("gone"), in: .data) == nil)
    }

    @Test(arguments: EngineKind.allCases)
    func concurrentWritersAllLand(kind: EngineKind) async throws {
        // The fixture owns the directory: it must live as long as the engine.
        let fixture = EngineFixture(kind)
        let engine = try fixture.open()
        defer { try? engine.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    for index in 0..<50 {
                        var batch = WriteBatch()
                        batch.put(bytes("w\(writer)-\(index)"), [UInt8(writer)])
                        try engine.write(batch)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try engine.entries(in: .all, of: .data).count == 400)
    }
}
