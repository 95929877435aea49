// StorageBenchmark: throughput of the storage engines, printed as a markdown table.
//
//   StorageBenchmark [--keys N] [--engine memory|rocksdb|sqlite|postgres|mariadb|redis|all]
//                    [--url URL] [--compression none|lz4|zstd|snappy]
//                    [--bloom-bits N] [--block-cache-mb N] [--threads N]
//
// postgres, mariadb and redis need --url (the database server, as for kv server
// --storage-url); each run uses a table (key prefix) of its own there.
//
// Run it in release mode (scripts/bench-storage.sh does). Keys are 16 bytes, values 100.
// Workloads, in order, on a fresh store per engine:
//   put unbatched, 1 thread   N/10 single-put batches, .synced, one after another: the
//                             fsync latency bound (fewer keys, because each one waits
//                             for its own fsync)
//   put unbatched, T threads  N/10 single-put batches, .synced, from T threads at once:
//                             what group commit recovers of that
//   put batched               N keys in synced batches of 100
//   get                       N reads of random existing keys
//   get missing               N reads of keys never written (Bloom filters)
//   scan                      one forward cursor over every key (entries/s)
// Each read workload runs three times; the table shows the median.
// Before the reads, RocksDB flushes its memtables so reads hit table files, where
// compression, Bloom filters and the block cache act.

import Foundation
import KVStorage
import KVStorageDatabase
import KVStorageMariaDB
import KVStorageMemory
import KVStoragePostgres
import KVStorageRedis
import KVStorageRocksDB
import KVStorageSQLite

struct Options {
    var keys = 100_000
    var engines = ["memory", "rocksdb"]
    var threads = 8
    var settings = RocksDBSettings()
    var url = ""
}

func usage(_ problem: String) -> Never {
    FileHandle.standardError.write(
        Data(
            """
            StorageBenchmark: \(problem)
            usage: StorageBenchmark [--keys N] [--engine memory|rocksdb|all] \
            [--compression none|lz4|zstd|snappy] [--bloom-bits N] [--block-cache-mb N] [--threads N]

            """.utf8))
    exit(2)
}

func parseOptions() -> Options {
    var options = Options()
    var arguments = CommandLine.arguments.dropFirst()
    func value(_ flag: String) -> String {
        guard let value = arguments.popFirst() else { usage("\(flag) needs a value") }
        return value
    }
    func integer(_ flag: String) -> Int {
        guard let number = Int(value(flag).replacingOccurrences(of: "_", with: "")) else {
            usage("\(flag) needs an integer")
        }
        return number
    }
    while let flag = arguments.popFirst() {
        switch flag {
        case "--keys": options.keys = integer(flag)
        case "--url": options.url = value(flag)
        case "--threads": options.threads = integer(flag)
        case "--engine":
            switch value(flag) {
            case "all": options.engines = ["memory", "rocksdb"]
            case "memory": options.engines = ["memory"]
            case let other
            where ["memory", "rocksdb", "sqlite", "postgres", "mariadb", "redis"].contains(other):
                options.engines = [other]
            case let other: usage("unknown engine \(other)")
            }
        case "--compression":
            let name = value(flag)
            guard let compression = RocksDBSettings.Compression(rawValue: name) else {
                usage("unknown compression \(name)")
            }
            options.settings.compression = compression
        case "--bloom-bits": options.settings.bloomFilterBitsPerKey = integer(flag)
        case "--block-cache-mb": options.settings.blockCacheBytes = integer(flag) << 20
        case "--help", "-h": usage("help")
        default: usage("unknown argument \(flag)")
        }
    }
    guard options.keys >= 100 else { usage("--keys must be at least 100") }
    guard options.threads >= 1 else { usage("--threads must be at least 1") }
    let problems = options.settings.validate()
    guard problems.isEmpty else { usage(problems.joined(separator: "; ")) }
    return options
}

