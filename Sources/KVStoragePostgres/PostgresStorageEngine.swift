import CPostgres
import KVCore
import KVStorage
import KVStorageDatabase

extension DatabaseServerSettings {
    /// The connection string libpq receives: the URL without the store's parameters.
    var connectionString: String {
        var text = "postgresql://"
        func escape(_ part: String) -> String {
            var escaped = ""
            for byte in part.utf8 {
                let plain =
                    (byte >= 0x30 && byte <= 0x39) || ((byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A)
                    || byte == 0x2D || byte == 0x2E || byte == 0x5F || byte == 0x7E
                escaped +=
                    plain
                    ? String(UnicodeScalar(byte)) : "%" + String(byte, radix: 16, uppercase: true).paddedHex
            }
            return escaped
        }
        if !url.user.isEmpty {
            text += escape(url.user)
            if let password = url.password { text += ":" + escape(password) }
            text += "@"
        }
        text += url.host.contains(":") ? "[\(url.host)]" : url.host
        if let port = url.port { text += ":\(port)" }
        text += "/" + escape(url.database)
        let passed = url.parameters.filter { $0.name != "table" && $0.name != "pool" }
        if !passed.isEmpty {
            text += "?" + passed.map { escape($0.name) + "=" + escape($0.value) }.joined(separator: "&")
        }
        return text
    }
}

extension String {
    fileprivate var paddedHex: String { count == 1 ? "0" + self : self }
}

/// The PostgreSQL engine, through libpq.
///
/// Every keyspace lives in one table keyed by (keyspace, key) with `bytea` columns;
/// PostgreSQL orders `bytea` by `memcmp`, the byte order the store needs. A synced batch
/// is one transaction whose `COMMIT` returns after the WAL is flushed (the engine refuses
/// a server with `fsync` or `synchronous_commit` off); a buffered one sets
/// `synchronous_commit` off for its transaction only. Concurrent commits share WAL
/// flushes in the server, which is the group commit. A snapshot is a `REPEATABLE READ`
/// read-only transaction held on its own connection.
public enum PostgresStorageEngine {
    /// Connects, checks the server's durability settings and creates the table.
    public static func open(_ settings: DatabaseServerSettings) throws(StorageError)
        -> DatabaseStorageEngine<PostgresConnection>
    {
        try settings.check(engine: "postgres", schemes: ["postgres", "postgresql"])
        return try DatabaseStorageEngine.open(
            databaseName: "postgres \(settings.url)", poolSize: settings.poolSize,
            pageSize: settings.pageSize,
            connect: { () throws(StorageError) in try PostgresConnection(settings: settings) },
            prepare: { first throws(StorageError) in
                try first.checkDurability()
                try first.createTable()
            })
    }
}

/// One libpq connection with the engine's statements prepared.
public final class PostgresConnection: DatabaseConnection {
    private var connection: OpaquePointer?
    private let settings: DatabaseServerSettings
    private var prepared: Set<String> = []

    init(settings: DatabaseServerSettings) throws(StorageError) {
        self.settings = settings
        connection = PQconnectdb(settings.connectionString)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = lastMessage
            close()
            throw StorageError(.openFailed, "postgres \(settings.url): cannot connect: \(message)")
        }
    }

    private var lastMessage: String {
        guard let connection else { return "no connection" }
        let message = String(cString: PQerrorMessage(connection))
        return message.split(separator: "\n").first.map(String.init) ?? message
    }

    private func failure(_ what: String, _ result: OpaquePointer? = nil) -> StorageError {
        var message = lastMessage
        if let result, let text = PQresultErrorMessage(result), text.pointee != 0 {
            message = String(cString: text).split(separator: "\n").first.map(String.init) ?? message
        }
        return StorageError(.io, "postgres \(settings.url): \(what) failed: \(message)")
    }

