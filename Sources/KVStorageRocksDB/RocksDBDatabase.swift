import CRocksDB
import CRocksDBFlush
import Glibc
import KVCore
import KVStorage

/// The one owner of an open `rocksdb_t` and everything that must live exactly as long
/// as it: column family handles, options, the block cache, the shared write and read
/// options.
///
/// Why a separate object: a cursor or a snapshot may outlive
/// ``RocksDBStorageEngine/close()``, and it must never touch a freed database. The engine,
/// every cursor and every snapshot hold a strong reference to this object, and only its
/// `deinit` closes RocksDB. `close()` merely drops the engine's reference, so RocksDB
/// really closes when the last outstanding cursor or snapshot goes away. Swift's
/// reference counting is atomic, so the last release may happen on any thread.
///
/// Every pointer here is immutable after `init` and RocksDB's `DB` is thread-safe, hence
/// `@unchecked Sendable`.
final class RocksDBDatabase: @unchecked Sendable {
    /// The database.
    let handle: OpaquePointer
    /// Write options with `sync = 1`: the WAL is fsynced before the write returns.
    /// Created once: the C API allocates on every create, and the options are immutable
    /// after setup, so all threads share them.
    let syncedWriteOptions: OpaquePointer
    /// Write options with `sync = 0`: the WAL is written (the OS has it) but not fsynced.
    let bufferedWriteOptions: OpaquePointer
    /// Write options that skip the WAL; only for batches flushed right after (see
    /// ``flush(_:)``).
    let unloggedWriteOptions: OpaquePointer
    /// Read options for reads of the latest state (no snapshot), shared by all threads.
    let latestReadOptions: OpaquePointer
    /// Reads that may only use memtables and the block cache (read tier 1,
    /// `kBlockCacheTier`): RocksDB answers "Incomplete" instead of reading a file.
    let cacheOnlyReadOptions: OpaquePointer

    /// The DB options; they also own the statistics object, so they live as long as the DB.
    private let options: OpaquePointer
    private let blockCache: OpaquePointer?
    /// The handle of RocksDB's mandatory "default" column family. Nothing is stored there;
    /// it is opened only because RocksDB refuses to open a database without it.
    private let defaultFamily: OpaquePointer
    private let families: [Keyspace: OpaquePointer]

