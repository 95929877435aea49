import CRocksDB
import KVCore
import KVStorage

/// The embedded default storage engine: RocksDB through its C API, one column family per
/// ``Keyspace``.
///
/// ## Durability and group commit
/// Every write goes through RocksDB's write-ahead log. ``Durability/synced`` writes use
/// write options with `sync = 1`, so they return only after the WAL is fsynced;
/// ``Durability/buffered`` ones use `sync = 0` (in the OS page cache: survives a process
/// crash, not a power loss). Concurrent synced writers do not each pay for an fsync:
/// RocksDB's write thread lets the first waiting writer lead a group, appends every
/// queued batch to the WAL and syncs once for all of them. The engine therefore takes no
/// lock of its own around writes (which would serialize them and defeat the grouping);
/// ``statistics()`` shows the effect (``RocksDBStatistics/walSyncs`` versus
/// ``RocksDBStatistics/writes``).
///
/// ## Closing, cursors and snapshots
/// A `pthread_rwlock_t` is held shared by every operation and exclusively by
/// ``close()``, so `close()` waits for running operations and every later one throws
/// ``StorageError/closed``. The `rocksdb_t` itself belongs to an internal object that
/// the engine, every cursor and every snapshot hold strongly: `close()` syncs the WAL and
/// drops the engine's reference, and RocksDB really closes (releasing its `LOCK` file)
/// when the last outstanding cursor or snapshot is released. Until then those keep
/// reading their state safely, and reopening the same path fails with
/// ``StorageError/Kind/openFailed``.
public final class RocksDBStorageEngine: StorageEngine, @unchecked Sendable {
    /// The directory of the database.
    public let path: String
    /// The settings it was opened with.
    public let settings: RocksDBSettings

    /// Guards `database` and `closedStatistics`: shared for operations, exclusive for close.
    private let lifecycle = ReadWriteLock()
    /// Held shared by ordinary writes and exclusively by a write with an open-ended range
    /// delete, which must find the range's last key with no other write in between (see
    /// `write(_:durability:)`). Reads never take it.
    private let rangeDeleteGate = ReadWriteLock()
    /// `nil` once closed.
    private var database: RocksDBDatabase?
    /// The counters at close, so ``statistics()`` still answers afterwards.
    private var closedStatistics: RocksDBStatistics?

    /// At most this many memtable keys are visited per ``estimateSize(of:in:)`` call.
    private static let memtableEstimateLimit = 100_000

    /// Opens the database at `path`, creating it (when ``RocksDBSettings/createIfMissing``)
    /// and any missing column family.
    ///
    /// Throws ``StorageError/Kind/invalidArgument`` for settings that fail
    /// ``RocksDBSettings/validate()`` and ``StorageError/Kind/openFailed`` when RocksDB
    /// cannot open the store (for example another process holds its `LOCK`).
    public init(path: String, settings: RocksDBSettings = .init()) throws(StorageError) {
        self.path = path
        self.settings = settings
        database = try RocksDBDatabase(path: path, settings: settings)
    }

    /// Runs `body` with the open database, holding the lifecycle lock shared.
    private func withOpenDatabase<Result>(_ body: (RocksDBDatabase) throws(StorageError) -> Result)
        throws(StorageError) -> Result
    {
        try lifecycle.withSharedLock { () throws(StorageError) -> Result in
            guard let database else { throw StorageError.closed }
            return try body(database)
        }
    }

    /// The memtables of every column family (active and waiting to be flushed), the
    /// block cache they share, and the table files' index and filter blocks held
    /// outside it; empty once closed.
    public func memoryReport() -> [String: UInt64] {
        let report = try? withOpenDatabase { database throws(StorageError) -> [String: UInt64] in
            var report: [String: UInt64] = [
                "block_cache": database.integerProperty("rocksdb.block-cache-usage", of: .data)
            ]
            for keyspace in Keyspace.allCases {
                report["memtables", default: 0] += database.integerProperty(
                    "rocksdb.cur-size-all-mem-tables", of: keyspace)
                report["table_readers", default: 0] += database.integerProperty(
                    "rocksdb.estimate-table-readers-mem", of: keyspace)
            }
            return report
        }
        return report ?? [:]
    }

