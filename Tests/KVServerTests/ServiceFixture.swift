import KVClient
import KVCore
import KVNode
import KVServer
import KVStorageMemory
import Logging
import NIOPosix

/// Every way to reach a ``KeyValueService``. The conformance suite runs against each,
/// so the HTTP API (through a real socket and the Swift client) must behave exactly like
/// the in-process node.
enum ServiceKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// A ``LocalNode`` called directly.
    case inProcess
    /// The same node behind the HTTP server on 127.0.0.1, through ``HTTPKeyValueService``.
    case http
    /// A cluster of three ``ClusterNode``s in this process, talking over real sockets on
    /// 127.0.0.1 (N=3, R=W=2), called through its first node.
    case cluster

    var description: String { rawValue }
}

/// A fresh service of one kind on an in-memory engine.
final class ServiceFixture: Sendable {
    let node: LocalNode
    let server: HTTPServer?
    let client: HTTPKeyValueService?
    let cluster: [ClusterNode]

    var service: any KeyValueService {
        if let client { return client }
        if let first = cluster.first { return first }
        return node
    }

    init(_ kind: ServiceKind, settings: NodeSettings = NodeSettings(partitionCount: 16)) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        node = try LocalNode(
            engine: MemoryStorageEngine(), engineName: "memory", settings: settings, logger: logger)
        switch kind {
        case .inProcess:
            server = nil
            client = nil
            cluster = []
        case .cluster:
            server = nil
            client = nil
            cluster = try await Self.startCluster(first: node, settings: settings, logger: logger)
        case .http:
            let server = try HTTPServer(
                settings: HTTPServerSettings(port: 0), service: node,
                group: MultiThreadedEventLoopGroup.singleton,
                logger: logger)
            let address = try await server.start()
            self.server = server
            client = try await HTTPKeyValueService(host: "127.0.0.1", port: address.port!)
            cluster = []
        }
    }

    /// Three cluster nodes (the first over `first`) that introduce themselves to each
    /// other, returned once every one serves.
    static func startCluster(first: LocalNode, settings: NodeSettings, logger: Logger) async throws
        -> [ClusterNode]
    {
        var nodes: [ClusterNode] = []
        for index in 0..<3 {
            let local =
                index == 0
                ? first
                : try LocalNode(
                    engine: MemoryStorageEngine(), engineName: "memory", settings: settings, logger: logger)
            let node = try ClusterNode(
                local: local,
                // A generous replica timeout: a busy test machine must make the suite
                // slower, not make writes indeterminate.
                settings: ClusterSettings(
                    httpAddress: "in-process-\(index)", expectedMembers: 3, requestTimeoutMilliseconds: 30_000
                ),
                group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            _ = try await node.start()
            nodes.append(node)
        }
        for _ in 0..<500 {
            if nodes.allSatisfy({ $0.isFormed && $0.metadata.members.count == 3 }) { return nodes }
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
        if cluster.isEmpty {
            await node.shutdown()
        } else {
            for member in cluster { await member.shutdown() }
        }
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