    /// Opens or creates the database at `path` with one column family per ``Keyspace``.
    init(path: String, settings: RocksDBSettings) throws(StorageError) {
        let problems = settings.validate()
        guard problems.isEmpty else {
            throw StorageError(
                .invalidArgument, "invalid RocksDB settings: " + problems.joined(separator: "; "))
        }

        let options = rocksdb_options_create()!
        rocksdb_options_set_create_if_missing(options, settings.createIfMissing ? 1 : 0)
        // A store made by an older version may lack a keyspace added since; create it.
        rocksdb_options_set_create_missing_column_families(options, 1)
        // Needed for RocksDBStatistics (group commit evidence). The default statistics
        // level skips the expensive per-operation timers, so the cost is a few atomic
        // counter increments per operation.
        rocksdb_options_enable_statistics(options)
        rocksdb_options_set_write_buffer_size(options, settings.writeBufferBytes)
        // A log file is kept until every column family with writes in it has flushed;
        // the small keyspaces flush rarely, so without a bound the logs of a large
        // upload stayed on disk long after its rows were in table files. Past this total
        // RocksDB flushes the keyspaces that hold the oldest log back.
        rocksdb_options_set_max_total_wal_size(options, UInt64(4 * settings.writeBufferBytes))
        rocksdb_options_set_max_open_files(options, Int32(settings.maxOpenFiles))
        rocksdb_options_set_compression(options, Int32(Self.compressionCode(settings.compression)))
        // Sizes the levels from the bottom up, which RocksDB recommends for bounded
        // space amplification; it is not the default only for compatibility reasons.
        rocksdb_options_set_level_compaction_dynamic_level_bytes(options, 1)
        // Point-in-time recovery (2, kPointInTimeRecovery): after a crash, replay the WAL
        // up to the first torn or corrupt record and stop, so the store is a consistent
        // prefix of the acknowledged writes. Set explicitly so a changed default cannot
        // change crash behaviour silently.
        rocksdb_options_set_wal_recovery_mode(options, 2)
        rocksdb_options_set_enable_write_thread_adaptive_yield(options, settings.adaptiveYield ? 1 : 0)
        // Unlogged batches are made durable by flushing every keyspace they touch; only an
        // atomic flush keeps such a batch all-or-nothing across keyspaces. With it,
        // RocksDB's own flushes also take every keyspace at once.
        rocksdb_options_set_atomic_flush(options, 1)
        if settings.blobThresholdBytes > 0 {
            rocksdb_options_set_enable_blob_files(options, 1)
            rocksdb_options_set_min_blob_size(options, UInt64(settings.blobThresholdBytes))
            // Compaction rewrites the live blobs of the oldest quarter of blob files into
            // new ones, so a file whose values were mostly overwritten or deleted goes away.
            rocksdb_options_set_enable_blob_gc(options, 1)
        }

        let tableOptions = rocksdb_block_based_options_create()!
        var blockCache: OpaquePointer? = nil
        if settings.blockCacheBytes > 0 {
            blockCache = rocksdb_cache_create_lru(settings.blockCacheBytes)
            rocksdb_block_based_options_set_block_cache(tableOptions, blockCache)
        } else {
            rocksdb_block_based_options_set_no_block_cache(tableOptions, 1)
        }
        if settings.bloomFilterBitsPerKey > 0 {
            // The table options take ownership of the policy: it must not be destroyed here.
            let policy = rocksdb_filterpolicy_create_bloom(Double(settings.bloomFilterBitsPerKey))
            rocksdb_block_based_options_set_filter_policy(tableOptions, policy)
        }
        // The factory copies the table options (the cache by shared pointer), so the
        // C wrapper can go now; the cache wrapper is kept and destroyed in deinit.
        rocksdb_options_set_block_based_table_factory(options, tableOptions)
        rocksdb_block_based_options_destroy(tableOptions)

        let names = ["default"] + Keyspace.allCases.map(\.rawValue)
        let cNames = names.map { strdup($0) }
        defer { for name in cNames { free(name) } }
        let constNames = cNames.map { UnsafePointer($0) }
        // Every column family gets the same options: one cache and one tuning for all.
        let familyOptions = [OpaquePointer?](repeating: options, count: names.count)
        var handles = [OpaquePointer?](repeating: nil, count: names.count)
        var error: UnsafeMutablePointer<CChar>? = nil
        let database = rocksdb_open_column_families(
            options, path, Int32(names.count), constNames, familyOptions, &handles, &error)
        do {
            try RocksDBError.check(error, .openFailed, "opening RocksDB at \(path)")
        } catch {
            rocksdb_options_destroy(options)
            if let blockCache { rocksdb_cache_destroy(blockCache) }
            throw error
        }
        guard let database else {
            rocksdb_options_destroy(options)
            if let blockCache { rocksdb_cache_destroy(blockCache) }
            throw StorageError(.openFailed, "opening RocksDB at \(path) returned no database and no error")
        }

        self.handle = database
        self.options = options
        self.blockCache = blockCache
        self.defaultFamily = handles[0]!
        var families: [Keyspace: OpaquePointer] = [:]
        for (index, keyspace) in Keyspace.allCases.enumerated() {
            families[keyspace] = handles[index + 1]!
        }
        self.families = families

        syncedWriteOptions = rocksdb_writeoptions_create()!
        rocksdb_writeoptions_set_sync(syncedWriteOptions, 1)
        bufferedWriteOptions = rocksdb_writeoptions_create()!
        rocksdb_writeoptions_set_sync(bufferedWriteOptions, 0)
        unloggedWriteOptions = rocksdb_writeoptions_create()!
        rocksdb_writeoptions_disable_WAL(unloggedWriteOptions, 1)
        latestReadOptions = rocksdb_readoptions_create()!
        cacheOnlyReadOptions = rocksdb_readoptions_create()!
        rocksdb_readoptions_set_read_tier(cacheOnlyReadOptions, 1)
    }

    deinit {
        // Best effort: if the engine was dropped without close(), buffered writes still
        // reach the disk. After close() this finds nothing to sync and is cheap.
        var error: UnsafeMutablePointer<CChar>? = nil
        rocksdb_flush_wal(handle, 1, &error)
        if let error { rocksdb_free(error) }
        // Column family handles must go before the database that issued them.
        for family in families.values { rocksdb_column_family_handle_destroy(family) }
        rocksdb_column_family_handle_destroy(defaultFamily)
        rocksdb_close(handle)
        rocksdb_writeoptions_destroy(syncedWriteOptions)
        rocksdb_writeoptions_destroy(bufferedWriteOptions)
        rocksdb_writeoptions_destroy(unloggedWriteOptions)
        rocksdb_readoptions_destroy(latestReadOptions)
        rocksdb_readoptions_destroy(cacheOnlyReadOptions)
        rocksdb_options_destroy(options)
        if let blockCache { rocksdb_cache_destroy(blockCache) }
    }

