import Foundation
import KVStorage
import KVStorageRocksDB
import KVTestSupport
import Synchronization
import Testing

/// Kills a process that writes through the RocksDB engine with SIGKILL at a random moment
/// and checks that every write it had acknowledged survives, with its exact value.
///
/// What this proves: acknowledged (`write` returned) writes are in the WAL, not only in the
/// dying process's memory, and recovery replays them atomically and in order. What it
/// cannot prove: that they were fsynced. After SIGKILL the kernel still writes out the
/// page cache, so even `.buffered` writes survive; losing unsynced data takes a power cut
/// (a VM or device-mapper fault injection), which is out of reach of a unit test.
///
/// The writer is the `StorageCrashWriter` executable, built with the tests. Each of its
/// threads writes `t<thread>-<seq>` in sequence order and prints `committed <key>` after
/// each write returns; the delay before the kill is drawn from a seeded generator whose
/// seed is printed (set `KV_CRASH_SEED` to replay a run).
@Suite("RocksDB crash recovery (kill -9)", .serialized)
struct RocksDBCrashTests {
    static let threads = 4
    /// More than a writer can do in the longest round, so it is always killed mid-run.
    static let writesPerThread = 1_000_000

    /// Must match `crashWriterValue(for:)` in Sources/StorageCrashWriter/main.swift.
    static func expectedValue(for key: String) -> [UInt8] {
        Array("value-of-\(key)|\(String(key.reversed()))".utf8)
    }

    /// Must match `crashWriterLargeValue(for:)` in Sources/StorageCrashWriter/main.swift.
    static func expectedLargeValue(for key: String) -> [UInt8] {
        let base = expectedValue(for: key)
        var value: [UInt8] = []
        value.reserveCapacity((600 << 10) + base.count)
        while value.count < 600 << 10 { value.append(contentsOf: base) }
        return value
    }

    /// The writes of the default mode, and large ones (over the unlogged batch size, so
    /// nothing of them is in the WAL: only the flush before the acknowledgement keeps
    /// them, and a kill before it leaves nothing of the batch in either keyspace).
    enum Mode: String, CaseIterable, Sendable {
        case small, large

        var rounds: Int { self == .small ? 20 : 8 }

        func expected(for key: String) -> [UInt8] {
            self == .small ? expectedValue(for: key) : expectedLargeValue(for: key)
        }
    }

