import KVCore
import KVStorage

/// What a snapshot must freeze: everything, or one range of one keyspace (all a cursor
/// reads, so an engine without native snapshots may copy only that).
public enum SnapshotScope: Sendable, Hashable {
    /// Every keyspace.
    case everything
    /// One range of one keyspace.
    case range(Keyspace, EncodedKeyRange)
}

/// One page of a range read.
public struct RangePage: Sendable, Hashable {
    /// The entries, in the direction asked for.
    public var entries: [StorageEntry]
    /// Whether the range holds nothing past the entries (the next page would be empty).
    public var isLast: Bool

    /// Creates a page.
    public init(entries: [StorageEntry], isLast: Bool) {
        self.entries = entries
        self.isLast = isLast
    }
}

/// One session with a database: what an engine over a database server (PostgreSQL,
/// MariaDB, Redis) or library (SQLite) implements, so ``DatabaseStorageEngine`` can give
/// it the whole ``StorageEngine`` contract: pooling, snapshots and cursors.
///
/// A connection is used by one thread at a time (the pool hands it out), so an
/// implementation needs no locking of its own.
public protocol DatabaseConnection: AnyObject {
    /// The value of `key`, from the open snapshot if there is one.
    func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]?

    /// Up to `limit` entries of `range` in `direction` order (from the open snapshot if
    /// there is one). A page may hold fewer than `limit` entries without being the last.
    func page(of range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection, limit: Int)
        throws(StorageError) -> RangePage

    /// Applies `batch` in one transaction; returns once it is committed with `durability`.
    func write(_ batch: WriteBatch, durability: Durability) throws(StorageError)

    /// Starts a read-only snapshot: until ``endSnapshot()``, reads see the state of this
    /// instant and nothing written after it.
    func beginSnapshot(_ scope: SnapshotScope) throws(StorageError)

    /// Ends the snapshot and releases what it held.
    func endSnapshot() throws(StorageError)

    /// Approximately what `range` of `keyspace` holds.
    func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate

    /// Closes the session. Called once; the connection is not used afterwards.
    func close()
}

extension Keyspace {
    /// A small stable number for the keyspace, for databases that keep every keyspace
    /// in one table. Stored on disk: never renumber.
    public var storedNumber: Int {
        switch self {
        case .data: 0
        case .metadata: 1
        case .hints: 2
        case .antiEntropy: 3
        }
    }
}

extension Array where Element == UInt8 {
    /// The smallest key greater than this one (itself followed by a zero byte).
    public var immediateSuccessor: [UInt8] { self + [0] }
}
