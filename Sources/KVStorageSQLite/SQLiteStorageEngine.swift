import CSQLite
import Glibc
import KVCore
import KVStorage
import KVStorageDatabase

/// Where and how an SQLite engine keeps its data.
public struct SQLiteSettings: Sendable, Hashable {
    /// The database file.
    public var path: String
    /// The table holding this node's rows, so several nodes may share one file.
    public var table: String
    /// The most connections (the one writer at a time plus readers and snapshots).
    public var poolSize: Int
    /// Entries a cursor reads per query.
    public var pageSize: Int

    /// Creates settings.
    public init(path: String, table: String = "kv", poolSize: Int = 16, pageSize: Int = 256) {
        self.path = path
        self.table = table
        self.poolSize = poolSize
        self.pageSize = pageSize
    }
}

/// The SQLite engine: an embedded second choice beside RocksDB.
///
/// Every keyspace lives in one `WITHOUT ROWID` table keyed by (keyspace, key); SQLite
/// compares blobs with `memcmp`, which is the byte order the store needs. The database
/// runs in WAL mode: a synced batch commits with `synchronous=FULL` (the WAL is fsynced
/// before `COMMIT` returns), a buffered one with `NORMAL`. A snapshot is a read
/// transaction on its own connection, which WAL mode keeps stable while writers go on.
public enum SQLiteStorageEngine {
    /// Opens (creating if needed) the database at `settings.path`.
    public static func open(_ settings: SQLiteSettings) throws(StorageError)
        -> DatabaseStorageEngine<SQLiteConnection>
    {
        guard isPlainDatabaseName(settings.table) else {
            throw StorageError(
                .invalidArgument, "sqlite: table name '\(settings.table)' must be letters, digits and _")
        }
        let directory = settings.path.split(separator: "/", omittingEmptySubsequences: false).dropLast()
            .joined(separator: "/")
        if !directory.isEmpty { mkdir(directory, 0o755) }
        // The first connection creates the table, so a bad path fails here, at open.
        return try DatabaseStorageEngine.open(
            databaseName: "sqlite \(settings.path)", poolSize: settings.poolSize, pageSize: settings.pageSize,
            backup: { connection, directory throws(StorageError) in try connection.copy(to: directory) },
            connect: { () throws(StorageError) in try SQLiteConnection(settings: settings) },
            prepare: { _ in })
    }
}

/// One SQLite connection with its prepared statements.
public final class SQLiteConnection: DatabaseConnection {
    private var handle: OpaquePointer?
    private let settings: SQLiteSettings
    private var statements: [String: OpaquePointer] = [:]
    private var isSynchronousFull = true

