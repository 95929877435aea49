import CMariaDB
import KVCore
import KVStorage
import KVStorageDatabase

/// The MariaDB/MySQL engine, through Debian's MariaDB Connector/C.
///
/// InnoDB keys are limited to 3,072 bytes, and the store's keys may be longer, so a key
/// is stored split: its first ``MariaDBConnection/headBytes`` bytes in `head`, the rest in
/// `tail`, and the primary key is (keyspace, head, SHA-256 of tail). Ordering by
/// (head, tail) is the byte order of the whole key (a tail exists only behind a full
/// head), so reads walk the index by `head` and sort the rare rows sharing a full head
/// by their tail (see `MariaDBRanges.swift`).
///
/// A synced batch is one transaction whose `COMMIT` returns after InnoDB flushed its
/// log; the engine refuses a server whose `innodb_flush_log_at_trx_commit` is not 1.
/// That setting is global, so a buffered batch is as durable as a synced one. Writes run
/// at `READ COMMITTED` (no gap locks between concurrent batches) and are retried when
/// InnoDB picks them as a deadlock victim; a snapshot is a `REPEATABLE READ` consistent
/// snapshot on its own connection.
public enum MariaDBStorageEngine {
    /// Connects, checks the server's durability setting and creates the table.
    public static func open(_ settings: DatabaseServerSettings) throws(StorageError)
        -> DatabaseStorageEngine<MariaDBConnection>
    {
        try settings.check(engine: "mariadb", schemes: ["mariadb", "mysql"])
        return try DatabaseStorageEngine.open(
            databaseName: "mariadb \(settings.url)", poolSize: settings.poolSize, pageSize: settings.pageSize,
            connect: { () throws(StorageError) in try MariaDBConnection(settings: settings) },
            prepare: { first throws(StorageError) in
                try first.checkDurability()
                try first.createTable()
            })
    }
}

/// One client connection to MariaDB.
public final class MariaDBConnection: DatabaseConnection {
    /// The longest key prefix kept in the indexed `head` column; with the keyspace byte,
    /// the length prefix and the 32-byte digest the primary key stays under InnoDB's
    /// 3,072-byte limit.
    public static let headBytes = 3000

    private var handle: UnsafeMutablePointer<MYSQL>?
    let settings: DatabaseServerSettings
    private var maximumPacket = 16 << 20