    /// Runs plain SQL (no parameters), returning the first column of the first row.
    @discardableResult
    private func execute(_ sql: String, what: String) throws(StorageError) -> String? {
        let result = PQexec(connection, sql)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw failure(what, result) }
        guard status == PGRES_TUPLES_OK, PQntuples(result) > 0 else { return nil }
        return String(cString: PQgetvalue(result, 0, 0))
    }

    func checkDurability() throws(StorageError) {
        let fsync = try execute("SHOW fsync", what: "reading fsync")
        let synchronousCommit = try execute("SHOW synchronous_commit", what: "reading synchronous_commit")
        guard fsync == "on", synchronousCommit != "off" else {
            throw StorageError(
                .openFailed,
                "postgres \(settings.url): the server runs with fsync=\(fsync ?? "?") and synchronous_commit=\(synchronousCommit ?? "?"); acknowledged writes would not be durable. Set fsync = on and synchronous_commit = on."
            )
        }
    }

    func createTable() throws(StorageError) {
        // libpq prints notices to standard error; "already exists, skipping" at every
        // start is not worth a line in the node's output.
        try execute("SET client_min_messages TO warning", what: "quieting notices")
        try execute(
            "CREATE TABLE IF NOT EXISTS \(settings.table) (ks smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (ks, k))",
            what: "creating table \(settings.table)")
    }

    /// The statements, by name; each is prepared on first use per connection.
    private func statementText(_ name: String) -> String {
        let table = settings.table
        switch name {
        case "get": return "SELECT v FROM \(table) WHERE ks = $1 AND k = $2"
        case "put":
            return
                "INSERT INTO \(table) (ks, k, v) VALUES ($1, $2, $3) ON CONFLICT (ks, k) DO UPDATE SET v = EXCLUDED.v"
        case "delete": return "DELETE FROM \(table) WHERE ks = $1 AND k = $2"
        case "delete_range": return "DELETE FROM \(table) WHERE ks = $1 AND k >= $2 AND k < $3"
        case "delete_from": return "DELETE FROM \(table) WHERE ks = $1 AND k >= $2"
        case "page_forward":
            return "SELECT k, v FROM \(table) WHERE ks = $1 AND k >= $2 AND k < $3 ORDER BY k LIMIT $4"
        case "page_forward_from":
            return "SELECT k, v FROM \(table) WHERE ks = $1 AND k >= $2 ORDER BY k LIMIT $3"
        case "page_reverse":
            return "SELECT k, v FROM \(table) WHERE ks = $1 AND k >= $2 AND k < $3 ORDER BY k DESC LIMIT $4"
        case "page_reverse_from":
            return "SELECT k, v FROM \(table) WHERE ks = $1 AND k >= $2 ORDER BY k DESC LIMIT $3"
        case "estimate":
            return
                "SELECT count(*), coalesce(sum(length(k) + length(v)), 0) FROM \(table) WHERE ks = $1 AND k >= $2 AND k < $3"
        case "estimate_from":
            return
                "SELECT count(*), coalesce(sum(length(k) + length(v)), 0) FROM \(table) WHERE ks = $1 AND k >= $2"
        default: preconditionFailure("unknown statement \(name)")
        }
    }

    /// A parameter in PostgreSQL's binary format.
    private enum Parameter {
        case keyspace(Keyspace)
        case bytes([UInt8])
        case count(Int)

        var encoded: [UInt8] {
            switch self {
            case .keyspace(let keyspace): [0, UInt8(keyspace.storedNumber)]
            case .bytes(let bytes): bytes
            case .count(let count): withUnsafeBytes(of: Int64(count).bigEndian) { Array($0) }
            }
        }
    }

    /// Executes prepared statement `name` with binary parameters and binary results.
    private func run(_ name: String, _ parameters: [Parameter]) throws(StorageError) -> OpaquePointer? {
        if !prepared.contains(name) {
            let result = PQprepare(connection, name, statementText(name), 0, nil)
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_COMMAND_OK else {
                throw failure("preparing \(name)", result)
            }
            prepared.insert(name)
        }
        let encoded = parameters.map(\.encoded)
        let formats = [Int32](repeating: 1, count: encoded.count)
        let result = withCArguments(encoded) { values, lengths in
            PQexecPrepared(
                connection, name, Int32(encoded.count), values, lengths.map { Int32($0) }, formats, 1)
        }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let error = failure(name.replacingUnderscores, result)
            PQclear(result)
            throw error
        }
        return result
    }

    private func bytes(_ result: OpaquePointer?, _ row: Int32, _ column: Int32) -> [UInt8] {
        let count = Int(PQgetlength(result, row, column))
        guard count > 0, let pointer = PQgetvalue(result, row, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    private func integer(_ result: OpaquePointer?, _ row: Int32, _ column: Int32) -> UInt64 {
        let raw = bytes(result, row, column)
        return raw.reduce(0) { $0 << 8 | UInt64($1) }
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        let result = try run("get", [.keyspace(keyspace), .bytes(key)])
        defer { PQclear(result) }
        return PQntuples(result) > 0 ? bytes(result, 0, 0) : nil
    }

    public func page(of range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection, limit: Int)
        throws(StorageError) -> RangePage
    {
        let base = direction == .forward ? "page_forward" : "page_reverse"
        let result: OpaquePointer?
        if let upperBound = range.upperBound {
            result = try run(
                base, [.keyspace(keyspace), .bytes(range.lowerBound), .bytes(upperBound), .count(limit)])
        } else {
            result = try run(base + "_from", [.keyspace(keyspace), .bytes(range.lowerBound), .count(limit)])
        }
        defer { PQclear(result) }
        let rows = PQntuples(result)
        var entries: [StorageEntry] = []
        entries.reserveCapacity(Int(rows))
        for row in 0..<rows {
            entries.append(StorageEntry(key: bytes(result, row, 0), value: bytes(result, row, 1)))
        }
        return RangePage(entries: entries, isLast: entries.count < limit)
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        try execute("BEGIN", what: "starting a transaction")
        do {
            if durability == .buffered {
                try execute("SET LOCAL synchronous_commit TO off", what: "relaxing the commit")
            }
            for operation in batch.operations {
                let result: OpaquePointer?
                switch operation {
                case .put(let keyspace, let key, let value):
                    result = try run("put", [.keyspace(keyspace), .bytes(key), .bytes(value)])
                case .delete(let keyspace, let key):
                    result = try run("delete", [.keyspace(keyspace), .bytes(key)])
                case .deleteRange(let keyspace, let range):
                    if let upperBound = range.upperBound {
                        result = try run(
                            "delete_range",
                            [.keyspace(keyspace), .bytes(range.lowerBound), .bytes(upperBound)])
                    } else {
                        result = try run("delete_from", [.keyspace(keyspace), .bytes(range.lowerBound)])
                    }
                }
                PQclear(result)
            }
            try execute("COMMIT", what: "committing")
        } catch {
            _ = try? execute("ROLLBACK", what: "rolling back")
            throw error
        }
    }

    public func beginSnapshot(_ scope: SnapshotScope) throws(StorageError) {
        // The snapshot is taken by the first statement after BEGIN, so run one at once.
        try execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", what: "starting a snapshot")
        try execute("SELECT 1", what: "starting a snapshot")
    }

    public func endSnapshot() throws(StorageError) {
        try execute("COMMIT", what: "ending a snapshot")
    }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        let result: OpaquePointer?
        if let upperBound = range.upperBound {
            result = try run("estimate", [.keyspace(keyspace), .bytes(range.lowerBound), .bytes(upperBound)])
        } else {
            result = try run("estimate_from", [.keyspace(keyspace), .bytes(range.lowerBound)])
        }
        defer { PQclear(result) }
        // count(*) is bigint; the sum of lengths is bigint too (binary, 8 bytes each).
        return StorageSizeEstimate(bytes: integer(result, 0, 1), keyCount: integer(result, 0, 0))
    }

    public func close() {
        if let connection { PQfinish(connection) }
        connection = nil
    }
}

extension String {
    fileprivate var replacingUnderscores: String { String(map { $0 == "_" ? " " : $0 }) }
}
