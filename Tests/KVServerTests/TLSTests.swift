import Foundation
import Glibc
import KVClient
import KVCore
import KVTestSupport
import KVWire
import Testing

/// TLS on real `kv server` processes: HTTPS for clients with the CA and nothing else,
/// mutual TLS between peers, and new files taken on SIGHUP.
@Suite("TLS", .serialized)
struct TLSTests {
    static let items = try! TableName(namespace: "tls", table: "items")

    /// Runs curl with `arguments`; returns its exit status and standard output.
    static func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let (status, data) = try HTTPGet.curl(arguments)
        return (status, String(decoding: data, as: UTF8.self))
    }

    @Test func httpsWithTheCAWorksAndPlainHTTPIsRefused() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let server = try ServerProcess(
            arguments: ["--partitions", "16"], environment: certificates.environment)
        defer { server.kill() }
        #expect(server.url.hasPrefix("https://"))

        let trusted = try Self.curl(["--cacert", certificates.authority, server.url + "/health"])
        #expect(trusted.status == 0)
        #expect(trusted.output.contains("\"ok\""))
        // Without the CA curl cannot verify the server (exit 60), and plain HTTP on the
        // TLS port gets no HTTP answer: the bytes are not a TLS handshake.
        let untrusted = try Self.curl([server.url + "/health"])
        #expect(untrusted.status == 60)
        let plain = try Self.curl(["http://127.0.0.1:\(server.port)/health"])
        #expect(plain.status != 0)
        #expect(!plain.output.contains("ok"))
        let socket = try RawSocket(port: server.port)
        #expect(socket.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(!socket.readAll(timeout: 5).contains("HTTP/1.1"))

        // The Swift client over HTTPS, with the CA.
        let client = try await HTTPKeyValueService(
            url: server.url, options: HTTPClientOptions(caFile: certificates.authority))
        _ = try await client.createTable(TableDescriptor(name: Self.items, schema: try KeySchema([.string])))
        let key = RowKey(table: Self.items, parts: [.string("k")])
        _ = try await client.put(key, value: RowValue(bytes: Array("over tls".utf8)), options: WriteOptions())
        #expect(try await client.get(key).siblings.first?.value?.bytes == Array("over tls".utf8))
        await client.close()
        // Without the CA the client refuses the server, every time when it connects: it
        // waits for the handshake, so the failure is never a request lost afterwards (or,
        // had the failed handshake won the race, an error about the pipeline).
        for _ in 0..<20 {
            do {
                let strict = try await HTTPKeyValueService(url: server.url)
                await strict.close()
                Issue.record("a client without the CA connected")
            } catch {
                #expect(error.code == .unavailable)
                #expect(error.underlying as? TransportFailure == .notConnected)
                #expect(error.message.contains("CERTIFICATE_VERIFY_FAILED"), "\(error.message)")
            }
        }
    }

    @Test func sighupTakesNewCertificatesForNewConnections() async throws {
        let first = try TestCertificates()
        let second = try TestCertificates()
        defer {
            first.remove()
            second.remove()
        }
        // The node reads its files from a directory of its own, replaced below.
        let live = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-tls-live-\(UUID().uuidString)"
        )
        .path
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: live) }
        func install(_ set: TestCertificates) throws {
            for (source, name) in [
                (set.certificate(), "cert.pem"), (set.key(), "key.pem"), (set.authority, "ca.pem"),
            ] {
                let target = live + "/" + name
                try? FileManager.default.removeItem(atPath: target)
                try FileManager.default.copyItem(atPath: source, toPath: target)
            }
        }
        try install(first)
        let server = try ServerProcess(
            arguments: ["--partitions", "16"],
            environment: [
                "KV_TLS_CERT_FILE": live + "/cert.pem", "KV_TLS_KEY_FILE": live + "/key.pem",
                "KV_TLS_CA_FILE": live + "/ca.pem",
            ])
        defer { server.kill() }
        #expect(try Self.curl(["--cacert", first.authority, server.url + "/health/live"]).status == 0)
        #expect(try Self.curl(["--cacert", second.authority, server.url + "/health/live"]).status != 0)

        try install(second)
        kill(server.child!.pid, SIGHUP)
        var switched = false
        for _ in 0..<100 where !switched {
            switched = try Self.curl(["--cacert", second.authority, server.url + "/health/live"]).status == 0
            if !switched { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(switched, "the node still presents the old certificate after SIGHUP")
        #expect(try Self.curl(["--cacert", first.authority, server.url + "/health/live"]).status != 0)

        // Broken files are refused and the node keeps serving with what it has.
        try "not a certificate".write(toFile: live + "/cert.pem", atomically: true, encoding: .utf8)
        kill(server.child!.pid, SIGHUP)
        let refused = await eventually(within: 10) {
            try String(contentsOfFile: server.logPath, encoding: .utf8).contains("TLS files not reloaded")
        }
        #expect(refused, "the node did not log that it refused the broken files")
        #expect(try Self.curl(["--cacert", second.authority, server.url + "/health/live"]).status == 0)
    }

    /// A cluster whose members speak mutual TLS: it forms and replicates, and a peer
    /// connection without TLS, or with a certificate of another CA, gets nowhere.
    @Test func peersSpeakMutualTLS() async throws {
        let certificates = try TestCertificates()
        let stranger = try TestCertificates()
        defer {
            certificates.remove()
            stranger.remove()
        }
        let cluster = try await offCooperativePool {
            try LocalCluster(
                count: 3, arguments: ["--partitions", "16"], environment: certificates.environment)
        }
        defer { for node in cluster.nodes { node.kill() } }
        let options = HTTPClientOptions(caFile: certificates.authority)
        let first = try await HTTPKeyValueService(url: cluster.url(0), options: options)
        _ = try await first.createTable(TableDescriptor(name: Self.items, schema: try KeySchema([.string])))
        let key = RowKey(table: Self.items, parts: [.string("k")])
        _ = try await first.put(
            key, value: RowValue(bytes: [7]), options: WriteOptions(quorum: QuorumOverrides(w: 3)))
        let third = try await HTTPKeyValueService(url: cluster.url(2), options: options)
        #expect(
            try await third.get(key, options: ReadOptions(quorum: QuorumOverrides(r: 3))).siblings.count == 1)

        // A plaintext hello on the peer port is not a TLS handshake: closed, unanswered.
        let plain = try PeerSocket(port: cluster.peerPorts[1])
        plain.send(
            .hello(
                node: NodeID(rawValue: 42), cluster: "kv", listenAddress: "",
                clockMilliseconds: PeerSocket.wallClockMilliseconds()))
        let answer = plain.readUntilClosed(timeout: 10)
        #expect(answer.closed)
        #expect(answer.frames.isEmpty)
        // A TLS client with another CA's certificate is refused in the TLS handshake.
        let foreign = try Self.curl([
            "--cacert", certificates.authority, "--cert", stranger.certificate(), "--key", stranger.key(),
            "https://127.0.0.1:\(cluster.peerPorts[1])/",
        ])
        #expect(foreign.status != 0)
        #expect(foreign.output.isEmpty)
        // The cluster kept serving.
        #expect(try await first.get(key).siblings.count == 1)
        await first.close()
        await third.close()
    }
}