    @Test("acknowledged writes survive SIGKILL", .timeLimit(.minutes(2)), arguments: Mode.allCases)
    func acknowledgedWritesSurviveKill(mode: Mode) throws {
        let writer = try Self.crashWriterPath()
        let seed =
            ProcessInfo.processInfo.environment["KV_CRASH_SEED"].flatMap { UInt64($0) }
            ?? UInt64.random(in: 1...UInt64.max)
        print("RocksDB crash test seed: \(seed) (replay with KV_CRASH_SEED=\(seed))")
        var generator = SplitMix64(seed: seed)

        var totalCommitted = 0
        for round in 1...mode.rounds {
            let delay = Int.random(in: 50...400, using: &generator)
            let directory = try RocksDBTestDirectory(prefix: "rocksdb-crash")
            defer { directory.remove() }
            let path = directory.path + "/db"
            let outcome = try Self.runAndKill(
                writer: writer, path: path, delayMilliseconds: delay, mode: mode)
            let committed = try Self.checkRecovered(
                path: path, output: outcome.output, round: round, seed: seed, mode: mode)
            print(
                "round \(round): killed after \(delay) ms past the first commit, \(committed) writes acknowledged"
            )
            // The round waited for a first acknowledged write before its delay, so a round
            // with none means the writer never wrote: a failure, not a vacuous pass.
            #expect(committed > 0, "round \(round) (seed \(seed)): the writer acknowledged no write")
            #expect(
                !outcome.finished,
                "round \(round): the writer finished before the kill; raise writesPerThread")
            totalCommitted += committed
        }
        #expect(totalCommitted > 0)
    }

    /// Starts the writer, waits for its first acknowledged write plus `delayMilliseconds`,
    /// kills it with SIGKILL and returns everything it printed.
    private static func runAndKill(writer: String, path: String, delayMilliseconds: Int, mode: Mode) throws
        -> (output: [UInt8], finished: Bool)
    {
        let child = try ChildProcess(
            executable: writer,
            arguments: [path, String(threads), String(writesPerThread)] + (mode == .large ? ["large"] : []))
        // Time the kill from the first commit, not from the spawn: start-up time varies
        // (debug build, cold caches), and a kill before any write would test nothing.
        let deadline = Date().addingTimeInterval(20)
        // The writer prints nothing but `committed` lines before `done`, so its first
        // newline marks its first acknowledged write.
        while !child.outputSoFar().contains(UInt8(ascii: "\n")) {
            guard !child.reachedEndOfOutput() else { break }
            guard Date() < deadline else {
                child.kill()
                _ = child.wait()
                throw CrashTestError("the writer acknowledged no write within 20 s")
            }
            usleep(1000)
        }
        usleep(UInt32(delayMilliseconds * 1000))
        child.kill()
        let status = child.wait()
        let output = child.finishReading()
        let finished = status.exitedNormally
        if finished && status.code != 0 {
            throw CrashTestError(
                "the writer failed with exit code \(status.code): \(String(decoding: output, as: UTF8.self))")
        }
        return (output, finished)
    }

    /// Reopens the store and checks it; returns the number of acknowledged writes.
    private static func checkRecovered(path: String, output: [UInt8], round: Int, seed: UInt64, mode: Mode)
        throws -> Int
    {
        let text = String(decoding: output, as: UTF8.self)
        // Only whole lines count: the writer may have been killed mid-line.
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        lines.removeLast()
        let committed = lines.compactMap { line -> String? in
            line.hasPrefix("committed ") ? String(line.dropFirst("committed ".count)) : nil
        }

        let engine = try RocksDBStorageEngine(path: path)
        defer { try? engine.close() }
        var missing: [String] = []
        for key in committed where try engine.get(Array(key.utf8), in: .data) != mode.expected(for: key) {
            missing.append(key)
        }
        #expect(
            missing.isEmpty,
            "round \(round) (seed \(seed)): \(missing.count) of \(committed.count) acknowledged writes lost or wrong, e.g. \(missing.prefix(5))"
        )

        // Stronger: recovery replays a prefix of the WAL, and each thread wrote its keys
        // in order, one at a time, so every thread's surviving keys are exactly
        // seq 0..<n for some n, each with the right value.
        var sequences: [Int: [Int]] = [:]
        for entry in try engine.entries(in: .all, of: .data) {
            let key = String(decoding: entry.key, as: UTF8.self)
            #expect(entry.value == mode.expected(for: key), "round \(round): key \(key) has a wrong value")
            let parts = key.dropFirst().split(separator: "-")
            guard key.first == "t", parts.count == 2, let thread = Int(parts[0]), let sequence = Int(parts[1])
            else {
                Issue.record("round \(round): unexpected key \(key)")
                continue
            }
            sequences[thread, default: []].append(sequence)
        }
        for (thread, found) in sequences {
            let sorted = found.sorted()
            #expect(sorted == Array(0..<sorted.count), "round \(round): thread \(thread)'s keys have a gap")
        }
        if mode == .large {
            // Each batch put its key in both keyspaces: after the crash both hold the same keys.
            let dataKeys = try engine.entries(in: .all, of: .data).map(\.key)
            let indexKeys = try engine.entries(in: .all, of: .antiEntropy).map(\.key)
            #expect(dataKeys == indexKeys, "round \(round): a batch survived in one keyspace only")
        }
        return committed.count
    }

    static func crashWriterPath() throws -> String {
        try TestBinaries.path(of: "StorageCrashWriter", override: "KV_STORAGE_CRASH_WRITER")
    }
}
