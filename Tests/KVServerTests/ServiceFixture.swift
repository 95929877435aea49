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

    var description: String { rawValue }
}

/// A fresh service of one kind on an in-memory engine.
final class ServiceFixture: Sendable {
    let node: LocalNode
    let server: HTTPServer?
    let client: HTTPKeyValueService?

    var service: any KeyValueService { client ?? node }

    init(_ kind: ServiceKind, settings: NodeSettings = NodeSettings(partitionCount: 16)) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        node = try LocalNode(
            engine: MemoryStorageEngine(), engineName: "memory", settings: settings, logger: logger)
        switch kind {
        case .inProcess:
            server = nil
            client = nil
        case .http:
            let server = try HTTPServer(
                settings: HTTPServerSettings(port: 0), service: node,
                group: MultiThreadedEventLoopGroup.singleton,
                logger: logger)
            let address = try await server.start()
            self.server = server
            client = try await HTTPKeyValueService(host: "127.0.0.1", port: address.port!)
        }
    }

    func shutdown() async {
        await client?.close()
        await server?.shutdown()
        await node.shutdown()
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