    /// The column family handle of `keyspace`.
    /// A RocksDB checkpoint in the new directory `directory`: every column family as of
    /// one instant, memtables flushed first, table files hard-linked where the file
    /// system allows (so it is fast and takes little space until compaction rewrites
    /// them) and copied otherwise.
    func checkpoint(to directory: String) throws(StorageError) {
        var error: UnsafeMutablePointer<CChar>? = nil
        let checkpoint = rocksdb_checkpoint_object_create(handle, &error)
        try RocksDBError.check(error, .io, "preparing a checkpoint")
        defer { rocksdb_checkpoint_object_destroy(checkpoint) }
        // A log size of 0 flushes the memtables, so the checkpoint needs no WAL replay.
        rocksdb_checkpoint_create(checkpoint, directory, 0, &error)
        try RocksDBError.check(error, .io, "writing a checkpoint to \(directory)")
    }

    func family(_ keyspace: Keyspace) -> OpaquePointer {
        families[keyspace]!
    }

    /// Flushes the memtables of `keyspaces` to synced table files as one atomic edit and
    /// waits for it.
    func flush(_ keyspaces: Set<Keyspace>) throws(StorageError) {
        let handles: [OpaquePointer?] = keyspaces.sorted { $0.rawValue < $1.rawValue }.map { family($0) }
        var error: UnsafeMutablePointer<CChar>? = nil
        handles.withUnsafeBufferPointer { buffer in
            kv_rocksdb_flush_families(handle, buffer.baseAddress, buffer.count, &error)
        }
        try RocksDBError.check(
            error, .io, "flushing \(keyspaces.map(\.rawValue).sorted().joined(separator: ", "))")
    }

    /// Compacts `range` of `keyspace` through every level, the bottom one included.
    func compact(_ range: EncodedKeyRange, in keyspace: Keyspace) {
        let options = rocksdb_compactoptions_create()!
        defer { rocksdb_compactoptions_destroy(options) }
        // kForceOptimized (3): the bottom level is rewritten too (that is where the old
        // values are), but not the files this compaction itself has just written.
        rocksdb_compactoptions_set_bottommost_level_compaction(options, 3)
        // Background compactions of other ranges go on meanwhile.
        rocksdb_compactoptions_set_exclusive_manual_compaction(options, 0)
        Bytes.with(range.lowerBound) { lower, lowerCount in
            if let upperBound = range.upperBound {
                Bytes.with(upperBound) { upper, upperCount in
                    rocksdb_compact_range_cf_opt(
                        handle, family(keyspace), options, lower, lowerCount, upper, upperCount)
                }
            } else {
                rocksdb_compact_range_cf_opt(handle, family(keyspace), options, lower, lowerCount, nil, 0)
            }
        }
    }

    /// The counters of RocksDB's statistics object.
    func statistics() -> RocksDBStatistics {
        guard let text = rocksdb_options_statistics_get_string(options) else {
            return RocksDBStatistics(tickers: [:])
        }
        defer { rocksdb_free(text) }
        return RocksDBStatistics.parse(String(cString: text))
    }

