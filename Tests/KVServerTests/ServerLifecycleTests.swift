import Foundation
import KVClient
import KVCore
import KVTestSupport
import Testing

/// The `kv server` process: graceful shutdown, and where its settings come from.
@Suite("kv server lifecycle and configuration")
struct ServerLifecycleTests {
    @Test func sigtermStopsGracefullyAndKeepsData() async throws {
        // At info level the server logs each shutdown step.
        let server = try ServerProcess(arguments: ["--log-level", "info"])
        let rows = table("life", "rows")
        let client = try await HTTPKeyValueService(host: "127.0.0.1", port: server.port)
        _ = try await client.createTable(TableDescriptor(name: rows, schema: try KeySchema([.int64])))
        for index in 0..<100 {
            _ = try await client.put(
                RowKey(table: rows, parts: [.int64(Int64(index))]), value: text("\(index)"),
                options: WriteOptions())
        }
        await client.close()
        let port = server.port
        let status = server.terminate()
        #expect(status?.exitedNormally == true && status?.code == 0, "exit: \(String(describing: status))")
        // The port no longer accepts connections.
        #expect(throws: (any Error).self) { _ = try RawSocket(port: port) }
        // Restarted on the same directory (same port, so the old client can reconnect),
        // everything is there.
        try server.start(port: port)
        let page = try await client.scan(ScanRequest(table: rows, limit: 1000))
        #expect(page.rows.count == 100)
        await client.close()
        // The first run stopped its HTTP server, then flushed and closed storage, in order.
        let log = try String(contentsOfFile: server.logPath, encoding: .utf8)
        let stopped = log.range(of: "HTTP server stopped")
        let closed = log.range(of: "storage closed")
        #expect(stopped != nil && closed != nil && stopped!.lowerBound < closed!.lowerBound, "\(log)")
    }

    /// Precedence: flag, then environment variable, then YAML file, then default.
    @Test func settingsPrecedence() async throws {
        let config = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-config-\(UUID().uuidString).yaml"
        ).path
        try "max_value_bytes: 100\nmax_key_bytes: 64\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: config) }

        func limits(arguments: [String], environment: [String: String]) async throws -> (
            valueLimitOK: (Int) async throws -> Bool, stop: () -> Void
        ) {
            let server = try ServerProcess(
                arguments: ["--config", config] + arguments, environment: environment)
            let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
            _ = try await connection.send(.PUT, "/v1/_tables/cfg/t", body: Array(#"{"key":["string"]}"#.utf8))
            return (
                { size in
                    let response = try await connection.send(
                        .PUT, "/v1/cfg/t/k", body: [UInt8](repeating: 1, count: size))
                    if response.status == 204 { return true }
                    #expect(response.status == 413, "an oversize value is refused as too large")
                    return false
                },
                { server.kill() }
            )
        }
        // The file alone: 100 bytes.
        var (fits, stop) = try await limits(arguments: [], environment: [:])
        #expect(try await fits(100))
        #expect(try await !fits(101))
        stop()
        // The environment beats the file.
        (fits, stop) = try await limits(arguments: [], environment: ["KV_MAX_VALUE_BYTES": "200"])
        #expect(try await fits(200))
        #expect(try await !fits(201))
        stop()
        // A flag beats both.
        (fits, stop) = try await limits(
            arguments: ["--max-value-bytes", "150"], environment: ["KV_MAX_VALUE_BYTES": "200"])
        #expect(try await fits(150))
        #expect(try await !fits(151))
        stop()
    }

    @Test func siblingLimitFlagIsApplied() async throws {
        let server = try ServerProcess(arguments: ["--max-siblings", "2"])
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        _ = try await connection.send(.PUT, "/v1/_tables/cfg/t", body: Array(#"{"key":["string"]}"#.utf8))
        var statuses: [Int] = []
        for value in ["a", "b", "c"] {
            statuses.append(try await connection.send(.PUT, "/v1/cfg/t/k", body: Array(value.utf8)).status)
        }
        #expect(statuses == [204, 204, 409])
        await connection.close()
    }

    /// A client that asks for a large answer and never reads it is disconnected after
    /// the request timeout, so it cannot pin the answer's memory.
    @Test func clientsThatStopReadingAreDisconnected() async throws {
        let server = try ServerProcess(arguments: ["--request-timeout-seconds", "1"])
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        _ = try await connection.send(.PUT, "/v1/_tables/big/t", body: Array(#"{"key":["string"]}"#.utf8))
        let size = 8 << 20
        #expect(
            try await connection.send(.PUT, "/v1/big/t/v", body: [UInt8](repeating: 0x61, count: size)).status
                == 204)
        await connection.close()
        let socket = try RawSocket(port: server.port, receiveBuffer: 4096)
        socket.send("GET /v1/big/t/v HTTP/1.1\r\nhost: x\r\n\r\n")
        try await Task.sleep(for: .seconds(4))
        let received = socket.readAll(timeout: 10)
        #expect(received.utf8.count < size, "the whole answer was kept for a client that did not read")
        #expect(server.isRunning)
    }

    @Test func invalidSettingsAreReportedAtStartup() throws {
        let (status, message) = try Self.failedStart([
            "--port", "70000", "--partitions", "3", "--engine", "memory",
        ])
        #expect(status.exitedNormally && status.code != 0)
        // Every problem is reported, not just the first.
        #expect(message.contains("port must be 0 to 65535"), "\(message)")
        #expect(message.contains("partition count must be a power of two"), "\(message)")
    }

    /// Runs `kv server` with `arguments` until it exits; returns its status and stderr.
    static func failedStart(_ arguments: [String], environment: [String: String] = [:]) throws -> (
        ChildProcess.Status, String
    ) {
        let binary = try TestBinaries.path(of: "kv", override: "KV_BINARY")
        let errors = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-stderr-\(UUID().uuidString)"
        ).path
        defer { try? FileManager.default.removeItem(atPath: errors) }
        let child = try ChildProcess(
            executable: binary, arguments: ["server"] + arguments, standardErrorPath: errors,
            environment: environment)
        _ = child.finishReading()
        let status = child.wait()
        return (status, (try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")
    }

    @Test("a node on its own writes a cluster secret readable by its owner only, and keeps it")
    func generatedSecret() throws {
        // An empty KV_CLUSTER_SECRET leaves the node to its own secret.
        let server = try ServerProcess(environment: ["KV_CLUSTER_SECRET": ""])
        let path = server.dataDirectory + "/cluster-secret"
        let first = try String(contentsOfFile: path, encoding: .utf8)
        #expect(first.utf8.count > 40)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        _ = server.terminate()
        try server.start()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == first)
        #expect(server.isRunning)
        _ = server.terminate()
        server.removeData()
    }

    @Test(
        "a node that joins or lists peers without the cluster's secret, or with a short one, does not start")
    func secretRequired() throws {
        let none = ["KV_CLUSTER_SECRET": ""]
        for arguments in [["--join", "127.0.0.1:1"], ["--peers", "127.0.0.1:1,127.0.0.1:2"]] {
            let (status, message) = try Self.failedStart(
                ["--port", "0", "--engine", "memory"] + arguments, environment: none)
            #expect(status.exitedNormally && status.code != 0)
            #expect(message.contains("needs the cluster's secret"), "\(message)")
        }
        let (status, message) = try Self.failedStart(
            ["--port", "0", "--engine", "memory"], environment: ["KV_CLUSTER_SECRET": "too short"])
        #expect(status.exitedNormally && status.code != 0)
        #expect(message.contains("at least 16"), "\(message)")
    }
}
