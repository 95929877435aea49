import ArgumentParser
import KVStorageRocksDB

/// `kv server`'s RocksDB settings: the memtable size and the block cache, which together
/// bound what the engine holds in memory, and the sizes from which a batch skips the
/// log and a value goes to a blob file (docs/storage.md). Each comes from its flag, its
/// environment variable, the YAML file or the default.
struct RocksDBOptions: ParsableArguments {
    @Option(
        name: .customLong("rocksdb-write-buffer-mib"),
        help:
            "MiB a RocksDB memtable holds before it is flushed; up to two per keyspace are in memory (default 64)."
    )
    var writeBufferMebibytes: Int?
    @Option(
        name: .customLong("rocksdb-block-cache-mib"),
        help: "MiB of RocksDB's block cache, shared by every keyspace; 0 turns it off (default 64).")
    var blockCacheMebibytes: Int?
    @Option(
        name: .customLong("rocksdb-unlogged-batch-kib"),
        help:
            "KiB of values from which a synced batch skips RocksDB's log and is flushed to table files before it is acknowledged; 0 logs every batch (default 512)."
    )
    var unloggedBatchKibibytes: Int?
    @Option(
        name: .customLong("rocksdb-blob-threshold-kib"),
        help:
            "KiB from which a value is kept in a RocksDB blob file; 0 keeps every value in table files (default 0)."
    )
    var blobThresholdKibibytes: Int?

    /// The YAML keys.
    struct File: Decodable {
        var writeBufferMebibytes: Int?
        var blockCacheMebibytes: Int?
        var unloggedBatchKibibytes: Int?
        var blobThresholdKibibytes: Int?

        enum CodingKeys: String, CodingKey {
            case writeBufferMebibytes = "rocksdb_write_buffer_mib"
            case blockCacheMebibytes = "rocksdb_block_cache_mib"
            case unloggedBatchKibibytes = "rocksdb_unlogged_batch_kib"
            case blobThresholdKibibytes = "rocksdb_blob_threshold_kib"
        }
    }

    /// The engine settings these options give.
    func settings(file: File, environment: [String: String]) throws -> RocksDBSettings {
        let sources = SettingSources(environment: environment)
        var settings = RocksDBSettings()
        let writeBuffer = try sources.resolve(
            writeBufferMebibytes, "KV_ROCKSDB_WRITE_BUFFER_MIB", file.writeBufferMebibytes,
            settings.writeBufferBytes >> 20)
        let blockCache = try sources.resolve(
            blockCacheMebibytes, "KV_ROCKSDB_BLOCK_CACHE_MIB", file.blockCacheMebibytes,
            settings.blockCacheBytes >> 20)
        guard (1...4096).contains(writeBuffer) else {
            throw ValidationError("the RocksDB write buffer must be 1 to 4096 MiB, not \(writeBuffer)")
        }
        guard (0...(1 << 20)).contains(blockCache) else {
            throw ValidationError("the RocksDB block cache must be 0 to 1048576 MiB, not \(blockCache)")
        }
        let unloggedBatch = try sources.resolve(
            unloggedBatchKibibytes, "KV_ROCKSDB_UNLOGGED_BATCH_KIB", file.unloggedBatchKibibytes,
            settings.unloggedBatchBytes >> 10)
        let blobThreshold = try sources.resolve(
            blobThresholdKibibytes, "KV_ROCKSDB_BLOB_THRESHOLD_KIB", file.blobThresholdKibibytes,
            settings.blobThresholdBytes >> 10)
        guard (0...(1 << 20)).contains(unloggedBatch) else {
            throw ValidationError(
                "the RocksDB unlogged batch size must be 0 to 1048576 KiB, not \(unloggedBatch)")
        }
        guard (0...(1 << 20)).contains(blobThreshold) else {
            throw ValidationError("the RocksDB blob threshold must be 0 to 1048576 KiB, not \(blobThreshold)")
        }
        settings.writeBufferBytes = writeBuffer << 20
        settings.blockCacheBytes = blockCache << 20
        settings.unloggedBatchBytes = unloggedBatch << 10
        settings.blobThresholdBytes = blobThreshold << 10
        return settings
    }
}