    init(settings: DatabaseServerSettings) throws(StorageError) {
        self.settings = settings
        handle = mysql_init(nil)
        guard let handle else { throw StorageError(.openFailed, "mariadb: out of memory") }
        var timeout: UInt32 = 10
        mysql_options(handle, MYSQL_OPT_CONNECT_TIMEOUT, &timeout)
        // Keys and values are bytes: no character set conversion anywhere.
        mysql_options(handle, MYSQL_SET_CHARSET_NAME, "binary")
        let url = settings.url
        let connected = mysql_real_connect(
            handle, url.host.isEmpty ? "127.0.0.1" : url.host, url.user.isEmpty ? nil : url.user,
            url.password,
            url.database, UInt32(url.port ?? 3306), nil, UInt(CLIENT_MULTI_STATEMENTS))
        guard connected != nil else {
            let message = lastMessage
            close()
            throw StorageError(.openFailed, "mariadb \(settings.url): cannot connect: \(message)")
        }
        do {
            try execute(
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", what: "setting the isolation level")
            if let packet = try selectNumbers(
                "SELECT @@max_allowed_packet", what: "reading max_allowed_packet"
            ).first {
                maximumPacket = Int(packet)
            }
        } catch {
            close()
            throw StorageError(.openFailed, error.message)
        }
    }

    var lastMessage: String {
        guard let handle else { return "no connection" }
        return "\(String(cString: mysql_error(handle))) (error \(mysql_errno(handle)))"
    }

    var lastErrorNumber: UInt32 { handle.map { mysql_errno($0) } ?? 0 }

    func failure(_ what: String) -> StorageError {
        StorageError(.io, "mariadb \(settings.url): \(what) failed: \(lastMessage)")
    }

    /// Sends `sql` (one or several statements) and reads every result, returning the rows
    /// of the last result set that had any.
    @discardableResult
    func execute(_ sql: [UInt8], what: String) throws(StorageError) -> [[[UInt8]?]] {
        if sql.count > maximumPacket {
            throw StorageError(
                .invalidArgument,
                "mariadb \(settings.url): a statement of \(sql.count) bytes exceeds the server's max_allowed_packet (\(maximumPacket)); raise it"
            )
        }
        let status = sql.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                mysql_real_query(handle, $0.baseAddress, UInt(buffer.count))
            }
        }
        guard status == 0 else { throw failure(what) }
        var rows: [[[UInt8]?]] = []
        while true {
            if let result = mysql_store_result(handle) {
                let columns = Int(mysql_num_fields(result))
                var fetched: [[[UInt8]?]] = []
                while let row = mysql_fetch_row(result) {
                    let lengths = mysql_fetch_lengths(result)!
                    var values: [[UInt8]?] = []
                    for column in 0..<columns {
                        if let field = row[column] {
                            values.append(
                                Array(UnsafeRawBufferPointer(start: field, count: Int(lengths[column]))))
                        } else {
                            values.append(nil)
                        }
                    }
                    fetched.append(values)
                }
                mysql_free_result(result)
                rows = fetched
            } else if mysql_field_count(handle) != 0 {
                throw failure(what)
            }
            let next = mysql_next_result(handle)
            if next == -1 { return rows }
            if next > 0 { throw failure(what) }
        }
    }

    @discardableResult
    func execute(_ sql: String, what: String) throws(StorageError) -> [[[UInt8]?]] {
        try execute(Array(sql.utf8), what: what)
    }

    private func selectNumbers(_ sql: String, what: String) throws(StorageError) -> [UInt64] {
        let rows = try execute(sql, what: what)
        return rows.first?.map { $0.flatMap { UInt64(String(decoding: $0, as: UTF8.self)) } ?? 0 } ?? []
    }

    func checkDurability() throws(StorageError) {
        let setting = try selectNumbers(
            "SELECT @@innodb_flush_log_at_trx_commit", what: "reading innodb_flush_log_at_trx_commit")
        guard setting.first == 1 else {
            throw StorageError(
                .openFailed,
                "mariadb \(settings.url): the server runs with innodb_flush_log_at_trx_commit=\(setting.first.map(String.init) ?? "?"); acknowledged writes would not be durable. Set it to 1."
            )
        }
    }

    func createTable() throws(StorageError) {
        try execute(
            """
            CREATE TABLE IF NOT EXISTS \(settings.table) (
              ks TINYINT UNSIGNED NOT NULL, head VARBINARY(\(Self.headBytes)) NOT NULL,
              tail_digest BINARY(32) NOT NULL, tail MEDIUMBLOB NOT NULL, v LONGBLOB NOT NULL,
              PRIMARY KEY (ks, head, tail_digest)) ENGINE=InnoDB ROW_FORMAT=DYNAMIC
            """, what: "creating table \(settings.table)")
    }

    /// Appends `bytes` as an SQL binary string literal.
    func appendLiteral(_ bytes: [UInt8], to sql: inout [UInt8]) {
        if bytes.count <= 256 {
            // Short strings (keys) as hex: no escaping subtleties at all.
            sql.append(contentsOf: Array("X'".utf8))
            let digits = Array("0123456789ABCDEF".utf8)
            for byte in bytes {
                sql.append(digits[Int(byte >> 4)])
                sql.append(digits[Int(byte & 0xF)])
            }
            sql.append(UInt8(ascii: "'"))
            return
        }
        sql.append(contentsOf: Array("_binary'".utf8))
        let start = sql.count
        sql.append(contentsOf: repeatElement(0, count: bytes.count * 2 + 1))
        let written = sql.withUnsafeMutableBufferPointer { target in
            bytes.withUnsafeBufferPointer { source in
                source.withMemoryRebound(to: CChar.self) { from in
                    UnsafeMutableRawPointer(target.baseAddress! + start).withMemoryRebound(
                        to: CChar.self, capacity: bytes.count * 2 + 1
                    ) { to in
                        mysql_real_escape_string(handle, to, from.baseAddress, UInt(bytes.count))
                    }
                }
            }
        }
        sql.removeLast(sql.count - start - Int(written))
        sql.append(UInt8(ascii: "'"))
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        // InnoDB may roll a transaction back as a deadlock victim (1213) or after a lock
        // wait timeout (1205); nothing of it was applied, so it is run again.
        var attempt = 0
        while true {
            do {
                return try writeOnce(batch)
            } catch {
                // Read the failure's number before the rollback replaces it.
                let number = lastErrorNumber
                _ = try? execute("ROLLBACK", what: "rolling back")
                attempt += 1
                guard [1213, 1205].contains(number), attempt < 8 else { throw error }
            }
        }
    }

    public func beginSnapshot(_ scope: SnapshotScope) throws(StorageError) {
        try execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            what: "starting a snapshot")
    }

    public func endSnapshot() throws(StorageError) {
        try execute("COMMIT", what: "ending a snapshot")
    }

    public func close() {
        if let handle { mysql_close(handle) }
        handle = nil
    }
}
