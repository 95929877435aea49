import KVStorage

/// How an engine over a database server (PostgreSQL, MariaDB, Redis) reaches it and
/// where in it this node's rows live.
public struct DatabaseServerSettings: Sendable, Hashable {
    /// The server (`postgres://…`, `mariadb://…`, `redis://…`); the store's own URL
    /// parameters are `table` and `pool`.
    public var url: DatabaseURL
    /// The table holding this node's rows (in Redis, the prefix of its keys), so several
    /// nodes may share one server.
    public var table: String
    /// The most connections this node opens (writers, readers and open snapshots).
    public var poolSize: Int
    /// Entries a cursor reads per round trip.
    public var pageSize: Int

    /// Creates settings; `table` and `pool` given as URL parameters override the defaults.
    public init(url: DatabaseURL, table: String? = nil, poolSize: Int? = nil, pageSize: Int = 256) {
        self.url = url
        self.table = table ?? url.parameter("table") ?? "kv"
        self.poolSize = poolSize ?? url.parameter("pool").flatMap { Int($0) } ?? 16
        self.pageSize = pageSize
    }

    /// Refuses a URL of another database (`schemes` are the ones `engine` speaks) and a
    /// table name that would need quoting.
    public func check(engine: String, schemes: [String]) throws(StorageError) {
        guard schemes.contains(url.scheme) else {
            throw StorageError(
                .invalidArgument,
                "\(engine): '\(url)' is not a \(engine) URL; it must start with \(schemes.map { $0 + "://" }.joined(separator: " or "))"
            )
        }
        guard isPlainDatabaseName(table) else {
            throw StorageError(
                .invalidArgument, "\(engine): table name '\(table)' must be letters, digits and _")
        }
    }
}
