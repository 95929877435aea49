import KVCore

/// How durable a write must be before ``StorageEngine/write(_:durability:)`` returns.
public enum Durability: Sendable, Hashable {
    /// Written to the log and flushed to stable storage (fsync). Concurrent synced
    /// writers share one flush (group commit). Every acknowledged client write uses this.
    case synced
    /// Written to the log but not flushed; a machine crash may lose it, a process crash
    /// may not. Only for state that can be rebuilt, such as anti-entropy trees.
    case buffered
}

/// Which way a cursor walks its range.
public enum ScanDirection: Sendable, Hashable {
    /// Ascending byte order.
    case forward
    /// Descending byte order.
    case reverse
}

/// One key-value pair returned by a cursor.
public struct StorageEntry: Hashable, Sendable {
    /// The key.
    public var key: [UInt8]
    /// The value.
    public var value: [UInt8]

    /// Creates an entry.
    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }
}

/// An ordered set of puts and deletes applied atomically: after a crash either all of
/// it is visible or none.
public struct WriteBatch: Sendable, Hashable {
    /// One operation of a batch.
    public enum Operation: Sendable, Hashable {
        /// Sets `key` to `value`.
        case put(Keyspace, key: [UInt8], value: [UInt8])
        /// Removes `key` (a no-op when absent).
        case delete(Keyspace, key: [UInt8])
        /// Removes every key in `range` (used to drop a table, a namespace or a partition).
        case deleteRange(Keyspace, EncodedKeyRange)
    }

    /// The operations, applied in order.
    public private(set) var operations: [Operation] = []

    /// Creates an empty batch.
    public init() {}

    /// Appends a put.
    public mutating func put(_ key: [UInt8], _ value: [UInt8], in keyspace: Keyspace = .data) {
        operations.append(.put(keyspace, key: key, value: value))
    }

    /// Appends a delete.
    public mutating func delete(_ key: [UInt8], in keyspace: Keyspace = .data) {
        operations.append(.delete(keyspace, key: key))
    }

    /// Appends a range delete.
    public mutating func deleteRange(_ range: EncodedKeyRange, in keyspace: Keyspace = .data) {
        operations.append(.deleteRange(keyspace, range))
    }

    /// Whether the batch holds no operation.
    public var isEmpty: Bool { operations.isEmpty }
}

/// Reads from a fixed state of an engine.
///
/// Both an engine (its latest state) and a snapshot (a frozen state) are readers, so
/// code that reads can take either.
public protocol StorageReader {
    /// The value of `key`, or `nil` when absent.
    func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]?

    /// A cursor over the keys of `range` in `keyspace`, in `direction` order.
    ///
    /// A cursor created from an engine sees the state at its creation; one created from a
    /// snapshot sees the snapshot's state.
    func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError)
        -> any StorageCursor
}

/// Walks the entries of a range in order. Not thread-safe: use it from one task.
///
/// Dropping a cursor halfway is harmless; it holds no lock that blocks writers.
public protocol StorageCursor: AnyObject {
    /// The next entry, or `nil` at the end of the range.
    func next() throws(StorageError) -> StorageEntry?
}

/// A consistent, read-only view of an engine at one moment. Writes made after it was
/// taken are invisible to it. Resources are released when the last reference goes.
///
/// A snapshot may be shared between threads (handoff streams read one from a pool).
public protocol StorageSnapshot: StorageReader, AnyObject, Sendable {}

/// The answer of a read that must not block.
public enum CachedRead: Sendable, Hashable {
    /// The key's value (`nil`: absent), found without waiting for I/O.
    case found([UInt8]?)
    /// Answering would need I/O; ask again with ``StorageReader/get(_:in:)`` off the
    /// event loop.
    case notCached
}

/// What an engine estimates a key range holds.
public struct StorageSizeEstimate: Sendable, Hashable {
    /// Approximate bytes on disk (or in memory) of the range's keys and values.
    public var bytes: UInt64
    /// Approximate number of keys.
    public var keyCount: UInt64

    /// Creates an estimate.
    public init(bytes: UInt64, keyCount: UInt64) {
        self.bytes = bytes
        self.keyCount = keyCount
    }
}

