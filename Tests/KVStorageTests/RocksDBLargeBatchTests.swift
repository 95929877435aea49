import Foundation
import KVCore
import KVStorage
import KVStorageRocksDB
import KVTestSupport
import Testing

/// Large batches: written without the WAL and flushed before `write` returns, one small
/// table file each until `compact` merges them and returns the space of overwritten and
/// deleted values, with and without blob files. The kill -9 variant of RocksDBCrashTests
/// checks the same path against a real crash.
@Suite("RocksDB large batches")
struct RocksDBLargeBatchTests {
    /// 600 KiB that compression cannot shrink, so file sizes show where the bytes are.
    private static let large: [UInt8] = {
        var generator = SystemRandomNumberGenerator()
        return (0..<(600 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }()

    private static func key(_ index: Int) -> [UInt8] { Array(String(format: "value-%04d", index).utf8) }

    private static func files(in path: String, endingWith suffix: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(suffix) }
            .count
    }

    @Test("a large synced batch skips the log and is in table files when the write returns")
    func largeBatchIsFlushed() throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-large")
        defer { directory.remove() }
        let engine = try RocksDBStorageEngine(path: directory.path + "/db")
        defer { try? engine.close() }

        var small = WriteBatch()
        small.put(Array("small".utf8), Array("logged".utf8))
        try engine.write(small, durability: .synced)
        let before = engine.statistics().walBytes
        #expect(before > 0, "a small batch goes through the log")

        var batch = WriteBatch()
        batch.put(Self.key(1), Self.large)
        batch.put(Self.key(1), [1], in: .antiEntropy)
        try engine.write(batch, durability: .synced)
        #expect(engine.statistics().walBytes - before < 1024, "the large batch was logged")

        // A copy of the files taken now is what a crash would leave: the batch is in no
        // log, so finding it there shows the flush happened before `write` returned, in
        // both keyspaces.
        let copy = directory.path + "/crashed"
        try FileManager.default.copyItem(atPath: directory.path + "/db", toPath: copy)
        let reopened = try RocksDBStorageEngine(path: copy)
        defer { try? reopened.close() }
        #expect(try reopened.get(Self.key(1), in: .data) == Self.large)
        #expect(try reopened.get(Self.key(1), in: .antiEntropy) == [1])
        #expect(try reopened.get(Array("small".utf8), in: .data) == Array("logged".utf8))
    }

    @Test("with the unlogged batch size at 0 a large batch goes through the log")
    func unloggedBatchesCanBeTurnedOff() throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-large")
        defer { directory.remove() }
        let engine = try RocksDBStorageEngine(
            path: directory.path + "/db", settings: RocksDBSettings(unloggedBatchBytes: 0))
        defer { try? engine.close() }
        var batch = WriteBatch()
        batch.put(Self.key(1), Self.large)
        try engine.write(batch, durability: .synced)
        #expect(engine.statistics().walBytes >= UInt64(Self.large.count))
        #expect(try engine.get(Self.key(1), in: .data) == Self.large)
    }

    @Test(
        "compact merges the one-flush files and returns the space of overwritten and deleted large values",
        arguments: [0, 256 << 10])
    func compactReclaimsSpace(blobThreshold: Int) throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-large")
        defer { directory.remove() }
        let path = directory.path + "/db"
        let engine = try RocksDBStorageEngine(
            path: path, settings: RocksDBSettings(blobThresholdBytes: blobThreshold))
        defer { try? engine.close() }
        var other = WriteBatch()
        other.put(Array("zz-other".utf8), Array("kept".utf8))
        try engine.write(other, durability: .synced)
        let baseline = DiskUsage.bytes(under: path)

        let count = 40
        for index in 0..<count {
            var batch = WriteBatch()
            batch.put(Self.key(index), Self.large)
            try engine.write(batch, durability: .synced)
        }
        let full = DiskUsage.bytes(under: path)
        #expect(
            full - baseline > count * Self.large.count * 9 / 10, "\(full) bytes after, \(baseline) before")
        if blobThreshold == 0 {
            // Each batch was a flush of its own, a table file each; after compaction
            // (whatever RocksDB's own compactions merged before) few large ones remain.
            try engine.compact(
                EncodedKeyRange(lowerBound: Self.key(0), upperBound: Self.key(count)), in: .data)
            let merged = Self.files(in: path, endingWith: ".sst")
            #expect(merged <= 4, "\(merged) table files after compaction")
        }
        #expect(try engine.get(Self.key(count - 1), in: .data) == Self.large)

        // Half overwritten by a small value, half deleted.
        var shrink = WriteBatch()
        for index in 0..<count {
            if index.isMultiple(of: 2) {
                shrink.put(Self.key(index), Array("small".utf8))
            } else {
                shrink.delete(Self.key(index))
            }
        }
        try engine.write(shrink, durability: .synced)
        try engine.compact(
            EncodedKeyRange(lowerBound: Self.key(0), upperBound: Self.key(count)), in: .data)
        let after = DiskUsage.bytes(under: path)
        #expect(
            after - baseline < 4 * Self.large.count,
            "\(after - baseline) bytes above the baseline after compaction, \(full - baseline) before")
        #expect(try engine.get(Self.key(0), in: .data) == Array("small".utf8))
        #expect(try engine.get(Self.key(1), in: .data) == nil)
        #expect(try engine.get(Array("zz-other".utf8), in: .data) == Array("kept".utf8))
    }

    @Test("negative sizes are refused")
    func settingsValidation() {
        #expect(RocksDBSettings(unloggedBatchBytes: -1).validate().count == 1)
        #expect(RocksDBSettings(blobThresholdBytes: -1).validate().count == 1)
        #expect(RocksDBSettings(unloggedBatchBytes: 0, blobThresholdBytes: 0).validate().isEmpty)
    }
}
