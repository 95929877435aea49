import KVCore
import KVStorage

/// The ``StorageEngine`` contract over any ``DatabaseConnection``: reads and writes take a
/// session from a pool; snapshots and cursors keep one with an open read-only snapshot
/// until they are released or exhausted.
public final class DatabaseStorageEngine<Connection: DatabaseConnection>: StorageEngine {
    /// The sessions.
    public let pool: ConnectionPool<Connection>
    /// Entries a cursor fetches per round trip.
    public let pageSize: Int
    private let backupCopy: (@Sendable (Connection, String) throws(StorageError) -> Void)?

    /// Creates an engine over `pool`. `backup`, when given, writes a copy of everything
    /// to a new directory through one session (only embedded databases can).
    public init(
        pool: ConnectionPool<Connection>, pageSize: Int = 256,
        backup: (@Sendable (Connection, String) throws(StorageError) -> Void)? = nil
    ) {
        self.pool = pool
        self.pageSize = max(1, pageSize)
        self.backupCopy = backup
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try pool.withConnection { connection throws(StorageError) in try connection.get(key, in: keyspace) }
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        guard !batch.isEmpty else { return try pool.checkOpen() }
        try pool.withConnection { connection throws(StorageError) in
            try connection.write(batch, durability: durability)
        }
    }

    /// A cursor sees the state at its creation: it reads inside a snapshot of its range,
    /// which it gives up as soon as it has read the last page.
    public func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError) -> any StorageCursor
    {
        let session = try SnapshotSession<Connection>(pool: pool, scope: .range(keyspace, range))
        let pageSize = pageSize
        return PagedCursor(
            range: range, direction: direction,
            fetch: { remaining throws(StorageError) in
                try session.read { connection throws(StorageError) in
                    try connection.page(of: remaining, in: keyspace, direction: direction, limit: pageSize)
                }
            }, atEnd: session.release)
    }

    public func snapshot() throws(StorageError) -> any StorageSnapshot {
        DatabaseSnapshot<Connection>(
            session: try SnapshotSession(pool: pool, scope: .everything), pageSize: pageSize)
    }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        try pool.withConnection { connection throws(StorageError) in
            try connection.estimateSize(of: range, in: keyspace)
        }
    }

    public func backup(to directory: String) throws(StorageError) {
        guard let backupCopy else {
            throw StorageError(
                .unsupported,
                "this engine keeps its data in a database server: back it up with the database's own tools")
        }
        try pool.withConnection { connection throws(StorageError) in try backupCopy(connection, directory) }
    }

    public func close() throws(StorageError) {
        pool.close()
    }
}

/// A pooled session holding an open snapshot; gives the session back when released.
///
/// Its connection is used by one reader at a time: a cursor is single-threaded by
/// contract, and a shared snapshot serializes its readers through a lock.
final class SnapshotSession<Connection: DatabaseConnection>: @unchecked Sendable {
    private let pool: ConnectionPool<Connection>
    private let connection: Connection
    private var isReleased = false

    init(pool: ConnectionPool<Connection>, scope: SnapshotScope) throws(StorageError) {
        let connection = try pool.checkOut()
        do {
            try connection.beginSnapshot(scope)
        } catch {
            pool.checkIn(connection, broken: true)
            throw error
        }
        self.pool = pool
        self.connection = connection
    }

    /// Runs a read in the snapshot; a failure closes the session rather than reuse it.
    func read<Result>(_ body: (Connection) throws(StorageError) -> Result) throws(StorageError) -> Result {
        guard !isReleased else { throw StorageError.closed }
        do {
            return try body(connection)
        } catch {
            isReleased = true
            pool.checkIn(connection, broken: true)
            throw error
        }
    }

    /// Ends the snapshot and gives the session back (at most once).
    func release() {
        guard !isReleased else { return }
        isReleased = true
        do {
            try connection.endSnapshot()
            pool.checkIn(connection, broken: false)
        } catch {
            pool.checkIn(connection, broken: true)
        }
    }

    deinit {
        release()
    }
}

extension DatabaseStorageEngine {
    /// Opens an engine: the first session runs `prepare` (check the server's durability
    /// settings, create the table), so a misconfigured or unreachable database fails at
    /// start with its own message; the pool then keeps that session.
    public static func open(
        databaseName: String, poolSize: Int, pageSize: Int,
        backup: (@Sendable (Connection, String) throws(StorageError) -> Void)? = nil,
        connect: @escaping @Sendable () throws(StorageError) -> Connection,
        prepare: (Connection) throws(StorageError) -> Void
    ) throws(StorageError) -> DatabaseStorageEngine {
        let first = try connect()
        do {
            try prepare(first)
        } catch {
            first.close()
            throw error
        }
        let pool = ConnectionPool(capacity: poolSize, databaseName: databaseName, open: connect)
        pool.checkIn(first, broken: false)
        return DatabaseStorageEngine(pool: pool, pageSize: pageSize, backup: backup)
    }
}

/// Calls `body` with C pointers to copies of `arguments` and their lengths, for C client
/// libraries that take binary arguments as `const char **` plus lengths. The copies live
/// for the call only (the libraries copy or send them before returning).
public func withCArguments<Result>(
    _ arguments: [[UInt8]], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, [Int]) -> Result
) -> Result {
    let buffers = arguments.map { bytes -> UnsafeMutablePointer<CChar> in
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Swift.max(1, bytes.count))
        bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress {
                UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: raw.count)
            }
        }
        return buffer
    }
    defer { for buffer in buffers { buffer.deallocate() } }
    var pointers: [UnsafePointer<CChar>?] = buffers.map { UnsafePointer($0) }
    return pointers.withUnsafeMutableBufferPointer { body($0.baseAddress!, arguments.map(\.count)) }
}