    init(settings: SQLiteSettings) throws(StorageError) {
        self.settings = settings
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(settings.path, &handle, flags, nil)
        self.handle = handle
        guard status == SQLITE_OK else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            close()
            throw StorageError(.openFailed, "sqlite: cannot open \(settings.path): \(message)")
        }
        sqlite3_busy_timeout(handle, 30_000)
        do {
            try execute("PRAGMA journal_mode=WAL")
            try execute("PRAGMA synchronous=FULL")
            try execute(
                "CREATE TABLE IF NOT EXISTS \(settings.table) (ks INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL, PRIMARY KEY (ks, k)) WITHOUT ROWID"
            )
        } catch {
            close()
            throw StorageError(.openFailed, error.message)
        }
    }

    private func failure(_ what: String, kind: StorageError.Kind = .io) -> StorageError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "closed"
        return StorageError(kind, "sqlite \(settings.path): \(what): \(message)")
    }

    private func execute(_ sql: String) throws(StorageError) {
        guard sqlite3_exec(handle, sql, nil, nil, nil) == SQLITE_OK else {
            throw failure("'\(sql.prefix(60))' failed")
        }
    }

    /// The prepared statement for `sql`, made once per connection.
    private func statement(_ sql: String) throws(StorageError) -> OpaquePointer {
        if let statement = statements[sql] {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
            return statement
        }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw failure("cannot prepare '\(sql.prefix(60))'")
        }
        statements[sql] = statement
        return statement
    }

    private func bind(_ statement: OpaquePointer, _ index: Int32, _ bytes: [UInt8]) {
        // SQLITE_TRANSIENT: SQLite copies the bytes, since the array may move.
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        bytes.withUnsafeBytes { buffer in
            _ = sqlite3_bind_blob64(
                statement, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1), UInt64(buffer.count),
                transient)
        }
    }

    private func column(_ statement: OpaquePointer, _ index: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(statement, index))
        guard count > 0, let pointer = sqlite3_column_blob(statement, index) else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// The prepared statement `head` + "the keys of `range` in `keyspace`" + `tail`, with
    /// the keyspace bound to ?1 and the range's bounds to ?2 and ?3 (?4 is free).
    private func rangeStatement(
        _ head: String, _ range: EncodedKeyRange, _ keyspace: Keyspace, then tail: String = ""
    )
        throws(StorageError) -> OpaquePointer
    {
        let upper = range.upperBound == nil ? "" : " AND k < ?3"
        let statement = try statement("\(head) ks = ?1 AND k >= ?2\(upper) \(tail)")
        sqlite3_bind_int(statement, 1, Int32(keyspace.storedNumber))
        bind(statement, 2, range.lowerBound)
        if let upperBound = range.upperBound { bind(statement, 3, upperBound) }
        return statement
    }

    /// Steps a statement that returns no rows.
    private func run(_ statement: OpaquePointer, _ what: String) throws(StorageError) {
        let status = sqlite3_step(statement)
        sqlite3_reset(statement)
        guard status == SQLITE_DONE else { throw failure(what) }
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        let statement = try statement("SELECT v FROM \(settings.table) WHERE ks = ?1 AND k = ?2")
        sqlite3_bind_int(statement, 1, Int32(keyspace.storedNumber))
        bind(statement, 2, key)
        defer { sqlite3_reset(statement) }
        switch sqlite3_step(statement) {
        case SQLITE_ROW: return column(statement, 0)
        case SQLITE_DONE: return nil
        default: throw failure("get")
        }
    }

    public func page(of range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection, limit: Int)
        throws(StorageError) -> RangePage
    {
        let order = direction == .forward ? "ASC" : "DESC"
        let statement = try rangeStatement(
            "SELECT k, v FROM \(settings.table) WHERE", range, keyspace, then: "ORDER BY k \(order) LIMIT ?4")
        sqlite3_bind_int64(statement, 4, Int64(limit))
        defer { sqlite3_reset(statement) }
        var entries: [StorageEntry] = []
        while true {
            switch sqlite3_step(statement) {
            case SQLITE_ROW:
                entries.append(StorageEntry(key: column(statement, 0), value: column(statement, 1)))
            case SQLITE_DONE: return RangePage(entries: entries, isLast: entries.count < limit)
            default: throw failure("range read")
            }
        }
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        let wantsFull = durability == .synced
        if wantsFull != isSynchronousFull {
            try execute(wantsFull ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
            isSynchronousFull = wantsFull
        }
        // IMMEDIATE takes the write lock at once, so two writers queue on the busy
        // timeout instead of failing when one upgrades from reading.
        try execute("BEGIN IMMEDIATE")
        do {
            for operation in batch.operations {
                switch operation {
                case .put(let keyspace, let key, let value):
                    let statement = try statement(
                        "INSERT INTO \(settings.table) (ks, k, v) VALUES (?1, ?2, ?3) ON CONFLICT (ks, k) DO UPDATE SET v = excluded.v"
                    )
                    sqlite3_bind_int(statement, 1, Int32(keyspace.storedNumber))
                    bind(statement, 2, key)
                    bind(statement, 3, value)
                    try run(statement, "put")
                case .delete(let keyspace, let key):
                    let statement = try statement("DELETE FROM \(settings.table) WHERE ks = ?1 AND k = ?2")
                    sqlite3_bind_int(statement, 1, Int32(keyspace.storedNumber))
                    bind(statement, 2, key)
                    try run(statement, "delete")
                case .deleteRange(let keyspace, let range):
                    let statement = try rangeStatement("DELETE FROM \(settings.table) WHERE", range, keyspace)
                    try run(statement, "range delete")
                }
            }
            try execute("COMMIT")
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    public func beginSnapshot(_ scope: SnapshotScope) throws(StorageError) {
        // A deferred transaction takes its read snapshot at the first read, so read now.
        try execute("BEGIN")
        _ = try get([], in: .metadata)
    }

    public func endSnapshot() throws(StorageError) {
        try execute("COMMIT")
    }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        let statement = try rangeStatement(
            "SELECT count(*), coalesce(sum(length(k) + length(v)), 0) FROM \(settings.table) WHERE", range,
            keyspace)
        defer { sqlite3_reset(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else { throw failure("size estimate") }
        return StorageSizeEstimate(
            bytes: UInt64(sqlite3_column_int64(statement, 1)),
            keyCount: UInt64(sqlite3_column_int64(statement, 0)))
    }

    /// Writes a consistent copy of the database file into the new directory `directory`,
    /// under the same file name, so the copy opens with the same settings.
    func copy(to directory: String) throws(StorageError) {
        guard mkdir(directory, 0o755) == 0 else {
            throw StorageError(
                .io,
                "sqlite: cannot create the backup directory \(directory): \(String(cString: strerror(errno)))"
            )
        }
        let name = settings.path.split(separator: "/").last.map(String.init) ?? "kv.sqlite"
        let target = directory + "/" + name
        try execute(
            "VACUUM INTO '\(target.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''"))'"
        )
    }

    public func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements = [:]
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }
}
