import Foundation
import KVClient
import KVCore
import KVNode
import KVServer
import KVStorage
import KVStorageDatabase
import KVStorageMariaDB
import KVStorageMemory
import KVStoragePostgres
import KVStorageRedis
import KVStorageSQLite
import KVTestSupport
import KVWire
import Logging
import NIOPosix

/// Every way to reach a ``KeyValueService``. The conformance suite runs against each,
/// so the HTTP API (through a real socket and the Swift client) must behave exactly like
/// the in-process node, and one node like a cluster.
enum ServiceKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// A cluster of one ``ClusterNode`` (what `kv server` runs on its own), called directly.
    case inProcess
    /// The same one-node cluster behind the HTTP server on 127.0.0.1, through
    /// ``HTTPKeyValueService``.
    case http
    /// A cluster of three ``ClusterNode``s in this process, talking over real sockets on
    /// 127.0.0.1 (N=3, R=W=2), called through its first node.
    case cluster
    /// The three-node cluster with every node on SQLite, PostgreSQL, MariaDB or Redis
    /// (each node its own table on the test run's server).
    case clusterOnSQLite, clusterOnPostgres, clusterOnMariaDB, clusterOnRedis

    /// The kinds every service test runs against.
    static let allCases: [ServiceKind] = [.inProcess, .http, .cluster]
    /// The clusters on database engines, for kvlayer's semantic cases.
    static let onDatabases: [ServiceKind] = [
        .clusterOnSQLite, .clusterOnPostgres, .clusterOnMariaDB, .clusterOnRedis,
    ]

    var description: String { rawValue }

    /// A fresh engine for one node of this kind, or `nil` for the memory engine.
    func makeEngine() throws -> (any StorageEngine)? {
        let table = "svc" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        switch self {
        case .inProcess, .http, .cluster: return nil
        case .clusterOnSQLite:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("kv-\(table)/kv.sqlite")
                .path
            return try SQLiteStorageEngine.open(SQLiteSettings(path: path))
        case .clusterOnPostgres:
            return try PostgresStorageEngine.open(
                DatabaseServerSettings(url: try DatabaseURL(DatabaseServers.url(.postgres)), table: table))
        case .clusterOnMariaDB:
            return try MariaDBStorageEngine.open(
                DatabaseServerSettings(url: try DatabaseURL(DatabaseServers.url(.mariadb)), table: table))
        case .clusterOnRedis:
            return try RedisStorageEngine.open(
                DatabaseServerSettings(url: try DatabaseURL(DatabaseServers.url(.redis)), table: table))
        }
    }
}

/// A fresh service of one kind on in-memory engines.
final class ServiceFixture: Sendable {
    let server: HTTPServer?
    let client: HTTPKeyValueService?
    let cluster: [ClusterNode]

    var service: any KeyValueService { client ?? cluster[0] }

    init(_ kind: ServiceKind, settings: NodeSettings = NodeSettings(partitionCount: 16)) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        cluster = try await Self.startCluster(
            of: [.inProcess, .http].contains(kind) ? 1 : 3, settings: settings, logger: logger,
            engines: { try kind.makeEngine() })
        switch kind {
        case .inProcess, .cluster, .clusterOnSQLite, .clusterOnPostgres, .clusterOnMariaDB, .clusterOnRedis:
            server = nil
            client = nil
        case .http:
            let server = try HTTPServer(
                settings: HTTPServerSettings(port: 0), service: cluster[0],
                group: MultiThreadedEventLoopGroup.singleton,
                logger: logger)
            let address = try await server.start()
            self.server = server
            client = try await HTTPKeyValueService(host: "127.0.0.1", port: address.port!)
        }
    }

    /// A cluster of `count` nodes over in-memory engines (or, for one node, `engine`) that
    /// introduce themselves to each other, returned once every one serves.
    static func startCluster(
        of count: Int, engine: (any StorageEngine)? = nil, settings: NodeSettings, logger: Logger,
        engines: () throws -> (any StorageEngine)? = { nil }
    ) async throws -> [ClusterNode] {
        var nodes: [ClusterNode] = []
        for index in 0..<count {
            let storage = try NodeStorage(
                engine: (count == 1 ? engine : nil) ?? engines() ?? MemoryStorageEngine(),
                engineName: "memory",
                settings: settings, logger: logger)
            let node = try ClusterNode(
                local: storage,
                // A generous replica timeout: a busy test machine must make the suite
                // slower, not make writes indeterminate.
                settings: ClusterSettings(
                    secret: try ClusterSecret(ServerProcess.testClusterSecret),
                    httpAddress: "in-process-\(index)", expectedMembers: count,
                    requestTimeoutMilliseconds: 30_000),
                group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            _ = try await node.start()
            nodes.append(node)
        }
        // Generous: the parallel suite starts dozens of nodes at once on a small machine.
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if nodes.allSatisfy({ $0.isFormed && $0.metadata.members.count == count }) { return nodes }
            for node in nodes {
                for other in nodes where other !== node { node.introduce(toPeerAt: other.peerAddress) }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        for node in nodes { await node.shutdown() }
        throw KVError(.unavailable, "the in-process cluster did not form")
    }

    func shutdown() async {
        await client?.close()
        await server?.shutdown()
        for member in cluster { await member.shutdown() }
    }
}

/// Runs `body` with a fresh service of `kind`, shutting it down afterwards.
func withService(
    _ kind: ServiceKind, settings: NodeSettings = NodeSettings(partitionCount: 16),
    _ body: (any KeyValueService) async throws -> Void
) async throws {
    let fixture = try await ServiceFixture(kind, settings: settings)
    do {
        try await body(fixture.service)
    } catch {
        await fixture.shutdown()
        throw error
    }
    await fixture.shutdown()
}

func table(_ namespace: String, _ name: String) -> TableName {
    try! TableName(namespace: namespace, table: name)
}

func text(_ value: String, type: String = "text/plain") -> RowValue {
    RowValue(bytes: Array(value.utf8), contentType: type)
}

/// The error code a failing call threw, or `nil` if it succeeded.
func errorCode(_ body: () async throws -> Void) async -> KVError.Code? {
    do {
        try await body()
        return nil
    } catch let error as KVError {
        return error.code
    } catch {
        return KVError.Code(rawValue: "unexpected: \(error)")
    }
}
