import ArgumentParser
import KVStorageRocksDB

/// `kv server`'s RocksDB memory settings: the memtable size and the block cache, which
/// together bound what the engine holds in memory (docs/storage.md). Each comes from its
/// flag, its environment variable, the YAML file or the default.
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

    /// The YAML keys.
    struct File: Decodable {
        var writeBufferMebibytes: Int?
        var blockCacheMebibytes: Int?

        enum CodingKeys: String, CodingKey {
            case writeBufferMebibytes = "rocksdb_write_buffer_mib"
            case blockCacheMebibytes = "rocksdb_block_cache_mib"
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
        settings.writeBufferBytes = writeBuffer << 20
        settings.blockCacheBytes = blockCache << 20
        return settings
    }
}