    /// Reads one value with `readOptions` (latest state or a snapshot).
    ///
    /// Uses `rocksdb_get_pinned_cf` rather than `rocksdb_get_cf`: the pinned slice points
    /// into the block cache or memtable, so the value is copied once (into the Swift
    /// array) instead of twice (into a `malloc`ed buffer, then into the array), and an
    /// empty value is never confused with "absent" the way a `malloc(0)` result could be.
    /// Reads from memtables and the block cache only; `nil` when that is not enough.
    func getIfCached(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> CachedRead {
        var error: UnsafeMutablePointer<CChar>? = nil
        let slice = Bytes.with(key) { pointer, count in
            rocksdb_get_pinned_cf(handle, cacheOnlyReadOptions, family(keyspace), pointer, count, &error)
        }
        if let error, String(cString: error).hasPrefix("Incomplete") {
            rocksdb_free(error)
            return .notCached
        }
        try RocksDBError.check(error, .io, "reading from \(keyspace.rawValue)")
        guard let slice else { return .found(nil) }
        defer { rocksdb_pinnableslice_destroy(slice) }
        var length = 0
        let value = rocksdb_pinnableslice_value(slice, &length)
        return .found(Bytes.copy(value, count: length))
    }

    func get(_ key: [UInt8], in keyspace: Keyspace, readOptions: OpaquePointer) throws(StorageError)
        -> [UInt8]?
    {
        var error: UnsafeMutablePointer<CChar>? = nil
        let slice = Bytes.with(key) { pointer, count in
            rocksdb_get_pinned_cf(handle, readOptions, family(keyspace), pointer, count, &error)
        }
        try RocksDBError.check(error, .io, "reading from \(keyspace.rawValue)")
        guard let slice else { return nil }
        defer { rocksdb_pinnableslice_destroy(slice) }
        var length = 0
        let value = rocksdb_pinnableslice_value(slice, &length)
        return Bytes.copy(value, count: length)
    }

    /// The largest key of `keyspace` that is at least `lowerBound`, in the state
    /// `readOptions` reads, or `nil` when there is none.
    func lastKey(in keyspace: Keyspace, from lowerBound: [UInt8], readOptions: OpaquePointer)
        throws(StorageError)
        -> [UInt8]?
    {
        let iterator = rocksdb_create_iterator_cf(handle, readOptions, family(keyspace))!
        defer { rocksdb_iter_destroy(iterator) }
        rocksdb_iter_seek_to_last(iterator)
        if rocksdb_iter_valid(iterator) != 0 {
            var length = 0
            let pointer = rocksdb_iter_key(iterator, &length)!
            guard Bytes.compare(pointer, count: length, with: lowerBound) >= 0 else { return nil }
            return Bytes.copy(pointer, count: length)
        }
        var error: UnsafeMutablePointer<CChar>? = nil
        rocksdb_iter_get_error(iterator, &error)
        try RocksDBError.check(error, .io, "finding the last key of \(keyspace.rawValue)")
        return nil
    }

    /// The approximate on-disk bytes of `[lowerBound, upperBound)` in table files.
    func approximateTableBytes(in keyspace: Keyspace, from lowerBound: [UInt8], to upperBound: [UInt8])
        throws(StorageError) -> UInt64
    {
        var size: UInt64 = 0
        var error: UnsafeMutablePointer<CChar>? = nil
        Bytes.with(lowerBound) { lower, lowerCount in
            Bytes.with(upperBound) { upper, upperCount in
                let starts: [UnsafePointer<CChar>?] = [lower]
                let startCounts = [lowerCount]
                let limits: [UnsafePointer<CChar>?] = [upper]
                let limitCounts = [upperCount]
                rocksdb_approximate_sizes_cf(
                    handle, family(keyspace), 1, starts, startCounts, limits, limitCounts, &size, &error)
            }
        }
        try RocksDBError.check(error, .io, "estimating the size of \(keyspace.rawValue)")
        return size
    }

    /// An integer property of `keyspace`'s column family, or 0 when RocksDB does not know it.
    func integerProperty(_ name: String, of keyspace: Keyspace) -> UInt64 {
        guard let text = rocksdb_property_value_cf(handle, family(keyspace), name) else { return 0 }
        defer { rocksdb_free(text) }
        return UInt64(String(cString: text)) ?? 0
    }

    /// The key count and bytes of `range` that sit in memtables (not yet in table files),
    /// counting at most `limit` keys.
    ///
    /// `rocksdb_approximate_sizes_cf` sees table files only, and the C API of this RocksDB
    /// (7.8) has no `..._with_flags` variant that includes memtables, so a freshly written
    /// store would look empty. A memtable-only iterator (read tier 3, `kMemtableTier`)
    /// fills the gap; it never reads the disk. It stops after `limit` keys so an estimate
    /// stays cheap, which makes the result a lower bound for ranges with more keys than
    /// that in memtables.
    func memtableUsage(of range: EncodedKeyRange, in keyspace: Keyspace, limit: Int) throws(StorageError) -> (
        keys: UInt64, bytes: UInt64
    ) {
        let readOptions = rocksdb_readoptions_create()!
        defer { rocksdb_readoptions_destroy(readOptions) }
        rocksdb_readoptions_set_read_tier(readOptions, 3)
        let iterator = rocksdb_create_iterator_cf(handle, readOptions, family(keyspace))!
        defer { rocksdb_iter_destroy(iterator) }
        Bytes.with(range.lowerBound) { pointer, count in rocksdb_iter_seek(iterator, pointer, count) }
        var keys: UInt64 = 0
        var bytes: UInt64 = 0
        while rocksdb_iter_valid(iterator) != 0 && keys < UInt64(limit) {
            var keyLength = 0
            let key = rocksdb_iter_key(iterator, &keyLength)!
            if let upperBound = range.upperBound, Bytes.compare(key, count: keyLength, with: upperBound) >= 0
            {
                break
            }
            var valueLength = 0
            _ = rocksdb_iter_value(iterator, &valueLength)
            keys += 1
            bytes += UInt64(keyLength + valueLength)
            rocksdb_iter_next(iterator)
        }
        var error: UnsafeMutablePointer<CChar>? = nil
        rocksdb_iter_get_error(iterator, &error)
        try RocksDBError.check(error, .io, "estimating the memtables of \(keyspace.rawValue)")
        return (keys, bytes)
    }

    private static func compressionCode(_ compression: RocksDBSettings.Compression) -> Int {
        switch compression {
        case .none: rocksdb_no_compression
        case .lz4: rocksdb_lz4_compression
        case .zstd: rocksdb_zstd_compression
        case .snappy: rocksdb_snappy_compression
        }
    }
}