/// An ordered, durable key-value engine: the only thing in the store that touches disk.
///
/// Every engine (in-memory, RocksDB, later PostgreSQL, MariaDB and Redis) passes the
/// same conformance suite. Methods block the calling thread; the node shell calls them
/// from a thread pool. All methods may be called concurrently; after ``close()`` they
/// throw ``StorageError/closed``. Cursors and snapshots taken before ``close()`` may go on
/// reading their frozen state; an engine may keep its files open until they are released.
public protocol StorageEngine: StorageReader, Sendable {
    /// Applies `batch` atomically. With ``Durability/synced`` it returns only when the
    /// batch is on stable storage. An empty batch is a no-op (not a durability barrier).
    func write(_ batch: WriteBatch, durability: Durability) throws(StorageError)

    /// A consistent snapshot of the current state.
    func snapshot() throws(StorageError) -> any StorageSnapshot

    /// Approximately how much `range` of `keyspace` holds: for planning (handoff size,
    /// progress), never for correctness. Recently written data may be under-counted.
    func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate

    /// Reads `key` only if the answer is in memory (for example RocksDB's memtables and
    /// block cache), so a front end may call it on its event loop; otherwise returns
    /// ``CachedRead/notCached`` at once.
    func getIfCached(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> CachedRead

    /// Whether a cursor costs no more than the entries it returns, so a caller may read
    /// a span ahead of the point reads it would make and stop at any entry. Engines
    /// whose cursors fetch pages or copy the range up front answer `false`.
    var cursorsStopAnywhere: Bool { get }

    /// Flushes everything to stable storage and releases the engine. Further calls throw
    /// ``StorageError/closed``; calling it again does nothing.
    func close() throws(StorageError)

    /// Writes a consistent copy of everything the engine holds, as of one instant, to the
    /// new directory `directory` while the engine keeps serving; the copy opens as the
    /// engine's directory. Engines that keep nothing on disk throw
    /// ``StorageError/Kind/unsupported``.
    func backup(to directory: String) throws(StorageError)

    /// Rewrites what holds `range` of `keyspace` so the space of values overwritten or
    /// deleted there returns to the file system now, not whenever background
    /// maintenance gets to it. Blocks until done; the data does not change. Engines
    /// that free space at once do nothing.
    func compact(_ range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)

    /// What the engine holds in memory, in bytes by part (RocksDB: `memtables`,
    /// `block_cache`, `table_readers`), for the node's metrics. Engines that cannot tell
    /// report nothing.
    func memoryReport() -> [String: UInt64]
}

extension StorageEngine {
    /// Engines that free space as soon as a value is gone have nothing to compact.
    public func compact(_ range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError) {}

    /// Engines that cannot tell what they hold in memory report nothing.
    public func memoryReport() -> [String: UInt64] { [:] }

    /// An engine without a backup of its own cannot take one.
    public func backup(to directory: String) throws(StorageError) {
        throw StorageError(.unsupported, "this storage engine keeps nothing on disk to back up")
    }
}

extension StorageReader {
    /// A cursor over every data row of `partition`, in key order: the unit of handoff and
    /// anti-entropy.
    public func rows(inPartition partition: PartitionID, direction: ScanDirection = .forward)
        throws(StorageError)
        -> any StorageCursor
    {
        try cursor(over: StorageLayout.partitionRange(partition), in: .data, direction: direction)
    }

    /// Reads every entry of `range` into an array (for tests and small ranges).
    public func entries(
        in range: EncodedKeyRange, of keyspace: Keyspace, direction: ScanDirection = .forward,
        limit: Int = .max
    ) throws(StorageError) -> [StorageEntry] {
        let cursor = try cursor(over: range, in: keyspace, direction: direction)
        var result: [StorageEntry] = []
        while result.count < limit, let entry = try cursor.next() {
            result.append(entry)
        }
        return result
    }
}

extension StorageEngine {
    /// Engines that cannot tell what is in memory never answer from it.
    public func getIfCached(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> CachedRead {
        .notCached
    }

    /// Engines say so when their cursors stop anywhere; by default they may not.
    public var cursorsStopAnywhere: Bool { false }

    /// Applies `batch` with ``Durability/synced``.
    public func write(_ batch: WriteBatch) throws(StorageError) {
        try write(batch, durability: .synced)
    }
}
