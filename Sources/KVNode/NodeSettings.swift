import KVCore

/// Settings of one node's data path. Only the `kv` executable builds them from flags,
/// the configuration file and the environment.
public struct NodeSettings: Sendable, Hashable {
    /// Partitions of the key space, fixed when a node's data directory is created
    /// (a power of two). Default 256.
    public var partitionCount: Int
    /// Largest encoded key (namespace and table excluded), in bytes. Default 4 KiB.
    public var maximumKeyBytes: Int
    /// Largest value, in bytes. Default 16 MiB.
    public var maximumValueBytes: Int
    /// Most operations in one batch. Default 1,000.
    public var maximumBatchOperations: Int
    /// Most siblings a row may hold. A write that would leave more is refused with
    /// `row.too_many_siblings` until a client resolves them by writing with a context:
    /// blind writes to one row would otherwise grow it without bound. Default 100.
    public var maximumSiblings: Int
    /// Most bytes of live values one row may hold across its siblings; a write that
    /// would exceed it is refused with `row.too_large`. It bounds what a read of one row
    /// can return. Default 64 MiB.
    public var maximumRowBytes: Int
    /// Most value bytes one answer gathers: a scan page ends early (with a continuation)
    /// and the gets of a batch beyond it fail with `request.response_too_large`, so no
    /// small request can make the node build a huge answer. Default 32 MiB.
    public var maximumResponseBytes: Int
    /// Threads that run blocking storage calls. Synced writes wait for fsync, so more
    /// threads than cores let concurrent writers share one (group commit). Default 16.
    public var storageThreads: Int
    /// The node's name, or `nil` for an anonymous node. A named node's id is derived
    /// from its name (``NodeIdentity/nodeID(named:)``), so a node rebuilt on an empty
    /// data directory comes back as the same member and is refilled by anti-entropy; an
    /// anonymous one would come back as a stranger. Default `nil`.
    public var nodeName: String?
    /// Where the node writes backups (`POST /v1/_node/backup`), or `nil` for a node that
    /// takes none (its engine keeps nothing on disk). Default `nil`.
    public var backupDirectory: String?

    /// A streamed value up to this size is stored inline, a larger one in chunks.
    /// Default 1 MiB.
    public var inlineValueThreshold: Int = LargeValue.defaultInlineThreshold
    /// The size of the chunks large values are cut into. Default 1 MiB.
    public var chunkBytes: Int = LargeValue.defaultChunkBytes
    /// How many chunks one upload or download keeps in flight. Default 4.
    public var chunksInFlight: Int = 4

    /// The largest value a write that hands over the whole value at once may store (it
    /// is stored inline): the value limit, up to 16 MiB. Larger values are streamed.
    public var maximumInlineValueBytes: Int { min(maximumValueBytes, RowValue.maximumInlineBytes) }

    /// The size up to which a streamed value is stored inline: the threshold, or less
    /// when the value limit is lower.
    public var effectiveInlineThreshold: Int { min(inlineValueThreshold, maximumValueBytes) }

    /// The chunk size, or less when the row limit could not hold such a chunk.
    public var effectiveChunkBytes: Int { min(chunkBytes, max(1024, maximumRowBytes / 2)) }

    /// Creates settings with the documented defaults.
    public init(
        partitionCount: Int = 256, maximumKeyBytes: Int = 4096, maximumValueBytes: Int = 1 << 30,
        maximumBatchOperations: Int = 1000, maximumSiblings: Int = 100, maximumRowBytes: Int = 64 << 20,
        maximumResponseBytes: Int = 32 << 20, storageThreads: Int = 16, nodeName: String? = nil
    ) {
        self.nodeName = nodeName
        self.maximumRowBytes = maximumRowBytes
        self.maximumResponseBytes = maximumResponseBytes
        self.maximumSiblings = maximumSiblings
        self.partitionCount = partitionCount
        self.maximumKeyBytes = maximumKeyBytes
        self.maximumValueBytes = maximumValueBytes
        self.maximumBatchOperations = maximumBatchOperations
        self.storageThreads = storageThreads
    }

    /// Every problem with these settings, one sentence each.
    public func problems() -> [String] {
        var problems: [String] = []
        if partitionCount < 1 || partitionCount > 1 << 16 || partitionCount & (partitionCount - 1) != 0 {
            problems.append(
                "the partition count must be a power of two from 1 to 65536, not \(partitionCount)")
        }
        if !(16...(1 << 20)).contains(maximumKeyBytes) {
            problems.append("the key limit must be 16 bytes to 1 MiB, not \(maximumKeyBytes)")
        }
        if !(1...(1 << 40)).contains(maximumValueBytes) {
            problems.append("the value limit must be 1 byte to 1 TiB, not \(maximumValueBytes)")
        }
        if !(4096...(16 << 20)).contains(chunkBytes) {
            problems.append("the chunk size must be 4 KiB to 16 MiB, not \(chunkBytes)")
        }
        if !(0...(16 << 20)).contains(inlineValueThreshold) {
            problems.append("the inline threshold must be 0 to 16 MiB, not \(inlineValueThreshold)")
        }
        if !(1...64).contains(chunksInFlight) {
            problems.append("chunks in flight must be 1 to 64, not \(chunksInFlight)")
        }
        if !(1...100_000).contains(maximumBatchOperations) {
            problems.append("the batch limit must be 1 to 100000 operations, not \(maximumBatchOperations)")
        }
        if !(1...100_000).contains(maximumSiblings) {
            problems.append("the sibling limit must be 1 to 100000, not \(maximumSiblings)")
        }
        if maximumRowBytes < maximumInlineValueBytes {
            problems.append(
                "the row limit (\(maximumRowBytes) bytes) must be at least the inline value limit (\(maximumInlineValueBytes))"
            )
        }
        if !(1024...(1 << 31)).contains(maximumResponseBytes) {
            problems.append("the response limit must be 1 KiB to 2 GiB, not \(maximumResponseBytes) bytes")
        }
        if let nodeName,
            nodeName.isEmpty || nodeName.utf8.count > 64
                || !nodeName.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 32 && $0.value < 127 })
        {
            problems.append("a node name has 1 to 64 printable ASCII characters without spaces")
        }
        if !(1...1024).contains(storageThreads) {
            problems.append("storage threads must be 1 to 1024, not \(storageThreads)")
        }
        return problems
    }
}
