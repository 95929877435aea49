import Foundation
import KVStorage
import KVStorageRocksDB
import Synchronization
import Testing

/// Shows that concurrent synced writers share WAL fsyncs (group commit) instead of
/// paying one each.
@Suite("RocksDB group commit")
struct RocksDBGroupCommitTests {
    @Test("8 threads × 200 synced single-put writes share WAL syncs and all land")
    func concurrentSyncedWritesAreGrouped() throws {
        let directory = try RocksDBTestDirectory(prefix: "rocksdb-group-commit")
        defer { directory.remove() }
        let engine = try RocksDBStorageEngine(path: directory.path + "/db")
        defer { try? engine.close() }

        let threads = 8
        let writesPerThread = 200
        let failures = RocksDBFailureLog()
        // Real threads released together by one barrier, so all eight are inside
        // `write` at once; a Dispatch pool would run only as many as there are cores.
        let start = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
        for thread in 0..<threads {
            finished.enter()
            Thread {
                start.wait()
                for sequence in 0..<writesPerThread {
                    var batch = WriteBatch()
                    batch.put(Self.key(thread, sequence), Self.value(thread, sequence))
                    do {
                        try engine.write(batch, durability: .synced)
                    } catch {
                        failures.record("thread \(thread) write \(sequence): \(error)")
                    }
                }
                finished.leave()
            }.start()
        }
        for _ in 0..<threads { start.signal() }
        finished.wait()
        #expect(failures.messages.isEmpty, "\(failures.messages)")

        for thread in 0..<threads {
            for sequence in 0..<writesPerThread {
                #expect(try engine.get(Self.key(thread, sequence), in: .data) == Self.value(thread, sequence))
            }
        }

        // RocksDB's write thread makes one writer the leader of each group; the leader
        // writes the whole group to the WAL and fsyncs once. So:
        // - `writes` (self + other) must account for every write;
        // - `writesDoneByOther` > 0 and `walSyncs` < writes happen only when some write
        //   rode along in another thread's group. If the engine serialized writes (say,
        //   with its own lock around rocksdb_write), every write would lead its own
        //   group of one: other == 0 and syncs == writes, and this test fails.
        // Both counters are exact tickers (not sampled), so the check is deterministic
        // given that grouping happens; with 8 writers blocked in fsync on 2 cores it
        // happens in practice on every run.
        let statistics = engine.statistics()
        let total = UInt64(threads * writesPerThread)
        print(
            "group commit: \(total) synced writes, \(statistics.walSyncs) WAL syncs, "
                + "\(statistics.writeGroups) groups, \(statistics.writesDoneByOther) writes done by another thread"
        )
        #expect(statistics.writes == total)
        #expect(statistics.walSyncs > 0)
        #expect(statistics.writesDoneByOther > 0)
        #expect(statistics.walSyncs < total)
        #expect(statistics.writeGroups < total)
    }

    static func key(_ thread: Int, _ sequence: Int) -> [UInt8] {
        Array("g\(thread)-\(sequence)".utf8)
    }

    static func value(_ thread: Int, _ sequence: Int) -> [UInt8] {
        Array("value-\(thread)-\(sequence)".utf8)
    }
}

/// Collects failures from worker threads, where `#expect` has no test to report to.
final class RocksDBFailureLog: Sendable {
    private let storage = Mutex<[String]>([])

    func record(_ message: String) {
        storage.withLock { $0.append(message) }
    }

    var messages: [String] { storage.withLock { $0 } }
}

/// A fresh directory under the system temporary directory, for one test's databases.
struct RocksDBTestDirectory: Sendable {
    /// The directory's path.
    let path: String

    init(prefix: String) throws {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(prefix)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        path = url.path
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