/// SplitMix64: seeded, so every run writes and reads the same keys in the same order.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }
    static func mix(_ value: UInt64) -> UInt64 {
        var mixed = value
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// The 16-byte key of `index`: a hash of the index (so consecutive indexes scatter over
/// the key space, like hashed partition keys do) followed by the index itself (so keys
/// never collide). Missing keys set the index's top bit, which no written key has.
func key(_ index: Int, missing: Bool = false) -> [UInt8] {
    let tail = UInt64(index) | (missing ? 1 << 63 : 0)
    let head = SplitMix64.mix(tail)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(16)
    for shift in stride(from: 56, through: 0, by: -8) {
        bytes.append(UInt8(truncatingIfNeeded: head >> UInt64(shift)))
    }
    for shift in stride(from: 56, through: 0, by: -8) {
        bytes.append(UInt8(truncatingIfNeeded: tail >> UInt64(shift)))
    }
    return bytes
}

/// The 100-byte value of `index`: 50 pseudo-random bytes and 50 of a repeated pattern,
/// so it compresses about as well as typical small records (roughly 2:1), neither as
/// badly as noise nor as well as zeros, and compression settings show a difference.
func value(_ index: Int) -> [UInt8] {
    var generator = SplitMix64(state: UInt64(index))
    var bytes: [UInt8] = []
    bytes.reserveCapacity(100)
    while bytes.count < 50 {
        let word = generator.next()
        for shift in stride(from: 0, to: 64, by: 8) where bytes.count < 50 {
            bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
        }
    }
    let pattern = Array("status=active;".utf8)
    while bytes.count < 100 { bytes.append(pattern[bytes.count % pattern.count]) }
    return bytes
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// The median duration, in seconds, of `repetitions` runs of `body`.
func medianSeconds(repetitions: Int = 3, _ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    let durations = (0..<repetitions).map { _ in seconds(clock.measure(body)) }.sorted()
    return durations[durations.count / 2]
}

func check<Result>(_ what: String, _ body: () throws(StorageError) -> Result) -> Result {
    do {
        return try body()
    } catch {
        FileHandle.standardError.write(Data("StorageBenchmark: \(what) failed: \(error)\n".utf8))
        exit(1)
    }
}

/// One measured row of the results table.
struct Row {
    var engine: String
    var workload: String
    var operations: Int
    var seconds: Double
    var opsPerSecond: Double { Double(operations) / seconds }
}

/// Runs `count` single-put synced writes of keys `first..<first+count` split over
/// `threads` real threads (not a Dispatch pool, which would run only as many as there
/// are cores).
func putUnbatched(_ engine: any StorageEngine, first: Int, count: Int, threads: Int) -> Double {
    let start = DispatchSemaphore(value: 0)
    let finished = DispatchGroup()
    let share = count / threads
    for thread in 0..<threads {
        let lower = first + thread * share
        let upper = thread == threads - 1 ? first + count : lower + share
        finished.enter()
        Thread {
            start.wait()
            for index in lower..<upper {
                var batch = WriteBatch()
                batch.put(key(index), value(index))
                check("put") { () throws(StorageError) in try engine.write(batch, durability: .synced) }
            }
            finished.leave()
        }.start()
    }
    let clock = ContinuousClock()
    let began = clock.now
    for _ in 0..<threads { start.signal() }
    finished.wait()
    return seconds(clock.now - began)
}

/// Bytes of the regular files under `path` whose names end in `suffix` ("" for all).
func directorySize(_ path: String, suffix: String = "") -> UInt64 {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total: UInt64 = 0
    while let name = enumerator.nextObject() as? String {
        guard name.hasSuffix(suffix) else { continue }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path + "/" + name)
        if attributes?[.type] as? FileAttributeType == .typeRegular {
            total += (attributes?[.size] as? NSNumber)?.uint64Value ?? 0
        }
    }
    return total
}

func benchmark(engineName: String, options: Options, dataDirectory: String) -> (rows: [Row], notes: [String])
{
    let engine: any StorageEngine
    var rocksdb: RocksDBStorageEngine? = nil
    let databasePath = dataDirectory + "/\(engineName)"
    switch engineName {
    case "memory":
        engine = MemoryStorageEngine()
    case "sqlite", "postgres", "mariadb", "redis":
        engine = check("open") { () throws(StorageError) -> any StorageEngine in
            let table = "bench\(UInt32.random(in: 0...UInt32.max))"
            switch engineName {
            case "sqlite": return try SQLiteStorageEngine.open(SQLiteSettings(path: databasePath + ".sqlite"))
            case "postgres":
                return try PostgresStorageEngine.open(
                    DatabaseServerSettings(url: try DatabaseURL(options.url), table: table))
            case "mariadb":
                return try MariaDBStorageEngine.open(
                    DatabaseServerSettings(url: try DatabaseURL(options.url), table: table))
            default:
                return try RedisStorageEngine.open(
                    DatabaseServerSettings(url: try DatabaseURL(options.url), table: table))
            }
        }
    default:
        let opened = check("open") { () throws(StorageError) in
            try RocksDBStorageEngine(path: databasePath, settings: options.settings)
        }
        rocksdb = opened
        engine = opened
    }
    let n = options.keys
    let unbatched = max(options.threads, n / 10)
    let clock = ContinuousClock()
    var rows: [Row] = []
    var notes: [String] = []

    // Key index ranges: batched puts use 0..<n (the data that reads look for); the
    // unbatched phases use ranges above it so every put inserts a new key.
    let single = putUnbatched(engine, first: n, count: unbatched, threads: 1)
    rows.append(
        Row(
            engine: engineName, workload: "put unbatched (synced, 1 thread)", operations: unbatched,
            seconds: single))

    let before = rocksdb?.statistics()
    let concurrent = putUnbatched(engine, first: n + unbatched, count: unbatched, threads: options.threads)
    rows.append(
        Row(
            engine: engineName, workload: "put unbatched (synced, \(options.threads) threads)",
            operations: unbatched,
            seconds: concurrent))
    if let rocksdb, let before {
        let after = rocksdb.statistics()
        notes.append(
            "\(engineName): \(options.threads)-thread unbatched puts: \(after.writes - before.writes) writes in "
                + "\(after.writeGroups - before.writeGroups) groups, \(after.walSyncs - before.walSyncs) WAL syncs"
        )
    }

    let batchSize = 100
    let batched = clock.measure {
        var index = 0
        while index < n {
            var batch = WriteBatch()
            for current in index..<min(n, index + batchSize) { batch.put(key(current), value(current)) }
            check("batched put") { () throws(StorageError) in try engine.write(batch, durability: .synced) }
            index += batchSize
        }
    }
    rows.append(
        Row(
            engine: engineName, workload: "put batched (100/batch, synced)", operations: n,
            seconds: seconds(batched)))

    if let rocksdb {
        check("flush") { () throws(StorageError) in try rocksdb.flushMemtables() }
        // Table files are what compression shrinks; the rest is mostly WAL and logs.
        notes.append(
            "\(engineName): after loading and flushing, \(directorySize(databasePath, suffix: ".sst")) bytes "
                + "in table files, \(directorySize(databasePath)) bytes in the directory")
    }

    var generator = SplitMix64(state: 42)
    let readOrder = (0..<n).map { _ in Int.random(in: 0..<n, using: &generator) }
    // Reads are repeated and the median kept: one pass takes a fraction of a second,
    // and on a small shared machine a single pass can be off by a factor of two.
    let gets = medianSeconds {
        var found = 0
        for index in readOrder
        where check("get", { () throws(StorageError) in try engine.get(key(index), in: .data) }) != nil {
            found += 1
        }
        precondition(found == n, "\(engineName): \(n - found) written keys were not found")
    }
    rows.append(Row(engine: engineName, workload: "get (existing keys)", operations: n, seconds: gets))

    let misses = medianSeconds {
        var absent = 0
        for index in readOrder
        where check(
            "get", { () throws(StorageError) in try engine.get(key(index, missing: true), in: .data) }) == nil
        {
            absent += 1
        }
        precondition(absent == n, "\(engineName): a key that was never written was found")
    }
    rows.append(Row(engine: engineName, workload: "get (missing keys)", operations: n, seconds: misses))

    let entries = n + 2 * unbatched
    let scan = medianSeconds {
        var scanned = 0
        let cursor = check("cursor") { () throws(StorageError) in
            try engine.cursor(over: .all, in: .data, direction: .forward)
        }
        while check("next", { () throws(StorageError) in try cursor.next() }) != nil { scanned += 1 }
        precondition(scanned == entries, "\(engineName): the scan saw \(scanned) entries, not \(entries)")
    }
    rows.append(
        Row(engine: engineName, workload: "scan (forward, entries)", operations: entries, seconds: scan))

    check("close") { () throws(StorageError) in try engine.close() }
    return (rows, notes)
}

func formatRate(_ rate: Double) -> String {
    let rounded = Int(rate.rounded())
    var digits = Array(String(rounded))
    var index = digits.count - 3
    while index > 0 {
        digits.insert("_", at: index)
        index -= 3
    }
    return String(digits)
}

let options = parseOptions()
let dataDirectory = FileManager.default.temporaryDirectory
    .appendingPathComponent("kv-storage-benchmark-\(UUID().uuidString)").path
do {
    try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
} catch {
    usage("cannot create a data directory: \(error)")
}
defer { try? FileManager.default.removeItem(atPath: dataDirectory) }

let settings = options.settings
print(
    "keys: \(options.keys) (unbatched puts: \(max(options.threads, options.keys / 10)) each), "
        + "key 16 B, value 100 B, threads: \(options.threads), cores: \(ProcessInfo.processInfo.activeProcessorCount)"
)
if options.engines.contains("rocksdb") {
    print(
        "rocksdb: compression \(settings.compression.rawValue), bloom bits/key \(settings.bloomFilterBitsPerKey), "
            + "block cache \(settings.blockCacheBytes >> 20) MiB, write buffer \(settings.writeBufferBytes >> 20) MiB"
    )
}
print("")
print("| engine | workload | operations | seconds | ops/s |")
print("| --- | --- | ---: | ---: | ---: |")
var allNotes: [String] = []
for engineName in options.engines {
    let (rows, notes) = benchmark(engineName: engineName, options: options, dataDirectory: dataDirectory)
    for row in rows {
        print(
            "| \(row.engine) | \(row.workload) | \(row.operations) | \(String(format: "%.3f", row.seconds)) "
                + "| \(formatRate(row.opsPerSecond)) |")
    }
    allNotes += notes
}
print("")
for note in allNotes { print("- \(note)") }
