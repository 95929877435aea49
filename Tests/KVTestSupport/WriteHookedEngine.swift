import KVCore
import KVStorage
import KVStorageMemory

/// A memory engine whose writes pass a test's hook first: a disk that stalls (the hook
/// waits) or fails (the hook throws, and nothing is written). Reads are the memory
/// engine's, whatever the hook does.
public final class WriteHookedEngine: StorageEngine, Sendable {
    /// The engine underneath.
    public let base = MemoryStorageEngine()
    private let beforeWrite: @Sendable () throws(StorageError) -> Void

    /// An engine that calls `beforeWrite` before each write; an error it throws is the
    /// write's.
    public init(beforeWrite: @escaping @Sendable () throws(StorageError) -> Void) {
        self.beforeWrite = beforeWrite
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try base.get(key, in: keyspace)
    }

    public func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError) -> any StorageCursor
    {
        try base.cursor(over: range, in: keyspace, direction: direction)
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        try beforeWrite()
        try base.write(batch, durability: durability)
    }

    public func snapshot() throws(StorageError) -> any StorageSnapshot { try base.snapshot() }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        try base.estimateSize(of: range, in: keyspace)
    }

    public func close() throws(StorageError) { try base.close() }
}