    /// The latest value of `key` (a point read through memtables, block cache and, when
    /// configured, the Bloom filters of the table files).
    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try withOpenDatabase { database throws(StorageError) in
            try database.get(key, in: keyspace, readOptions: database.latestReadOptions)
        }
    }

    /// Its cursors are RocksDB iterators, which read one block at a time.
    public var cursorsStopAnywhere: Bool { true }

    /// A point read that never touches a table file on disk: memtables and the block
    /// cache only (`kBlockCacheTier`).
    public func getIfCached(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> CachedRead {
        try withOpenDatabase { database throws(StorageError) in try database.getIfCached(key, in: keyspace) }
    }

    /// A cursor backed by its own RocksDB iterator, which pins the state at this call.
    /// The cursor keeps the database open (even past ``close()``) until it is released or
    /// reaches the end of its range.
    public func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError) -> any StorageCursor
    {
        try withOpenDatabase { database throws(StorageError) in
            RocksDBCursor(
                database: database, snapshot: nil, range: range, keyspace: keyspace, direction: direction)
        }
    }

    /// Applies `batch` atomically as one RocksDB write batch.
    ///
    /// An empty batch writes nothing (and so does not sync). A range delete with an upper
    /// bound maps to `DeleteRange`. One without (to the end of the keyspace) has no byte
    /// string to give RocksDB as its end: keys have no maximum length, so no run of `0xFF`
    /// bytes is greater than every possible key. Instead the batch finds the keyspace's
    /// last key (also counting puts earlier in the same batch) and deletes up to just past
    /// it (`last + [0x00]`, the smallest greater key). That is only correct if no other
    /// write lands between looking and writing, so such a batch holds `rangeDeleteGate`
    /// exclusively; these batches are rare (dropping everything from some key on), so the
    /// brief stall of other writers is cheap. All other writes hold the gate shared and
    /// still group-commit freely.
    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        try withOpenDatabase { database throws(StorageError) in
            guard !batch.isEmpty else { return }
            let hasOpenEndedDelete = batch.operations.contains { operation in
                if case .deleteRange(_, let range) = operation { return range.upperBound == nil }
                return false
            }
            if hasOpenEndedDelete {
                try rangeDeleteGate.withExclusiveLock { () throws(StorageError) in
                    try apply(batch, durability: durability, to: database)
                }
            } else {
                try rangeDeleteGate.withSharedLock { () throws(StorageError) in
                    try apply(batch, durability: durability, to: database)
                }
            }
        }
    }

    private func apply(_ batch: WriteBatch, durability: Durability, to database: RocksDBDatabase)
        throws(StorageError)
    {
        let writeBatch = rocksdb_writebatch_create()!
        defer { rocksdb_writebatch_destroy(writeBatch) }
        for (index, operation) in batch.operations.enumerated() {
            switch operation {
            case .put(let keyspace, let key, let value):
                let family = database.family(keyspace)
                Bytes.with(key) { keyPointer, keyCount in
                    Bytes.with(value) { valuePointer, valueCount in
                        rocksdb_writebatch_put_cf(
                            writeBatch, family, keyPointer, keyCount, valuePointer, valueCount)
                    }
                }
            case .delete(let keyspace, let key):
                let family = database.family(keyspace)
                Bytes.with(key) { pointer, count in
                    rocksdb_writebatch_delete_cf(writeBatch, family, pointer, count)
                }
            case .deleteRange(let keyspace, let range):
                guard !range.isEmpty else { continue }
                let upperBound: [UInt8]
                if let bound = range.upperBound {
                    upperBound = bound
                } else {
                    guard
                        let last = try lastKey(
                            in: keyspace, from: range.lowerBound, before: index, of: batch, database: database
                        )
                    else { continue }  // Nothing at or after the lower bound: nothing to delete.
                    upperBound = last + [0]
                }
                let family = database.family(keyspace)
                Bytes.with(range.lowerBound) { lower, lowerCount in
                    Bytes.with(upperBound) { upper, upperCount in
                        rocksdb_writebatch_delete_range_cf(
                            writeBatch, family, lower, lowerCount, upper, upperCount)
                    }
                }
            }
        }
        let unlogged =
            durability == .synced && settings.unloggedBatchBytes > 0
            && batch.valueBytes >= settings.unloggedBatchBytes
        let writeOptions =
            unlogged
            ? database.unloggedWriteOptions
            : durability == .synced ? database.syncedWriteOptions : database.bufferedWriteOptions
        var error: UnsafeMutablePointer<CChar>? = nil
        rocksdb_write(database.handle, writeOptions, writeBatch, &error)
        try RocksDBError.check(error, .io, "writing a batch of \(batch.operations.count) operations")
        if unlogged {
            // Durable once its keyspaces are in synced table files. A crash before that
            // loses the whole batch (it was never logged), as it would a logged batch
            // whose fsync had not returned.
            try database.flush(batch.keyspaces)
        }
    }

    /// The largest key at or after `lowerBound` in `keyspace` once the first `index`
    /// operations of `batch` are applied, or `nil` if there is none; an over-estimate
    /// (a key that an earlier operation deletes) is harmless for a range delete's end.
    private func lastKey(
        in keyspace: Keyspace, from lowerBound: [UInt8], before index: Int, of batch: WriteBatch,
        database: RocksDBDatabase
    ) throws(StorageError) -> [UInt8]? {
        var last = try database.lastKey(
            in: keyspace, from: lowerBound, readOptions: database.latestReadOptions)
        for operation in batch.operations[..<index] {
            guard case .put(let target, let key, _) = operation, target == keyspace,
                !key.lexicographicallyPrecedes(lowerBound)
            else { continue }
            if let current = last, !current.lexicographicallyPrecedes(key) { continue }
            last = key
        }
        return last
    }

    /// A manual compaction of `range` down to the bottom level, where the old versions
    /// of long-lived rows sit; it drops overwritten and deleted values and, once no table
    /// file refers to a blob file any more, the blob file.
    public func compact(_ range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError) {
        try withOpenDatabase { database throws(StorageError) in database.compact(range, in: keyspace) }
    }

    /// A RocksDB snapshot; it keeps the database open (even past ``close()``) and keeps
    /// RocksDB from compacting away the versions it sees, so release it promptly.
    public func snapshot() throws(StorageError) -> any StorageSnapshot {
        try withOpenDatabase { database throws(StorageError) in RocksDBSnapshot(database: database) }
    }

    /// Approximately how much `range` of `keyspace` holds.
    ///
    /// Bytes: `rocksdb_approximate_sizes_cf` for the table files (on-disk, so compressed),
    /// plus the keys and values of the range that are still in memtables, counted with a
    /// memtable-only iterator because this RocksDB's C API cannot include memtables in
    /// the approximation. At most 100,000 memtable keys are visited, so for a range with
    /// more unflushed keys than that the memtable part is a lower bound.
    ///
    /// Keys: the range's memtable keys, plus RocksDB's `rocksdb.estimate-num-keys` for the
    /// column family (minus its memtable entries) scaled by the range's share of the
    /// table-file bytes. Both are approximate: overwrites and deletes not yet compacted
    /// are counted, and keys are assumed spread evenly over the bytes.
    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        try withOpenDatabase { database throws(StorageError) in
            guard !range.isEmpty,
                let last = try database.lastKey(
                    in: keyspace, from: [], readOptions: database.latestReadOptions)
            else { return StorageSizeEstimate(bytes: 0, keyCount: 0) }
            // No key is beyond `last`, so `last + [0]` ends every range at the true end.
            let end = last + [0]
            let rangeEnd = range.upperBound.map { $0.lexicographicallyPrecedes(end) ? $0 : end } ?? end
            let rangeTableBytes =
                range.lowerBound.lexicographicallyPrecedes(rangeEnd)
                ? try database.approximateTableBytes(in: keyspace, from: range.lowerBound, to: rangeEnd) : 0
            let allTableBytes = try database.approximateTableBytes(in: keyspace, from: [], to: end)
            let memtable = try database.memtableUsage(
                of: range, in: keyspace, limit: Self.memtableEstimateLimit)

            let estimatedKeys = database.integerProperty("rocksdb.estimate-num-keys", of: keyspace)
            let memtableEntries =
                database.integerProperty("rocksdb.num-entries-active-mem-table", of: keyspace)
                + database.integerProperty("rocksdb.num-entries-imm-mem-tables", of: keyspace)
            let tableKeys = estimatedKeys > memtableEntries ? estimatedKeys - memtableEntries : 0
            let rangeTableKeys: UInt64
            if allTableBytes == 0 || rangeTableBytes == 0 {
                rangeTableKeys = 0
            } else if rangeTableBytes >= allTableBytes {
                rangeTableKeys = tableKeys
            } else {
                rangeTableKeys = UInt64(Double(tableKeys) * Double(rangeTableBytes) / Double(allTableBytes))
            }
            return StorageSizeEstimate(
                bytes: rangeTableBytes + memtable.bytes, keyCount: rangeTableKeys + memtable.keys)
        }
    }

    /// A RocksDB checkpoint of the open database in `directory`, which must not exist yet
    /// (its parent must); the directory opens as a RocksDB engine of its own.
    public func backup(to directory: String) throws(StorageError) {
        try withOpenDatabase { database throws(StorageError) in try database.checkpoint(to: directory) }
    }

    /// Syncs the WAL and releases the engine; see the type's documentation for how
    /// outstanding cursors and snapshots keep the database open until they go.
    ///
    /// Idempotent: a second call does nothing. If the final WAL sync fails the engine is
    /// closed all the same and the error is thrown.
    public func close() throws(StorageError) {
        try lifecycle.withExclusiveLock { () throws(StorageError) in
            guard let database else { return }
            self.database = nil
            closedStatistics = database.statistics()
            var error: UnsafeMutablePointer<CChar>? = nil
            rocksdb_flush_wal(database.handle, 1, &error)
            try RocksDBError.check(error, .io, "syncing the WAL on close")
            // `database` is released here; RocksDB closes now unless a cursor or a
            // snapshot still holds it.
        }
    }

    /// Writes every keyspace's memtable to table files and waits until that is done.
    ///
    /// Never needed for durability (the WAL already covers every write). It exists so a
    /// benchmark can measure reads from table files, where compression, Bloom filters and
    /// the block cache matter, rather than from the memtable; it also shortens the WAL
    /// replay of the next open.
    public func flushMemtables() throws(StorageError) {
        try withOpenDatabase { database throws(StorageError) in
            let flushOptions = rocksdb_flushoptions_create()!
            defer { rocksdb_flushoptions_destroy(flushOptions) }
            rocksdb_flushoptions_set_wait(flushOptions, 1)
            for keyspace in Keyspace.allCases {
                var error: UnsafeMutablePointer<CChar>? = nil
                rocksdb_flush_cf(database.handle, flushOptions, database.family(keyspace), &error)
                try RocksDBError.check(error, .io, "flushing the memtable of \(keyspace.rawValue)")
            }
        }
    }

    /// RocksDB's counters since the engine was opened (frozen at ``close()``).
    public func statistics() -> RocksDBStatistics {
        lifecycle.withSharedLock {
            database?.statistics() ?? closedStatistics ?? RocksDBStatistics(tickers: [:])
        }
    }
}

extension WriteBatch {
    /// The bytes of the values the batch puts.
    fileprivate var valueBytes: Int {
        operations.reduce(0) { total, operation in
            if case .put(_, _, let value) = operation { return total + value.count }
            return total
        }
    }

    /// The keyspaces the batch changes.
    fileprivate var keyspaces: Set<Keyspace> {
        Set(
            operations.map { operation in
                switch operation {
                case .put(let keyspace, _, _), .delete(let keyspace, _), .deleteRange(let keyspace, _):
                    return keyspace
                }
            })
    }
}
