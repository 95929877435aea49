import Foundation
import KVCore
import KVStorage
import KVStorageRocksDB
import Testing

/// What the RocksDB engine does beyond the shared conformance suite: its own edge cases
/// (open-ended range deletes, cursor bounds, lifetime of cursors and snapshots past
/// close, reopening, size estimates, settings).
@Suite("RocksDB engine specifics")
struct RocksDBEngineTests {
    private static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    private static func keys(_ entries: [StorageEntry]) -> [String] {
        entries.map { String(decoding: $0.key, as: UTF8.self) }
    }

    private static func withEngine(
        settings: RocksDBSettings = .init(), _ body: (RocksDBStorageEngine, String) throws -> Void
    ) throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-engine")
        defer { directory.remove() }
        let path = directory.path + "/db"
        let engine = try RocksDBStorageEngine(path: path, settings: settings)
        defer { try? engine.close() }
        try body(engine, path)
    }

    @Test("puts, deletes and empty values, each keyspace apart")
    func basicReadsAndWrites() throws {
        try Self.withEngine { engine, _ in
            var batch = WriteBatch()
            batch.put(Self.bytes("a"), Self.bytes("1"))
            batch.put(Self.bytes("a"), Self.bytes("meta"), in: .metadata)
            batch.put(Self.bytes("empty"), [])
            batch.put([], Self.bytes("empty key"))
            try engine.write(batch)
            #expect(try engine.get(Self.bytes("a"), in: .data) == Self.bytes("1"))
            #expect(try engine.get(Self.bytes("a"), in: .metadata) == Self.bytes("meta"))
            #expect(try engine.get(Self.bytes("a"), in: .hints) == nil)
            #expect(try engine.get(Self.bytes("empty"), in: .data) == [])
            #expect(try engine.get([], in: .data) == Self.bytes("empty key"))
            #expect(try engine.get(Self.bytes("missing"), in: .data) == nil)

            var removal = WriteBatch()
            removal.delete(Self.bytes("a"))
            removal.delete(Self.bytes("never there"))
            try engine.write(removal, durability: .buffered)
            #expect(try engine.get(Self.bytes("a"), in: .data) == nil)
            #expect(try engine.get(Self.bytes("a"), in: .metadata) == Self.bytes("meta"))
            try engine.write(WriteBatch())
        }
    }

    @Test("cursors honour exclusive upper bounds in both directions")
    func cursorBounds() throws {
        try Self.withEngine { engine, _ in
            var batch = WriteBatch()
            for key in ["a", "b", "c", "d", "e"] { batch.put(Self.bytes(key), Self.bytes(key)) }
            batch.put(Self.bytes("z"), Self.bytes("other keyspace"), in: .hints)
            try engine.write(batch)

            let bounded = EncodedKeyRange(lowerBound: Self.bytes("b"), upperBound: Self.bytes("d"))
            #expect(Self.keys(try engine.entries(in: bounded, of: .data)) == ["b", "c"])
            #expect(Self.keys(try engine.entries(in: bounded, of: .data, direction: .reverse)) == ["c", "b"])

            // Bounds that fall between keys.
            let between = EncodedKeyRange(lowerBound: Self.bytes("bb"), upperBound: Self.bytes("dd"))
            #expect(Self.keys(try engine.entries(in: between, of: .data)) == ["c", "d"])
            #expect(Self.keys(try engine.entries(in: between, of: .data, direction: .reverse)) == ["d", "c"])

            let tail = EncodedKeyRange(lowerBound: Self.bytes("c"), upperBound: nil)
            #expect(Self.keys(try engine.entries(in: tail, of: .data)) == ["c", "d", "e"])
            #expect(
                Self.keys(try engine.entries(in: tail, of: .data, direction: .reverse)) == ["e", "d", "c"])
            #expect(
                Self.keys(try engine.entries(in: .all, of: .data, direction: .reverse)) == [
                    "e", "d", "c", "b", "a",
                ])

            let empty = EncodedKeyRange(lowerBound: Self.bytes("d"), upperBound: Self.bytes("b"))
            #expect(try engine.entries(in: empty, of: .data).isEmpty)
            #expect(try engine.entries(in: empty, of: .data, direction: .reverse).isEmpty)
            #expect(Self.keys(try engine.entries(in: .all, of: .hints)) == ["z"])
            #expect(try engine.entries(in: .all, of: .antiEntropy).isEmpty)

            // A cursor sees the state at its creation, not later writes.
            let cursor = try engine.cursor(over: .all, in: .data, direction: .forward)
            var later = WriteBatch()
            later.put(Self.bytes("aa"), Self.bytes("later"))
            try engine.write(later)
            var seen: [String] = []
            while let entry = try cursor.next() { seen.append(String(decoding: entry.key, as: UTF8.self)) }
            #expect(seen == ["a", "b", "c", "d", "e"])
            #expect(try cursor.next() == nil)
        }
    }

    @Test("range deletes, bounded and open-ended, including puts earlier in the batch")
    func rangeDeletes() throws {
        try Self.withEngine { engine, _ in
            var batch = WriteBatch()
            for key in ["a", "b", "c", "d", "e"] { batch.put(Self.bytes(key), Self.bytes(key)) }
            try engine.write(batch)

            var bounded = WriteBatch()
            bounded.deleteRange(EncodedKeyRange(lowerBound: Self.bytes("b"), upperBound: Self.bytes("d")))
            bounded.deleteRange(EncodedKeyRange(lowerBound: Self.bytes("e"), upperBound: Self.bytes("a")))
            try engine.write(bounded)
            #expect(Self.keys(try engine.entries(in: .all, of: .data)) == ["a", "d", "e"])

            // The open-ended delete must also remove keys put earlier in the same batch
            // beyond the last stored key, and keep those put after it.
            var openEnded = WriteBatch()
            openEnded.put(Self.bytes("zz\u{FF}"), Self.bytes("earlier"))
            openEnded.put(Self.bytes("c"), Self.bytes("earlier"))
            openEnded.deleteRange(EncodedKeyRange(lowerBound: Self.bytes("c"), upperBound: nil))
            openEnded.put(Self.bytes("x"), Self.bytes("after"))
            try engine.write(openEnded)
            #expect(Self.keys(try engine.entries(in: .all, of: .data)) == ["a", "x"])

            var everything = WriteBatch()
            everything.deleteRange(.all)
            everything.deleteRange(.all, in: .hints)
            try engine.write(everything)
            #expect(try engine.entries(in: .all, of: .data).isEmpty)

            // Long keys of 0xFF bytes: no fixed "maximum key" bound would cover these.
            var highKeys = WriteBatch()
            highKeys.put([UInt8](repeating: 0xFF, count: 300), Self.bytes("high"))
            highKeys.put([UInt8](repeating: 0xFF, count: 301), Self.bytes("higher"))
            try engine.write(highKeys)
            var dropTail = WriteBatch()
            dropTail.deleteRange(EncodedKeyRange(lowerBound: [0xFF], upperBound: nil))
            try engine.write(dropTail)
            #expect(try engine.entries(in: .all, of: .data).isEmpty)
        }
    }

    @Test("snapshots are isolated from later writes")
    func snapshotIsolation() throws {
        try Self.withEngine { engine, _ in
            var first = WriteBatch()
            first.put(Self.bytes("k"), Self.bytes("old"))
            try engine.write(first)
            let snapshot = try engine.snapshot()
            var second = WriteBatch()
            second.put(Self.bytes("k"), Self.bytes("new"))
            second.put(Self.bytes("k2"), Self.bytes("new"))
            try engine.write(second)
            #expect(try snapshot.get(Self.bytes("k"), in: .data) == Self.bytes("old"))
            #expect(try snapshot.get(Self.bytes("k2"), in: .data) == nil)
            #expect(Self.keys(try snapshot.entries(in: .all, of: .data)) == ["k"])
            #expect(try engine.get(Self.bytes("k"), in: .data) == Self.bytes("new"))
        }
    }

    @Test(
        "a backup holds every keyspace as of its instant, opens as a store of its own, and is never overwritten"
    )
    func backups() throws {
        try Self.withEngine { engine, path in
            var first = WriteBatch()
            first.put(Self.bytes("row"), Self.bytes("v1"))
            first.put(Self.bytes("hint"), Self.bytes("h"), in: .hints)
            try engine.write(first, durability: .buffered)
            let backup = path + "-backup"
            try engine.backup(to: backup)
            var later = WriteBatch()
            later.put(Self.bytes("row"), Self.bytes("v2"))
            later.put(Self.bytes("later"), Self.bytes("x"))
            try engine.write(later)
            // Never into an existing directory.
            #expect(throws: StorageError.self) { try engine.backup(to: backup) }
            let copy = try RocksDBStorageEngine(path: backup)
            defer { try? copy.close() }
            #expect(try copy.get(Self.bytes("row"), in: .data) == Self.bytes("v1"))
            #expect(try copy.get(Self.bytes("later"), in: .data) == nil)
            #expect(try copy.get(Self.bytes("hint"), in: .hints) == Self.bytes("h"))
            #expect(try engine.get(Self.bytes("row"), in: .data) == Self.bytes("v2"))
        }
    }

    @Test("close is idempotent, later calls throw closed, and data survives reopening")
    func closeAndReopen() throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-close")
        defer { directory.remove() }
        let path = directory.path + "/db"
        let engine = try RocksDBStorageEngine(path: path)
        var batch = WriteBatch()
        batch.put(Self.bytes("synced"), Self.bytes("1"))
        try engine.write(batch)
        var buffered = WriteBatch()
        buffered.put(Self.bytes("buffered"), Self.bytes("2"), in: .antiEntropy)
        try engine.write(buffered, durability: .buffered)

        // Another engine on the same directory is refused while this one holds LOCK.
        #expect {
            _ = try RocksDBStorageEngine(path: path)
        } throws: { error in
            (error as? StorageError)?.kind == .openFailed
        }

        try engine.close()
        try engine.close()
        #expect(throws: StorageError.closed) { try engine.get(Self.bytes("synced"), in: .data) }
        #expect(throws: StorageError.closed) { try engine.write(batch) }
        #expect(throws: StorageError.closed) { try engine.snapshot() }
        #expect(throws: StorageError.closed) { try engine.cursor(over: .all, in: .data, direction: .forward) }
        #expect(throws: StorageError.closed) { try engine.estimateSize(of: .all, in: .data) }
        #expect(engine.statistics().walWrites == 2)

        let reopened = try RocksDBStorageEngine(path: path)
        defer { try? reopened.close() }
        #expect(try reopened.get(Self.bytes("synced"), in: .data) == Self.bytes("1"))
        #expect(try reopened.get(Self.bytes("buffered"), in: .antiEntropy) == Self.bytes("2"))
    }

    @Test("cursors and snapshots keep the database open past close, until released")
    func readersOutliveClose() throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-outlive")
        defer { directory.remove() }
        let path = directory.path + "/db"
        let engine = try RocksDBStorageEngine(path: path)
        var batch = WriteBatch()
        for key in ["a", "b", "c"] { batch.put(Self.bytes(key), Self.bytes(key)) }
        try engine.write(batch)
        var cursor: (any StorageCursor)? = try engine.cursor(over: .all, in: .data, direction: .forward)
        var snapshot: (any StorageSnapshot)? = try engine.snapshot()
        #expect(try cursor?.next()?.key == Self.bytes("a"))
        try engine.close()

        #expect(try cursor?.next()?.key == Self.bytes("b"))
        #expect(try snapshot?.get(Self.bytes("c"), in: .data) == Self.bytes("c"))
        #expect(Self.keys(try snapshot?.entries(in: .all, of: .data) ?? []) == ["a", "b", "c"])
        // Still open (the readers hold it), so its LOCK is still taken.
        #expect(throws: StorageError.self) { _ = try RocksDBStorageEngine(path: path) }

        // An exhausted cursor lets go of the database even while it is still referenced.
        #expect(try cursor?.next()?.key == Self.bytes("c"))
        #expect(try cursor?.next() == nil)
        snapshot = nil
        let reopened = try RocksDBStorageEngine(path: path)
        #expect(try reopened.get(Self.bytes("b"), in: .data) == Self.bytes("b"))
        try reopened.close()
        cursor = nil
    }

    @Test("size estimates cover memtables and table files")
    func sizeEstimates() throws {
        // A tiny write buffer forces most of the data into table files.
        let settings = RocksDBSettings(writeBufferBytes: 64 << 10)
        try Self.withEngine(settings: settings) { engine, _ in
            #expect(
                try engine.estimateSize(of: .all, in: .data) == StorageSizeEstimate(bytes: 0, keyCount: 0))
            let count = 4000
            let value = [UInt8](repeating: 7, count: 100)
            for start in stride(from: 0, to: count, by: 100) {
                var batch = WriteBatch()
                for index in start..<(start + 100) {
                    batch.put(Self.bytes(String(format: "key-%06d", index)), value)
                }
                try engine.write(batch, durability: .buffered)
            }
            let all = try engine.estimateSize(of: .all, in: .data)
            #expect(all.keyCount >= UInt64(count / 2) && all.keyCount <= UInt64(count * 2), "\(all)")
            #expect(all.bytes > 0)
            let half = try engine.estimateSize(
                of: EncodedKeyRange(lowerBound: Self.bytes("key-"), upperBound: Self.bytes("key-002000")),
                in: .data)
            #expect(half.keyCount > 0 && half.keyCount < all.keyCount, "\(half) of \(all)")
            #expect(half.bytes < all.bytes)
            let none = EncodedKeyRange(lowerBound: Self.bytes("zzz"), upperBound: nil)
            #expect(try engine.estimateSize(of: none, in: .data).keyCount == 0)
            #expect(
                try engine.estimateSize(of: .all, in: .hints) == StorageSizeEstimate(bytes: 0, keyCount: 0))
        }
    }

    @Test("a fresh store's estimate counts what is still in the memtable")
    func memtableEstimate() throws {
        try Self.withEngine { engine, _ in
            var batch = WriteBatch()
            for index in 0..<50 { batch.put(Self.bytes("k\(index)"), [UInt8](repeating: 1, count: 10)) }
            try engine.write(batch)
            let estimate = try engine.estimateSize(of: .prefixed(by: Self.bytes("k")), in: .data)
            #expect(estimate.keyCount == 50)
            #expect(estimate.bytes > 500)
        }
    }

    @Test("settings are validated")
    func settingsValidation() {
        #expect(RocksDBSettings().validate().isEmpty)
        let bad = RocksDBSettings(
            blockCacheBytes: -1, bloomFilterBitsPerKey: 100, writeBufferBytes: 10, maxOpenFiles: 3)
        #expect(bad.validate().count == 4)
        #expect {
            _ = try RocksDBStorageEngine(path: "unused", settings: bad)
        } throws: { error in
            (error as? StorageError)?.kind == .invalidArgument
        }
        for compression in RocksDBSettings.Compression.allCases {
            #expect(RocksDBSettings(compression: compression).validate().isEmpty)
        }
    }

    @Test("every compression opens and round-trips", arguments: RocksDBSettings.Compression.allCases)
    func compressionsWork(_ compression: RocksDBSettings.Compression) throws {
        try Self.withEngine(settings: RocksDBSettings(bloomFilterBitsPerKey: 0, compression: compression)) {
            engine, _ in
            var batch = WriteBatch()
            batch.put(Self.bytes("k"), Self.bytes("v"))
            try engine.write(batch)
            // Into a table file, so the compression really runs on write and on read.
            try engine.flushMemtables()
            #expect(try engine.get(Self.bytes("k"), in: .data) == Self.bytes("v"))
        }
    }
}
