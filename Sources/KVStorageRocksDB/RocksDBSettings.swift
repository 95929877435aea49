/// How a ``RocksDBStorageEngine`` configures RocksDB.
///
/// Every field has a default fit for one node on a small server; ``validate()`` lists
/// what is wrong with a changed value before RocksDB sees it, so a bad configuration
/// fails with a readable message instead of a RocksDB status string.
public struct RocksDBSettings: Sendable, Hashable {
    /// How RocksDB compresses the blocks of its table files.
    public enum Compression: String, Sendable, Hashable, CaseIterable {
        /// No compression: the least CPU, the most disk.
        case none
        /// LZ4: fast, modest ratio.
        case lz4
        /// Zstandard: better ratio, more CPU.
        case zstd
        /// Snappy: RocksDB's historical default, similar to LZ4.
        case snappy
    }

    /// Bytes of the LRU cache of uncompressed table blocks, shared by every column family.
    /// Default 64 MiB; 0 turns the cache off (every read then goes to the OS page cache).
    public var blockCacheBytes: Int
    /// Bits per key of the Bloom filter that lets a point read skip table files that
    /// cannot hold the key. Default 10 (about 1% false positives); 0 turns filters off.
    public var bloomFilterBitsPerKey: Int
    /// Block compression. Default ``Compression/lz4``: in the measurements of
    /// docs/benchmarks.md it cost no measurable throughput against no compression while
    /// shrinking table files by 39 %; zstd saved 7 % more at equal speed on that small data
    /// set, which is too little evidence to pay its extra compaction CPU by default.
    public var compression: Compression
    /// Bytes a memtable holds before it is flushed to a table file. Default 64 MiB
    /// (RocksDB's own default). Larger means fewer, larger flushes and more memory.
    public var writeBufferBytes: Int
    /// The most table files RocksDB keeps open, or -1 for all of them. Default 512:
    /// bounded so a large store cannot exhaust the common 1024-descriptor soft limit that
    /// the node's sockets share, yet large enough that a modest store keeps every file open.
    public var maxOpenFiles: Int
    /// Whether opening a missing store creates it. Default `true`. Only the last path
    /// component is created; its parent directory must exist.
    public var createIfMissing: Bool
    /// Whether writers waiting for a group commit spin (with yields) before they block.
    /// Default `false`: spinning pays on many cores, but on the 2-core machine of
    /// docs/benchmarks.md it took CPU from the other writers, and turning it off gave a
    /// 3-node cluster about 15 % more puts per second.
    public var adaptiveYield: Bool
    /// A synced batch whose values add up to at least this many bytes skips the
    /// write-ahead log: it goes to the memtables and the keyspaces it touches are flushed
    /// to table files (one atomic flush, synced) before the write returns. Its bytes then
    /// reach the disk once instead of twice (log, then table file), which is what lets a
    /// large value stream at the disk's speed, and it never waits in a memtable. Default
    /// 512 KiB, about one chunk of a large value; 0 logs every batch.
    public var unloggedBatchBytes: Int
    /// Values at least this large are written to blob files instead of table files when
    /// a memtable is flushed, so compaction moves only their small references and never
    /// copies the bytes again. Default 0, every value in table files: each unlogged
    /// batch's flush makes a blob file of its own, a few MiB, and compaction only
    /// gathers them into larger ones by rewriting their values anyway, so with the
    /// store's one-chunk batches blob files multiplied (500 per GiB) without saving any
    /// writing. Worth trying for large values written in memtable-sized batches.
    public var blobThresholdBytes: Int

    /// Creates settings; every argument defaults to the documented default.
    public init(
        blockCacheBytes: Int = 64 << 20,
        bloomFilterBitsPerKey: Int = 10,
        compression: Compression = .lz4,
        writeBufferBytes: Int = 64 << 20,
        maxOpenFiles: Int = 512,
        createIfMissing: Bool = true,
        adaptiveYield: Bool = false,
        unloggedBatchBytes: Int = 512 << 10,
        blobThresholdBytes: Int = 0
    ) {
        self.unloggedBatchBytes = unloggedBatchBytes
        self.blobThresholdBytes = blobThresholdBytes
        self.adaptiveYield = adaptiveYield
        self.blockCacheBytes = blockCacheBytes
        self.bloomFilterBitsPerKey = bloomFilterBitsPerKey
        self.compression = compression
        self.writeBufferBytes = writeBufferBytes
        self.maxOpenFiles = maxOpenFiles
        self.createIfMissing = createIfMissing
    }

    /// What is wrong with these settings, one sentence each; empty when they are usable.
    public func validate() -> [String] {
        var problems: [String] = []
        if blockCacheBytes < 0 {
            problems.append("the block cache size must be 0 (off) or more bytes, not \(blockCacheBytes)")
        }
        // Beyond about 20 bits the false-positive rate stops improving while memory keeps
        // growing, and RocksDB clamps at 100; 64 leaves room for experiments.
        if !(0...64).contains(bloomFilterBitsPerKey) {
            problems.append(
                "the Bloom filter bits per key must be 0 (off) to 64, not \(bloomFilterBitsPerKey)")
        }
        // RocksDB silently raises tiny write buffers; refusing them keeps the setting honest.
        if writeBufferBytes < 64 << 10 {
            problems.append("the write buffer size must be at least 64 KiB, not \(writeBufferBytes) bytes")
        }
        // RocksDB needs some descriptors for its own files (WAL, MANIFEST, LOCK) and
        // raises smaller limits to 20 anyway.
        if maxOpenFiles != -1 && maxOpenFiles < 20 {
            problems.append(
                "the maximum of open files must be -1 (unlimited) or at least 20, not \(maxOpenFiles)")
        }
        if unloggedBatchBytes < 0 {
            problems.append(
                "the unlogged batch size must be 0 (off) or more bytes, not \(unloggedBatchBytes)")
        }
        if blobThresholdBytes < 0 {
            problems.append("the blob threshold must be 0 (off) or more bytes, not \(blobThresholdBytes)")
        }
        return problems
    }
}
