import ArgumentParser
import KVStorage
import KVStorageDatabase
import KVStorageMariaDB
import KVStorageMemory
import KVStoragePostgres
import KVStorageRedis
import KVStorageRocksDB
import KVStorageSQLite

/// `kv server`'s choice of where a node keeps its data: an embedded engine in the data
/// directory (RocksDB, SQLite), a database server named by URL (PostgreSQL, MariaDB,
/// Redis), or memory.
struct StorageOptions: ParsableArguments {
    @Option(
        name: .customLong("storage-url"),
        help: ArgumentHelp(
            "The database of --engine postgres|mariadb|redis (postgres://user:pass@host:5432/db, mariadb://user:pass@host:3306/db, redis://host:6379/0), or the file of --engine sqlite (sqlite:///path/kv.sqlite). ?table=NAME keeps this node's rows apart on a shared server (default kv); ?pool=N caps its connections (default 16).",
            valueName: "url"))
    var storageURL: String?

    /// The YAML key.
    struct File: Decodable {
        var storageURL: String?

        enum CodingKeys: String, CodingKey {
            case storageURL = "storage_url"
        }
    }

    /// The engines `--engine` accepts.
    static let engineNames = ["rocksdb", "sqlite", "postgres", "mariadb", "redis", "memory"]

    /// Opens the engine `name`, with its data in `dataDirectory` when it is embedded.
    /// Returns it with a line for the start-up banner saying where the data is.
    func open(
        engine name: String, dataDirectory: String, rocksDB: RocksDBSettings, file: File,
        environment: [String: String]
    ) throws -> (engine: any StorageEngine, location: String) {
        let urlText = try SettingSources(environment: environment).resolve(
            storageURL, "KV_STORAGE_URL", file.storageURL, "")
        func url(_ example: String) throws -> DatabaseURL {
            guard !urlText.isEmpty else {
                throw ValidationError(
                    "--engine \(name) needs --storage-url (or KV_STORAGE_URL), like \(example)")
            }
            do {
                return try DatabaseURL(urlText)
            } catch {
                throw ValidationError("--storage-url: \(error.message)")
            }
        }
        do {
            switch name {
            case "rocksdb":
                return (
                    try RocksDBStorageEngine(path: dataDirectory + "/rocksdb", settings: rocksDB),
                    "data: \(dataDirectory)"
                )
            case "sqlite":
                var settings = SQLiteSettings(path: dataDirectory + "/sqlite/kv.sqlite")
                if !urlText.isEmpty {
                    let parsed = try url("sqlite:///var/lib/kv/kv.sqlite")
                    guard parsed.scheme == "sqlite", !parsed.database.isEmpty else {
                        throw ValidationError(
                            "--storage-url for sqlite must look like sqlite:///path/kv.sqlite")
                    }
                    settings = SQLiteSettings(
                        path: "/" + parsed.database, table: parsed.parameter("table") ?? "kv",
                        poolSize: parsed.parameter("pool").flatMap { Int($0) } ?? 16)
                }
                return (
                    try SQLiteStorageEngine.open(settings), "data: \(settings.path) (table \(settings.table))"
                )
            case "postgres":
                let settings = DatabaseServerSettings(url: try url("postgres://kv@127.0.0.1:5432/kv"))
                return (
                    try PostgresStorageEngine.open(settings),
                    "data: \(settings.url) (table \(settings.table))"
                )
            case "mariadb":
                let settings = DatabaseServerSettings(url: try url("mariadb://kv@127.0.0.1:3306/kv"))
                return (
                    try MariaDBStorageEngine.open(settings), "data: \(settings.url) (table \(settings.table))"
                )
            case "redis":
                let settings = DatabaseServerSettings(url: try url("redis://127.0.0.1:6379/0"))
                return (
                    try RedisStorageEngine.open(settings),
                    "data: \(settings.url) (key prefix \(settings.table))"
                )
            case "memory":
                return (MemoryStorageEngine(), "nothing is kept")
            default:
                throw ValidationError(
                    "unknown engine '\(name)'; use \(Self.engineNames.joined(separator: ", "))")
            }
        } catch let error as StorageError {
            throw ValidationError("cannot open the \(name) engine: \(error.message)")
        }
    }
}
