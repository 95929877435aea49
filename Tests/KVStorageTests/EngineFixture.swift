import Foundation
import KVCore
import KVStorage
import KVStorageDatabase
import KVStorageMariaDB
import KVStorageMemory
import KVStoragePostgres
import KVStorageRedis
import KVStorageRocksDB
import KVStorageSQLite
import KVTestSupport

/// Every engine the conformance suite runs against. A new engine adds a case here and
/// thereby gets every conformance and model test.
enum EngineKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case memory
    case rocksdb
    case sqlite
    case postgres
    case mariadb
    case redis

    var description: String { rawValue }
}

/// Where one engine's data lives across close-and-reopen: a memory volume, or a
/// temporary directory for on-disk engines. The directory is removed on deinit.
final class EngineFixture {
    let kind: EngineKind
    let volume = MemoryVolume()
    let directory: String
    /// The fixture's own table (or key prefix) on a shared database server.
    let table = "t" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()

    init(_ kind: EngineKind) {
        self.kind = kind
        directory =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("kv-storage-test-\(UUID().uuidString)").path
    }

    /// Opens (or reopens) the engine on the fixture's storage.
    func open() throws -> any StorageEngine {
        switch kind {
        case .memory: MemoryStorageEngine(volume: volume)
        case .rocksdb: try RocksDBStorageEngine(path: directory)
        case .sqlite:
            try SQLiteStorageEngine.open(
                SQLiteSettings(path: directory + "/kv.sqlite", pageSize: Self.smallPageSize))
        case .postgres:
            try PostgresStorageEngine.open(
                DatabaseServerSettings(
                    url: try DatabaseURL(DatabaseServers.url(.postgres)), table: table,
                    pageSize: Self.smallPageSize))
        case .redis:
            try RedisStorageEngine.open(
                DatabaseServerSettings(
                    url: try DatabaseURL(DatabaseServers.url(.redis)), table: table,
                    pageSize: Self.smallPageSize))
        case .mariadb:
            try MariaDBStorageEngine.open(
                DatabaseServerSettings(
                    url: try DatabaseURL(DatabaseServers.url(.mariadb)), table: table,
                    pageSize: Self.smallPageSize))
        }
    }

    /// Database engines read cursors in pages; three entries a page makes every range
    /// test cross page boundaries.
    static let smallPageSize = 3

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

extension Array where Element == UInt8 {
    /// Bytes of a string, for readable test keys.
    init(text: String) { self = Array(text.utf8) }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
