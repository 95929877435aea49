import ArgumentParser
import Foundation
import Glibc
import KVAccess
import KVClient
import KVCore
import NIOConcurrencyHelpers
import UnixSignals

/// `kv dev`: a local cluster of separate `kv server` processes on 127.0.0.1.
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run a local cluster: several kv server processes on 127.0.0.1.",
        discussion: """
            Node i listens for HTTP on PORT+i-1 and for its peers on PORT+i-1+1000, keeps \
            its data in DATA/node<i> and logs to DATA/node<i>.log. The nodes form one static \
            cluster; any node serves any request. Ctrl-C (or SIGTERM) stops every node \
            gracefully. A node that dies (try kill -9 on one) is reported and the others \
            keep serving; stop and run kv dev again on the same data to bring it back. The \
            nodes prove to each other that they hold the secret in DATA/cluster-secret, \
            written on first start; a node that joins the cluster needs that file \
            (kv server --join … --cluster-secret-file DATA/cluster-secret).

            With --auth every node requires a bearer token; the administrator's token is \
            kept in DATA/admin-token (written on first start): export KV_TOKEN=$(cat \
            DATA/admin-token) for the kv commands, and create narrower tokens with \
            kv auth token create.

            With --tls every node speaks HTTPS and mutual TLS to its peers, with a \
            throw-away CA and node certificates written to DATA/tls on first start \
            (for 127.0.0.1 and localhost; trust DATA/tls/ca.pem: curl --cacert, KV_CA_FILE).
            """)

    @Option(help: "Number of nodes (default 3).") var nodes = 3
    @Option(help: "HTTP port of the first node (default 7700).") var port = 7700
    @Option(name: .customLong("data"), help: "Directory holding every node's data (default ./kv-dev).")
    var dataDirectory = "./kv-dev"
    @Option(help: "Storage engine: rocksdb (default), sqlite, postgres, mariadb, redis or memory.")
    var engine = "rocksdb"
    @Option(
        name: .customLong("storage-url"),
        help: ArgumentHelp(
            "The database server of --engine postgres|mariadb|redis; node i keeps its rows in table node<i> there.",
            valueName: "url"))
    var storageURL: String?
    @Option(help: "Replicas per partition (default 3, at most the number of nodes).")
    var replicationFactor: Int?
    @Option(help: "Log level of the nodes (default warning).") var logLevel = "warning"
    @Flag(help: "Require tokens: an administrator's token is kept in DATA/admin-token.") var auth = false
    @Flag(help: "Speak TLS, with a throw-away CA and node certificates in DATA/tls.") var tls = false
    @Flag(help: "Also serve minikeyvalue's HTTP API on each node, on the HTTP port + 2000.")
    var minikeyvalue = false
    @Flag(help: "Also serve the Redis protocol (RESP) on each node, on the HTTP port + 3000.")
    var resp = false

    func validate() throws {
        guard (1...16).contains(nodes) else { throw ValidationError("--nodes must be 1 to 16") }
        guard (1...(65535 - 3000 - nodes)).contains(port) else {
            throw ValidationError(
                "--port leaves no room for \(nodes) nodes and their peer, minikeyvalue and RESP ports")
        }
    }

    func run() async throws {
        let executable = try Self.executablePath()
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let secretPath = "\(dataDirectory)/\(ClusterSecretFile.defaultName)"
        _ = try ClusterSecretFile.createIfMissing(path: secretPath)
        let tokenPath = "\(dataDirectory)/admin-token"
        var adminToken: String?
        if auth {
            try ClusterSecretFile.createPrivateFile(
                path: tokenPath, contents: AccessTokenCrypto.generate().token + "\n", what: "admin token")
            adminToken = try String(contentsOfFile: tokenPath, encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let tlsDirectory = "\(dataDirectory)/tls"
        let caPath = DevCertificates.authority(directory: tlsDirectory)
        if tls {
            try DevCertificates.create(directory: tlsDirectory, nodes: nodes)
            for number in 1...nodes
            where !FileManager.default.fileExists(
                atPath: DevCertificates.files(directory: tlsDirectory, node: number).key)
            {
                throw ValidationError(
                    "\(tlsDirectory) has no certificate for node \(number); remove it to make a new set")
            }
        }
        let scheme = tls ? "https" : "http"
        let addresses = (0..<nodes).map { "127.0.0.1:\(port + $0)" }
        let replication = min(replicationFactor ?? 3, nodes)
        // Ctrl-C reaches the whole foreground process group; the nodes then stop on
        // their own, and this process waits for them instead of dying first.
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        var children: [Process] = []
        for index in 0..<nodes {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = [
                "server", "--host", "127.0.0.1", "--port", String(port + index), "--peer-port",
                String(port + index + 1000), "--data", "\(dataDirectory)/node\(index + 1)", "--node-name",
                "node\(index + 1)", "--engine",
                engine,
                "--peers", addresses.joined(separator: ","), "--replication-factor", String(replication),
                "--log-level", logLevel, "--cluster-secret-file", secretPath,
            ]
            if auth { process.arguments? += ["--admin-token-file", tokenPath] }
            if let storageURL {
                // One database server, one table per node: the nodes never collide.
                let separator = storageURL.contains("?") ? "&" : "?"
                process.arguments? += ["--storage-url", "\(storageURL)\(separator)table=node\(index + 1)"]
            }
            if minikeyvalue { process.arguments? += ["--minikeyvalue-port", String(port + index + 2000)] }
            if resp { process.arguments? += ["--resp-port", String(port + index + 3000)] }
            if tls {
                let files = DevCertificates.files(directory: tlsDirectory, node: index + 1)
                process.arguments? += [
                    "--tls-cert-file", files.certificate, "--tls-key-file", files.key, "--tls-ca-file",
                    caPath,
                ]
            }
            let logPath = "\(dataDirectory)/node\(index + 1).log"
            guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
                throw ValidationError("cannot create \(logPath)")
            }
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            log.seekToEndOfFile()
            process.standardOutput = log
            process.standardError = log
            let number = index + 1
            process.terminationHandler = { finished in
                guard !DevShutdown.isStopping else { return }
                FileHandle.standardError.write(
                    Data(
                        "kv dev: node \(number) exited with status \(finished.terminationStatus); see \(logPath)\n"
                            .utf8))
            }
            do {
                try process.run()
            } catch {
                for child in children { child.terminate() }
                throw ValidationError("cannot start \(executable): \(error)")
            }
            children.append(process)
        }
        let ready = await Self.waitUntilFormed(
            addresses: addresses, children: children,
            options: HTTPClientOptions(token: adminToken, useTLS: tls, caFile: tls ? caPath : nil))
        if ready {
            var lines = [
                "kv dev cluster: \(nodes) nodes, \(replication) replicas per partition, engine \(engine)"
            ]
            for (index, address) in addresses.enumerated() {
                lines.append(
                    "  node \(index + 1): \(scheme)://\(address)   data \(dataDirectory)/node\(index + 1), log \(dataDirectory)/node\(index + 1).log"
                )
            }
            if minikeyvalue {
                let listeners = (0..<nodes).map { "\(scheme)://127.0.0.1:\(port + $0 + 2000)" }
                lines.append("  minikeyvalue API: \(listeners.joined(separator: ", "))")
            }
            if resp {
                let listeners = (0..<nodes).map {
                    "\(tls ? "rediss" : "redis")://127.0.0.1:\(port + $0 + 3000)"
                }
                lines.append(
                    "  Redis protocol: \(listeners.joined(separator: ", ")) (redis-cli -p \(port + 3000))")
            }
            lines.append("  secret: \(secretPath) (a node that joins needs it)")
            if tls { lines.append("  tls:    every node; trust \(caPath) (export KV_CA_FILE=\(caPath))") }
            if auth { lines.append("  access: tokens required; the admin token is in \(tokenPath)") }
            let curl =
                "curl -s" + (tls ? " --cacert \(caPath)" : "")
                + (auth ? " -H \"Authorization: Bearer $(cat \(tokenPath))\"" : "")
            lines.append("  try:    \(curl) \(scheme)://\(addresses[0])/v1/_cluster")
            lines.append(
                "          \(auth ? "KV_TOKEN=$(cat \(tokenPath)) " : "")\(tls ? "KV_CA_FILE=\(caPath) " : "")\(executable) cluster status --url \(scheme)://\(addresses[0])"
            )
            lines.append("  stop:   Ctrl-C (or SIGTERM)")
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        } else {
            FileHandle.standardError.write(
                Data("kv dev: the cluster did not form within 60 s; see the logs in \(dataDirectory)\n".utf8))
        }
        if ready {
            for await _ in signals { break }
        }
        DevShutdown.isStopping = true
        FileHandle.standardOutput.write(Data("kv dev: stopping \(nodes) nodes\n".utf8))
        for child in children where child.isRunning { kill(child.processIdentifier, SIGTERM) }
        for child in children {
            let deadline = Date().addingTimeInterval(30)
            while child.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if child.isRunning { kill(child.processIdentifier, SIGKILL) }
        }
        FileHandle.standardOutput.write(Data("kv dev: stopped\n".utf8))
        if !ready { throw ExitCode(1) }
    }

    /// Waits until every node answers and the first one sees all of them in its layout.
    static func waitUntilFormed(addresses: [String], children: [Process], options: HTTPClientOptions) async
        -> Bool
    {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if children.contains(where: { !$0.isRunning }) { return false }
            if let service = try? await HTTPKeyValueService(
                url: (options.useTLS ? "https://" : "http://") + addresses[0], options: options)
            {
                let status = try? await service.clusterStatus()
                await service.close()
                if let status, status.layoutVersion > 0,
                    status.members.filter({ $0.state != "joining" }).count == addresses.count
                {
                    return true
                }
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    /// This program's own path, so the nodes run the same build.
    static func executablePath() throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { throw ValidationError("cannot find this program's path") }
        return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Set once the user asked to stop, so children that exit then are not reported as deaths.
enum DevShutdown {
    private static let stopping = NIOLockedValueBox(false)
    static var isStopping: Bool {
        get { stopping.withLockedValue { $0 } }
        set { stopping.withLockedValue { $0 = newValue } }
    }
}
