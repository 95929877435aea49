import ArgumentParser
import Foundation
import KVCore
import KVNode
import KVServer
import KVStorage
import KVStorageMemory
import KVStorageRocksDB
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Yams

/// The settings file of `kv server` (YAML); every field is optional.
struct ServerConfigFile: Decodable {
    var host: String?
    var port: Int?
    var dataDir: String?
    var engine: String?
    var partitions: Int?
    var logLevel: String?
    var maxKeyBytes: Int?
    var maxValueBytes: Int?
    var maxSiblings: Int?
    var maxRowBytes: Int?
    var maxResponseBytes: Int?
    var maxHeaderBytes: Int?
    var maxBodyBytes: Int?
    var maxConnections: Int?
    var requestTimeoutSeconds: Int?
    var idleTimeoutSeconds: Int?

    enum CodingKeys: String, CodingKey {
        case host, port, engine, partitions
        case dataDir = "data_dir"
        case logLevel = "log_level"
        case maxKeyBytes = "max_key_bytes"
        case maxValueBytes = "max_value_bytes"
        case maxSiblings = "max_siblings"
        case maxRowBytes = "max_row_bytes"
        case maxResponseBytes = "max_response_bytes"
        case maxHeaderBytes = "max_header_bytes"
        case maxBodyBytes = "max_body_bytes"
        case maxConnections = "max_connections"
        case requestTimeoutSeconds = "request_timeout_seconds"
        case idleTimeoutSeconds = "idle_timeout_seconds"
    }
}

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run a node: the HTTP API on top of a storage engine.",
        discussion: """
            Each setting comes from, in order of precedence: its flag, its environment \
            variable (KV_HOST, KV_PORT, KV_DATA_DIR, KV_ENGINE, KV_PARTITIONS, KV_LOG_LEVEL, \
            KV_MAX_KEY_BYTES, KV_MAX_VALUE_BYTES, KV_MAX_SIBLINGS, KV_MAX_ROW_BYTES, KV_MAX_RESPONSE_BYTES, KV_MAX_HEADER_BYTES, KV_MAX_BODY_BYTES, \
            KV_MAX_CONNECTIONS, KV_REQUEST_TIMEOUT_SECONDS, KV_IDLE_TIMEOUT_SECONDS), the \
            YAML file given with --config (keys host, port, data_dir, engine, partitions, \
            log_level, max_key_bytes, max_value_bytes, max_siblings, max_row_bytes, max_response_bytes, max_header_bytes, max_body_bytes, \
            max_connections, request_timeout_seconds, idle_timeout_seconds), and the default.

            SIGTERM or SIGINT stops the node gracefully: it stops accepting connections, \
            finishes in-flight requests, then flushes and closes the storage engine.
            """
    )

    @Option(help: "YAML settings file.") var config: String?
    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on; 0 picks a free one (default 7700).") var port: Int?
    @Option(name: .customLong("data"), help: "Data directory (default ./kv-data).") var dataDir: String?
    @Option(help: "Storage engine: rocksdb (default) or memory (nothing is kept).") var engine: String?
    @Option(help: "Partitions of a new data directory, a power of two (default 256).") var partitions: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
    var logLevel: String?
    @Option(help: "Largest encoded key in bytes (default 4096).") var maxKeyBytes: Int?
    @Option(help: "Largest value in bytes (default 16 MiB).") var maxValueBytes: Int?
    @Option(help: "Most siblings a row may hold (default 100).") var maxSiblings: Int?
    @Option(help: "Most bytes of live values in one row (default 64 MiB).") var maxRowBytes: Int?
    @Option(help: "Most value bytes in one answer: scan page or batch (default 32 MiB).")
    var maxResponseBytes: Int?
    @Option(help: "Largest request head in bytes (default 16 KiB).") var maxHeaderBytes: Int?
    @Option(help: "Largest request body in bytes (default 16 MiB + 64 KiB).") var maxBodyBytes: Int?
    @Option(help: "Most open connections (default 1024).") var maxConnections: Int?
    @Option(help: "Seconds to receive a whole request (default 10).") var requestTimeoutSeconds: Int?
    @Option(help: "Seconds an idle connection stays open (default 60).") var idleTimeoutSeconds: Int?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        var file = ServerConfigFile()
        if let config {
            do {
                file = try YAMLDecoder().decode(
                    ServerConfigFile.self, from: String(contentsOfFile: config, encoding: .utf8))
            } catch {
                throw ValidationError("cannot read the settings file \(config): \(error)")
            }
        }
        func resolve<Value: LosslessStringConvertible>(
            _ flag: Value?, _ variable: String, _ fromFile: Value?, _ fallback: Value
        )
            throws -> Value
        {
            if let flag { return flag }
            if let text = environment[variable] {
                guard let value = Value(text) else {
                    throw ValidationError("\(variable)='\(text)' is not valid")
                }
                return value
            }
            return fromFile ?? fallback
        }
        let defaults = (http: HTTPServerSettings(), node: NodeSettings())
        var http = HTTPServerSettings()
        http.host = try resolve(host, "KV_HOST", file.host, defaults.http.host)
        http.port = try resolve(port, "KV_PORT", file.port, defaults.http.port)
        http.maximumHeaderBytes = try resolve(
            maxHeaderBytes, "KV_MAX_HEADER_BYTES", file.maxHeaderBytes, defaults.http.maximumHeaderBytes)
        http.maximumBodyBytes = try resolve(
            maxBodyBytes, "KV_MAX_BODY_BYTES", file.maxBodyBytes, defaults.http.maximumBodyBytes)
        http.maximumConnections = try resolve(
            maxConnections, "KV_MAX_CONNECTIONS", file.maxConnections, defaults.http.maximumConnections)
        http.requestTimeoutSeconds = try resolve(
            requestTimeoutSeconds, "KV_REQUEST_TIMEOUT_SECONDS", file.requestTimeoutSeconds,
            defaults.http.requestTimeoutSeconds)
        http.idleTimeoutSeconds = try resolve(
            idleTimeoutSeconds, "KV_IDLE_TIMEOUT_SECONDS", file.idleTimeoutSeconds,
            defaults.http.idleTimeoutSeconds)
        var node = NodeSettings()
        node.partitionCount = try resolve(
            partitions, "KV_PARTITIONS", file.partitions, defaults.node.partitionCount)
        node.maximumKeyBytes = try resolve(
            maxKeyBytes, "KV_MAX_KEY_BYTES", file.maxKeyBytes, defaults.node.maximumKeyBytes)
        node.maximumValueBytes = try resolve(
            maxValueBytes, "KV_MAX_VALUE_BYTES", file.maxValueBytes, defaults.node.maximumValueBytes)
        node.maximumSiblings = try resolve(
            maxSiblings, "KV_MAX_SIBLINGS", file.maxSiblings, defaults.node.maximumSiblings)
        node.maximumRowBytes = try resolve(
            maxRowBytes, "KV_MAX_ROW_BYTES", file.maxRowBytes, defaults.node.maximumRowBytes)
        node.maximumResponseBytes = try resolve(
            maxResponseBytes, "KV_MAX_RESPONSE_BYTES", file.maxResponseBytes,
            defaults.node.maximumResponseBytes)
        let dataDirectory = try resolve(dataDir, "KV_DATA_DIR", file.dataDir, "./kv-data")
        let engineName = try resolve(engine, "KV_ENGINE", file.engine, "rocksdb")
        let levelName = try resolve(logLevel, "KV_LOG_LEVEL", file.logLevel, "info")

        let problems = http.problems() + node.problems()
        guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "\n")) }
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ValidationError("unknown log level '\(levelName)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "kv")

        let storage: any StorageEngine
        switch engineName {
        case "rocksdb":
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
            do {
                storage = try RocksDBStorageEngine(path: dataDirectory + "/rocksdb")
            } catch {
                throw ValidationError("cannot open the data directory \(dataDirectory): \(error)")
            }
        case "memory":
            storage = MemoryStorageEngine()
        default:
            throw ValidationError("unknown engine '\(engineName)'; use rocksdb or memory")
        }
        let localNode = try LocalNode(engine: storage, engineName: engineName, settings: node, logger: logger)
        let server = try HTTPServer(
            settings: http, service: localNode, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let address = try await server.start()
        let url = "http://\(http.host):\(address.port ?? http.port)"
        // Written unbuffered: whoever started the server (a script, a test) waits for this.
        FileHandle.standardOutput.write(
            Data(
                """
                kv \(LocalNode.version) node \(localNode.identity.nodeID) serving \(url)
                  engine: \(engineName)\(engineName == "rocksdb" ? ", data: \(dataDirectory)" : " (nothing is kept)")
                  try:    curl -s \(url)/health
                  stop:   Ctrl-C (or SIGTERM)

                """.utf8))
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: NodeLifecycle(server: server, node: localNode))],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Keeps the node running until a shutdown signal, then stops it in order: HTTP first
/// (no new requests, in-flight ones finish), then storage (flushed and closed).
struct NodeLifecycle: Service {
    let server: HTTPServer
    let node: LocalNode

    func run() async throws {
        try? await gracefulShutdown()
        await server.shutdown()
        await node.shutdown()
    }
}
