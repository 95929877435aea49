import ArgumentParser
import Foundation
import KVClient
import KVCluster
import KVCore
import KVFunctions
import KVNode
import KVRESP
import KVServer
import KVStorage
import KVStorageMemory
import KVStorageRocksDB
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals
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
    var peerPort: Int?
    var join: String?
    var peers: [String]?
    var replicationFactor: Int?
    var clusterName: String?
    var clusterSecretFile: String?
    var backupDir: String?
    var adminTokenFile: String?
    var tlsCertFile: String?
    var tlsKeyFile: String?
    var tlsCAFile: String?
    var zone: String?
    var capacity: Int?
    var replicaTimeoutMilliseconds: Int?
    var maximumClockSkewMilliseconds: Int?
    var advertiseHost: String?
    var advertisePeerPort: Int?
    var nodeName: String?
    var antiEntropyIntervalMilliseconds: Int?
    var transferBatchKibibytes: Int?

    enum CodingKeys: String, CodingKey {
        case host, port, engine, partitions, join, peers, zone, capacity
        case peerPort = "peer_port"
        case replicationFactor = "replication_factor"
        case clusterName = "cluster_name"
        case clusterSecretFile = "cluster_secret_file"
        case backupDir = "backup_dir"
        case adminTokenFile = "admin_token_file"
        case tlsCertFile = "tls_cert_file"
        case tlsKeyFile = "tls_key_file"
        case tlsCAFile = "tls_ca_file"
        case replicaTimeoutMilliseconds = "replica_timeout_ms"
        case maximumClockSkewMilliseconds = "max_clock_skew_ms"
        case advertiseHost = "advertise_host"
        case advertisePeerPort = "advertise_peer_port"
        case nodeName = "node_name"
        case antiEntropyIntervalMilliseconds = "anti_entropy_interval_ms"
        case transferBatchKibibytes = "transfer_batch_kib"
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
            KV_MAX_CONNECTIONS, KV_REQUEST_TIMEOUT_SECONDS, KV_IDLE_TIMEOUT_SECONDS, KV_PEER_PORT, \
            KV_JOIN, KV_PEERS, KV_REPLICATION_FACTOR, KV_CLUSTER_NAME, KV_CLUSTER_SECRET_FILE, KV_BACKUP_DIR, \
            KV_ADMIN_TOKEN_FILE, KV_TLS_CERT_FILE, KV_TLS_KEY_FILE, KV_TLS_CA_FILE, \
            KV_ZONE, KV_CAPACITY, \
            KV_REPLICA_TIMEOUT_MS, KV_MAX_CLOCK_SKEW_MS, KV_ADVERTISE_HOST), the YAML file given with --config (keys host, port, data_dir, \
            engine, partitions, log_level, max_key_bytes, max_value_bytes, max_siblings, max_row_bytes, \
            max_response_bytes, max_header_bytes, max_body_bytes, max_connections, \
            request_timeout_seconds, idle_timeout_seconds, peer_port, join, peers, \
            replication_factor, cluster_name, cluster_secret_file, backup_dir, admin_token_file, tls_cert_file, tls_key_file, tls_ca_file, zone, capacity, replica_timeout_ms, max_clock_skew_ms, \
            advertise_host), and the default. The large value settings below have theirs: \
            KV_LARGE_VALUE_GRACE_SECONDS, KV_CHUNK_COLLECTION_INTERVAL_MS \
            (large_value_grace_seconds, chunk_collection_interval_ms), and so \
            have the RocksDB ones: KV_ROCKSDB_WRITE_BUFFER_MIB, KV_ROCKSDB_BLOCK_CACHE_MIB, \
            KV_ROCKSDB_UNLOGGED_BATCH_KIB, KV_ROCKSDB_BLOB_THRESHOLD_KIB (rocksdb_write_buffer_mib, \
            rocksdb_block_cache_mib, rocksdb_unlogged_batch_kib, rocksdb_blob_threshold_kib), and the \
            minikeyvalue listener: \
            KV_MINIKEYVALUE_PORT, KV_MINIKEYVALUE_TABLE (minikeyvalue_port, minikeyvalue_table), and the \
            RESP listener: KV_RESP_PORT (resp_port), and the Mykeyv listener: KV_MYKEYV_PORT (mykeyv_port).

            Clusters: a node started alone forms a cluster of one. With --peers (every member's \
            HTTP address, this node's included) the nodes form one cluster once all of them \
            know each other. With --join a node joins the cluster of the member at that HTTP \
            address. The environment variables VIEW (like --peers), ADDRESS (this node's \
            host:port) and REPL_FACTOR (the replication factor) are accepted as well. Nodes \
            talk to each other on the peer port, by default the HTTP port plus 1000, and \
            prove to each other that they hold the cluster's secret before anything else: \
            give it with --cluster-secret-file or KV_CLUSTER_SECRET. A node on its own that \
            has none writes a new one to DATA/cluster-secret on first start; copy that file \
            to every node that joins it.

            Access control: with --admin-token-file (or KV_ADMIN_TOKEN_FILE, or the token \
            itself in KV_ADMIN_TOKEN) every request but the health checks needs a bearer \
            token. The configured token is a cluster administrator's; create others with \
            kv auth token create. Turn it on for every node of a cluster.

            TLS: with --tls-cert-file, --tls-key-file and --tls-ca-file the HTTP API \
            speaks only HTTPS, and peers speak mutual TLS, each presenting a certificate \
            the CA signed. SIGHUP reads the three files again; new connections use them.

            SIGTERM or SIGINT stops the node gracefully: it stops accepting connections, \
            finishes in-flight requests, then flushes and closes the storage engine.
            """
    )

    @Option(help: "YAML settings file.") var config: String?
    @OptionGroup(title: "Large values") var largeValues: LargeValueOptions
    @OptionGroup(title: "RocksDB") var rocksDB: RocksDBOptions
    @OptionGroup(title: "Database servers") var storageOptions: StorageOptions
    @OptionGroup(title: "Other systems' APIs") var dialects: DialectOptions
    @OptionGroup(title: "Update functions") var functionOptions: FunctionOptions
    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on; 0 picks a free one (default 7700).") var port: Int?
    @Option(name: .customLong("data"), help: "Data directory (default ./kv-data).") var dataDir: String?
    @Option(
        help:
            "Storage engine: rocksdb (default), sqlite, postgres, mariadb, redis (the last three need --storage-url), or memory (nothing is kept)."
    ) var engine: String?
    @Option(help: "Partitions of a new data directory, a power of two (default 256).") var partitions: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
    var logLevel: String?
    @Option(help: "Largest encoded key in bytes (default 4096).") var maxKeyBytes: Int?
    @Option(
        help: "Largest value in bytes; values over 1 MiB are kept in chunks (default 1 GiB, at most 1 TiB).")
    var maxValueBytes: Int?
    @Option(help: "Most siblings a row may hold (default 100).") var maxSiblings: Int?
    @Option(help: "Most bytes of live values in one row (default 64 MiB).") var maxRowBytes: Int?
    @Option(help: "Most value bytes in one answer: scan page or batch (default 32 MiB).")
    var maxResponseBytes: Int?
    @Option(help: "Largest request head in bytes (default 16 KiB).") var maxHeaderBytes: Int?
    @Option(help: "Largest request body in bytes (default 16 MiB + 64 KiB).") var maxBodyBytes: Int?
    @Option(help: "Most open connections (default 1024).") var maxConnections: Int?
    @Option(help: "Seconds to receive a whole request (default 10).") var requestTimeoutSeconds: Int?
    @Option(help: "Seconds an idle connection stays open (default 60).") var idleTimeoutSeconds: Int?
    @Option(
        help: "Port of the node-to-node protocol (default the HTTP port + 1000; 0 when the HTTP port is 0).")
    var peerPort: Int?
    @Option(help: "Join the cluster of the member at this HTTP address (host:port).") var join: String?
    @Option(help: "Every member's HTTP address, comma-separated, for a static cluster.") var peers: String?
    @Option(help: "Replicas per partition of a cluster this node forms (default 3).")
    var replicationFactor: Int?
    @Option(help: "The cluster's name; nodes of another name are refused (default kv).") var clusterName:
        String?
    @Option(
        help:
            "File holding the cluster's secret, which peers prove they hold (default DATA/cluster-secret, created by a node on its own)."
    )
    var clusterSecretFile: String?
    @Option(
        name: .customLong("backup-dir"),
        help:
            "Where POST /v1/_node/backup (kv backup) writes backups, on this machine (default DATA/backups).")
    var backupDirectory: String?
    @Option(
        help:
            "File holding the first administrator's token; turns access control on (default off, or $KV_ADMIN_TOKEN)."
    )
    var adminTokenFile: String?
    @Option(help: "PEM certificate (chain) of this node; turns TLS on with --tls-key-file and --tls-ca-file.")
    var tlsCertFile: String?
    @Option(help: "PEM private key of the certificate.") var tlsKeyFile: String?
    @Option(help: "PEM CA that signed every member's certificate.") var tlsCAFile: String?
    @Option(help: "This node's zone: replicas go to distinct zones (default default).") var zone: String?
    @Option(help: "This node's capacity weight in the layout (default 1).") var capacity: Int?
    @Option(help: "The host other nodes and clients are told (default the listen host; needed with 0.0.0.0).")
    var advertiseHost: String?
    @Option(help: "The peer port other nodes are told (default the peer port; for a proxy in front of it).")
    var advertisePeerPort: Int?
    @Option(
        help:
            "This node's name; its id derives from it, so a node rebuilt on an empty disk keeps its place (default: a random id)."
    )
    var nodeName: String?
    @Option(
        name: .customLong("anti-entropy-interval-ms"),
        help: "Milliseconds between anti-entropy exchanges; 0 turns anti-entropy off (default 1000).")
    var antiEntropyIntervalMilliseconds: Int?
    @Option(
        name: .customLong("transfer-batch-kib"),
        help: "KiB of rows per handoff batch when partitions move (4 to 32768, default 1024).")
    var transferBatchKibibytes: Int?
    @Option(
        name: .customLong("replica-timeout-ms"),
        help: "Milliseconds an operation waits for replicas (default 5000).")
    var replicaTimeoutMilliseconds: Int?
    @Option(
        name: .customLong("max-clock-skew-ms"),
        help:
            "Milliseconds a peer's wall clock may differ from this node's when it connects; a peer further off is refused; 0 turns the check off (default 1000)."
    )
    var maximumClockSkewMilliseconds: Int?

    func run() async throws {
        MemoryTuning.apply()
        let environment = ProcessInfo.processInfo.environment
        var file = ServerConfigFile()
        var largeValueFile = LargeValueOptions.File()
        var rocksDBFile = RocksDBOptions.File()
        var storageFile = StorageOptions.File()
        var dialectFile = DialectOptions.File()
        var functionFile = FunctionOptions.File()
        if let config {
            do {
                let text = try String(contentsOfFile: config, encoding: .utf8)
                file = try YAMLDecoder().decode(ServerConfigFile.self, from: text)
                largeValueFile = try YAMLDecoder().decode(LargeValueOptions.File.self, from: text)
                rocksDBFile = try YAMLDecoder().decode(RocksDBOptions.File.self, from: text)
                storageFile = try YAMLDecoder().decode(StorageOptions.File.self, from: text)
                dialectFile = try YAMLDecoder().decode(DialectOptions.File.self, from: text)
                functionFile = try YAMLDecoder().decode(FunctionOptions.File.self, from: text)
            } catch {
                throw ValidationError("cannot read the settings file \(config): \(error)")
            }
        }
        let sources = SettingSources(environment: environment)
        func resolve<Value: LosslessStringConvertible>(
            _ flag: Value?, _ variable: String, _ fromFile: Value?, _ fallback: Value
        ) throws -> Value {
            try sources.resolve(flag, variable, fromFile, fallback)
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
        let name = try resolve(nodeName, "KV_NODE_NAME", file.nodeName, "")
        node.nodeName = name.isEmpty ? nil : name
        // CSE138-style variables: ADDRESS is this node's host:port, VIEW every member's.
        if let address = environment["ADDRESS"], host == nil, port == nil, environment["KV_HOST"] == nil,
            environment["KV_PORT"] == nil
        {
            guard let colon = address.lastIndex(of: ":"),
                let value = Int(address[address.index(after: colon)...])
            else { throw ValidationError("ADDRESS='\(address)' is not host:port") }
            http.host = String(address[..<colon])
            http.port = value
        }
        let peerList = try resolve(
            peers, "KV_PEERS", file.peers?.joined(separator: ","), environment["VIEW"] ?? "")
        let joinAddress = try resolve(join, "KV_JOIN", file.join, "")
        let replication = try resolve(
            replicationFactor, "KV_REPLICATION_FACTOR", file.replicationFactor,
            environment["REPL_FACTOR"].flatMap { Int($0) } ?? 3)
        let seeds = peerList.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        guard joinAddress.isEmpty || seeds.isEmpty else {
            throw ValidationError("give either --join or --peers, not both")
        }
        let dataDirectory = try resolve(dataDir, "KV_DATA_DIR", file.dataDir, "./kv-data")
        let engineName = try resolve(engine, "KV_ENGINE", file.engine, "rocksdb")
        let keepsData = engineName != "memory"
        if keepsData {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
            node.backupDirectory = try resolve(
                backupDirectory, "KV_BACKUP_DIR", file.backupDir, dataDirectory + "/backups")
        }
        // A file named by flag or environment wins over a secret in the environment,
        // which wins over a file named in the settings file.
        let secretFile = clusterSecretFile ?? environment["KV_CLUSTER_SECRET_FILE"]
        let secretValue = secretFile == nil ? environment["KV_CLUSTER_SECRET"] : nil
        let secret = try ClusterSecretFile.resolve(
            file: secretFile ?? (secretValue == nil ? file.clusterSecretFile : nil), value: secretValue,
            dataDirectory: keepsData ? dataDirectory : nil, alone: joinAddress.isEmpty && seeds.isEmpty)
        let access = try AdminTokenSetting.resolve(
            file: adminTokenFile ?? environment["KV_ADMIN_TOKEN_FILE"] ?? file.adminTokenFile,
            value: environment["KV_ADMIN_TOKEN"])
        let tls = try TLSFiles.paths(
            certificate: tlsCertFile ?? environment["KV_TLS_CERT_FILE"] ?? file.tlsCertFile,
            key: tlsKeyFile ?? environment["KV_TLS_KEY_FILE"] ?? file.tlsKeyFile,
            authority: tlsCAFile ?? environment["KV_TLS_CA_FILE"] ?? file.tlsCAFile
        ).map(TLSFiles.init)
        var cluster = ClusterSettings(secret: secret.secret)
        cluster.name = try resolve(clusterName, "KV_CLUSTER_NAME", file.clusterName, "kv")
        cluster.zone = try resolve(zone, "KV_ZONE", file.zone, "default")
        cluster.capacity = try resolve(capacity, "KV_CAPACITY", file.capacity, 1)
        cluster.replicationFactor = replication
        cluster.requestTimeoutMilliseconds = Int64(
            try resolve(
                replicaTimeoutMilliseconds, "KV_REPLICA_TIMEOUT_MS", file.replicaTimeoutMilliseconds, 5_000))
        let skew = try resolve(
            maximumClockSkewMilliseconds, "KV_MAX_CLOCK_SKEW_MS", file.maximumClockSkewMilliseconds, 1_000)
        guard skew >= 0 else { throw ValidationError("the clock skew limit must be 0 or more, not \(skew)") }
        cluster.maximumClockSkewMilliseconds = skew == 0 ? nil : Int64(skew)
        cluster.peerHost = http.host
        let advertised = try resolve(advertiseHost, "KV_ADVERTISE_HOST", file.advertiseHost, http.host)
        guard !["0.0.0.0", "::", "[::]"].contains(advertised) else {
            throw ValidationError(
                "listening on every interface (\(http.host)): give --advertise-host, the address other nodes and clients use"
            )
        }
        cluster.advertisedHost = advertised
        let advertisedPort = try resolve(
            advertisePeerPort, "KV_ADVERTISE_PEER_PORT", file.advertisePeerPort, 0)
        cluster.advertisedPeerPort = advertisedPort == 0 ? nil : advertisedPort
        cluster.antiEntropyIntervalMilliseconds = Int64(
            try resolve(
                antiEntropyIntervalMilliseconds, "KV_ANTI_ENTROPY_INTERVAL_MS",
                file.antiEntropyIntervalMilliseconds,
                1_000))
        cluster.transferBatchBytes =
            try resolve(transferBatchKibibytes, "KV_TRANSFER_BATCH_KIB", file.transferBatchKibibytes, 1024)
            << 10
        cluster.peerPort = try resolve(
            peerPort, "KV_PEER_PORT", file.peerPort, http.port == 0 ? 0 : http.port + 1000)
        let levelName = try resolve(logLevel, "KV_LOG_LEVEL", file.logLevel, "info")

        try largeValues.apply(to: &cluster, file: largeValueFile, environment: environment)
        let problems = http.problems() + node.problems() + cluster.problems()
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

        let rocksDBSettings = try rocksDB.settings(file: rocksDBFile, environment: environment)
        let minikeyvalue = try dialects.minikeyvalue(file: dialectFile, environment: environment)
        let respPort = try dialects.resp(file: dialectFile, environment: environment)
        let mykeyvPort = try dialects.mykeyv(file: dialectFile, environment: environment)
        let functions = FunctionSandbox(
            limits: try functionOptions.limits(file: functionFile, sources: sources))
        let (storage, storageLocation) = try storageOptions.open(
            engine: engineName, dataDirectory: dataDirectory, rocksDB: rocksDBSettings, file: storageFile,
            environment: environment)
        let storageNode = try NodeStorage(
            engine: storage, engineName: engineName, settings: node, logger: logger)
        // The HTTP port must be known before the cluster side announces it, so the
        // server starts first; until the cluster forms it answers data requests with
        // server.unavailable.
        let group = MultiThreadedEventLoopGroup.singleton
        let service = DeferredService()
        let exporter = MetricsExport.bootstrap(service: service)
        let server = try HTTPServer(
            settings: http, service: service, group: group, logger: logger,
            metrics: HTTPMetrics(exporter: exporter), access: access, tls: tls?.http, functions: functions)
        let address = try await server.start()
        let httpAddress = "\(advertised):\(address.port ?? http.port)"
        let url = "\(tls == nil ? "http" : "https")://\(httpAddress)"
        cluster.httpAddress = httpAddress
        if !joinAddress.isEmpty {
            cluster.expectedMembers = nil
        } else if !seeds.isEmpty {
            // This node counts once even if the list does not name it; if it names it
            // under another spelling, the bootstrap finds out and lowers the count.
            cluster.expectedMembers = Set(seeds + [httpAddress]).count
        }
        let clusterNode = try ClusterNode(
            local: storageNode, settings: cluster, group: group, logger: logger, tls: tls?.peers)
        let peerAddress = try await clusterNode.start()
        service.install(clusterNode)
        var dialectServers: [HTTPServer] = []
        var dialectLines = ""
        if let minikeyvalue {
            var settings = http
            settings.port = minikeyvalue.port
            let server = try HTTPServer(
                settings: settings, service: service, group: group, logger: logger,
                metrics: HTTPMetrics(exporter: exporter), access: access, tls: tls?.http,
                dialect: .minikeyvalue(minikeyvalue.table))
            let bound = try await server.start()
            dialectServers.append(server)
            dialectLines =
                "\n  minikeyvalue: \(tls == nil ? "http" : "https")://\(advertised):\(bound.port ?? minikeyvalue.port) (table \(minikeyvalue.table))"
        }
        var respServer: RESPServer?
        if let respPort {
            var authenticate: (@Sendable (String) throws(KVError) -> AccessGrants)?
            if access.isOn {
                authenticate = { [access, service] (token: String) throws(KVError) -> AccessGrants in
                    try access.grants(forToken: token, service: service)
                }
            }
            let frontEnd = RESPFrontEnd(
                service: service, limits: RESPLimits(maximumBulkBytes: node.maximumInlineValueBytes),
                authenticate: authenticate)
            let server = RESPServer(
                frontEnd: frontEnd, host: http.host, port: respPort,
                maximumConnections: http.maximumConnections,
                group: group, logger: logger, tls: tls?.http)
            let bound = try await server.start()
            respServer = server
            dialectLines +=
                "\n  resp:   \(tls == nil ? "redis" : "rediss")://\(advertised):\(bound.port ?? respPort) (redis-cli -p \(bound.port ?? respPort))"
        }
        var mykeyvServer: MykeyvServer?
        if let mykeyvPort {
            var authenticate: (@Sendable (String) throws(KVError) -> AccessGrants)?
            if access.isOn {
                authenticate = { [access, service] (token: String) throws(KVError) -> AccessGrants in
                    try access.grants(forToken: token, service: service)
                }
            }
            let server = MykeyvServer(
                frontEnd: MykeyvFrontEnd(
                    service: service, maximumPayloadBytes: node.maximumInlineValueBytes + (64 << 10),
                    authenticate: authenticate, functions: functions),
                host: http.host, port: mykeyvPort, maximumConnections: http.maximumConnections, group: group,
                logger: logger, tls: tls?.http)
            let bound = try await server.start()
            mykeyvServer = server
            dialectLines += "\n  mykeyv: \(advertised):\(bound.port ?? mykeyvPort)"
        }
        let bootstrap = Task {
            await Bootstrap(
                node: clusterNode, seeds: joinAddress.isEmpty ? seeds : [joinAddress],
                ownAddress: httpAddress,
                client: HTTPClientOptions(useTLS: tls != nil, caFile: tls?.paths.authority)
            )
            .run()
        }
        let mode =
            !joinAddress.isEmpty
            ? "joining through \(joinAddress)"
            : seeds.isEmpty ? "a cluster of its own" : "static, \(cluster.expectedMembers ?? 0) members"
        // Written unbuffered: whoever started the server (a script, a test) waits for this.
        FileHandle.standardOutput.write(
            Data(
                """
                kv \(ClusterNode.version) node \(storageNode.identity.nodeID) serving \(url)
                  engine: \(engineName), \(storageLocation)
                  peers:  \(peerAddress) (\(mode))\(dialectLines)
                  secret: \(secret.origin)
                  access: \(access.isOn ? "tokens required (Authorization: Bearer TOKEN)" : "open (no tokens)")
                  tls:    \(tls.map { "on, CA \($0.paths.authority) (SIGHUP reloads the files)" } ?? "off")
                  try:    curl -s \(tls.map { "--cacert \($0.paths.authority) " } ?? "")\(url)/health
                  stop:   Ctrl-C (or SIGTERM)

                """.utf8))
        let reloader = tls.map { files in
            Task {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    do {
                        try files.reload()
                        logger.notice("TLS files reloaded; new connections use them")
                    } catch {
                        logger.error(
                            "TLS files not reloaded; the previous ones stay in use",
                            metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        defer { reloader?.cancel() }
        let services = ServiceGroup(
            configuration: .init(
                services: [
                    .init(
                        service: NodeLifecycle(
                            server: server, dialectServers: dialectServers, respServer: respServer,
                            mykeyvServer: mykeyvServer, node: clusterNode,
                            bootstrap: bootstrap))
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
    }
}
