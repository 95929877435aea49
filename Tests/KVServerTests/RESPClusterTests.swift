import Foundation
import KVClient
import KVCore
import KVTestSupport
import Testing

/// The RESP listener of real `kv server` processes, driven by Redis's own tools:
/// redis-cli (Debian's redis-tools) and redis-py.
@Suite("RESP listener of real processes", .serialized)
struct RESPClusterTests {
    static let redisCLI = "/usr/bin/redis-cli"

    /// One redis-cli command's output (redis-cli prints raw replies when its output is
    /// not a terminal: one line per element, an empty line for a null).
    static func cli(_ port: Int, _ arguments: [String], resp3: Bool = false) throws -> String {
        try Files.run(redisCLI, (resp3 ? ["-3"] : []) + ["-p", String(port)] + arguments)
    }

    /// A 3-node cluster whose nodes each open a RESP port; returns it and the ports.
    static func cluster(extra: [String] = []) async throws -> (LocalCluster, [Int]) {
        let ports = try FreePorts.take(3)
        let cluster = try await offCooperativePool {
            try LocalCluster(
                count: 3, arguments: ElasticClusterTests.arguments + extra,
                perNodeArguments: ports.map { ["--resp-port", String($0)] })
        }
        return (cluster, ports)
    }

    @Test("redis-cli and redis-py run a scripted session against a 3-node cluster", .timeLimit(.minutes(5)))
    func scriptedSessions() async throws {
        let (cluster, ports) = try await Self.cluster()
        // redis-cli: replies as Redis prints them, in both protocol versions.
        #expect(try Self.cli(ports[0], ["PING"]) == "PONG\n")
        #expect(try Self.cli(ports[0], ["SET", "cli:key", "a b"]) == "OK\n")
        #expect(try Self.cli(ports[1], ["GET", "cli:key"]) == "a b\n")
        #expect(try Self.cli(ports[2], ["GET", "cli:missing"]) == "\n")
        #expect(try Self.cli(ports[2], ["INCRBY", "cli:n", "5"]) == "5\n")
        #expect(try Self.cli(ports[0], ["MGET", "cli:key", "cli:missing", "cli:n"]) == "a b\n\n5\n")
        #expect(
            try Self.cli(ports[0], ["NOSUCH", "x"]).hasPrefix(
                "ERR unknown command 'NOSUCH', with args beginning with: 'x'"))
        #expect(try Self.cli(ports[1], ["GET"]).hasPrefix("ERR wrong number of arguments for 'get' command"))
        let hello = try Self.cli(ports[1], ["HELLO", "3"], resp3: true)
        #expect(hello.contains("proto") && hello.contains("3") && hello.contains("redis"), "\(hello)")
        #expect(try Self.cli(ports[1], ["GET", "cli:key"], resp3: true) == "a b\n")
        // redis-cli's mass insertion: a thousand pipelined commands in one stream.
        let commands = (0..<1000).map { index in
            let key = "pipe:\(index)"
            let value = "value \(index)"
            return "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n"
        }.joined()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("resp-pipe-\(getpid()).txt")
        try Data(commands.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let piped = try Files.run("/bin/sh", ["-c", "\(Self.redisCLI) -p \(ports[2]) --pipe < \(file.path)"])
        #expect(piped.contains("errors: 0, replies: 1000"), "\(piped)")
        #expect(try Self.cli(ports[0], ["GET", "pipe:999"]) == "value 999\n")
        #expect(try Self.cli(ports[1], ["DBSIZE"]) == "1002\n")

        let python = try PythonEnvironment.python(with: ["redis"])
        let status = try await offCooperativePool {
            try Files.status(python, [PythonEnvironment.script("redis_client.py")] + ports.map(String.init))
        }
        #expect(status == 0, "\(status) checks of the redis-py session failed (see the output)")
        _ = cluster
    }

    /// A key is written everywhere, a node stops, the key is given a TTL and expires while
    /// the node is down; the node comes back with its old copy that never expires. Its
    /// copy is older than the write that set the expiry, so it reads as absent through
    /// every node, before and after anti-entropy has run.
    @Test("a node that was down when a key expired does not bring it back", .timeLimit(.minutes(3)))
    func expiredKeyStaysGone() async throws {
        let (cluster, ports) = try await Self.cluster(extra: ["--anti-entropy-interval-ms", "200"])
        #expect(try Self.cli(ports[0], ["SET", "expiring", "old value"]) == "OK\n")
        // Every replica holds the value before the third node stops.
        try await waitUntil("every node reads the value") {
            try (0..<3).allSatisfy { try Self.cli(ports[$0], ["GET", "expiring"]) == "old value\n" }
        }
        try await Task.sleep(for: .seconds(1))
        cluster.nodes[2].kill()
        #expect(try Self.cli(ports[0], ["PEXPIRE", "expiring", "700"]) == "1\n")
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try Self.cli(ports[0], ["GET", "expiring"]) == "\n")
        try await offCooperativePool { try cluster.restart(2) }
        try await offCooperativePool { try cluster.waitUntilFormed() }
        for round in 0..<10 {
            for index in 0..<3 {
                #expect(
                    try Self.cli(ports[index], ["GET", "expiring"]) == "\n", "round \(round), node \(index)")
                #expect(try Self.cli(ports[index], ["EXISTS", "expiring"]) == "0\n")
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(try Self.cli(ports[2], ["DBSIZE"]) == "0\n")
    }

    /// SCAN with small pages through one node while new keys are written and deleted and
    /// a fourth node joins (partitions move between nodes): every key that existed
    /// throughout the scan is returned.
    @Test(
        "SCAN under concurrent writes and a join returns every key that existed throughout",
        .timeLimit(.minutes(5)))
    func scanSurvivesALayoutChange() async throws {
        let (cluster, ports) = try await Self.cluster()
        let service = try await HTTPKeyValueService(host: "127.0.0.1", port: cluster.httpPorts[0])
        defer { Task { await service.close() } }
        let base = (0..<600).map { String(format: "base:%04d", $0) }
        for start in stride(from: 0, to: base.count, by: 100) {
            let pairs = base[start..<start + 100].flatMap { [$0, "v"] }
            #expect(try Self.cli(ports[0], ["MSET"] + pairs) == "OK\n")
        }
        let table = try TableName(namespace: "redis", table: "db0")
        let churn = Task {
            var written = 0
            while !Task.isCancelled {
                let key = RowKey(table: table, parts: [.bytes(Array("churn:\(written)".utf8))])
                _ = try? await service.put(key, value: RowValue(bytes: [1]), options: WriteOptions())
                if written % 3 == 0 { _ = try? await service.delete(key, options: WriteOptions()) }
                written += 1
                try? await Task.sleep(for: .milliseconds(5))
            }
            return written
        }
        let respPort = try FreePorts.take(1)[0]
        let (joiner, joinerID) = try await ElasticClusterTests.joiner(
            service, seedPort: cluster.httpPorts[0], extra: ["--resp-port", String(respPort)])
        defer { joiner.kill() }
        var seen = Set<String>()
        var cursor = "0"
        var pages = 0
        repeat {
            let lines = try Self.cli(ports[1], ["SCAN", cursor, "COUNT", "25"]).split(separator: "\n").map(
                String.init)
            cursor = lines.first ?? "0"
            seen.formUnion(lines.dropFirst())
            pages += 1
            if pages == 3 {
                try await ElasticClusterTests.commit(
                    [LayoutChangeRequest(change: "join", node: joinerID.description)], through: service)
            }
            // Small pages while partitions move, so the scan spans the handoff.
            try await Task.sleep(for: .milliseconds(30))
        } while cursor != "0"
        churn.cancel()
        let churned = await churn.value
        let missing = base.filter { !seen.contains($0) }
        #expect(
            missing.isEmpty,
            "\(missing.count) keys that existed throughout were not returned: \(missing.prefix(10))")
        #expect(pages > 20, "the scan took \(pages) pages")
        #expect(churned > 10)
        _ = try await ElasticClusterTests.waitForTransfers(service, seconds: 120)
        // The joined node serves the same keys through its own listener.
        #expect(try Self.cli(respPort, ["GET", "base:0042"]) == "v\n")
    }

    /// Garbage, truncated commands and declared lengths far past the limits never crash
    /// the node nor make it hold what it was promised: each such connection gets Redis's
    /// protocol error and is closed, and the node keeps serving.
    @Test("arbitrary and oversized input to the listener", .timeLimit(.minutes(3)))
    func hostileInput() async throws {
        let port = try FreePorts.take(1)[0]
        let server = try ServerProcess(arguments: ["--resp-port", String(port)])
        defer { _ = server.terminate() }
        #expect(try Self.cli(port, ["PING"]) == "PONG\n")
        let pid = try #require(server.child?.pid)
        let before = Files.residentKiB(pid)
        // A SET that the node applies on the event loop, followed in its packet by bytes
        // that are not RESP: its reply comes first, then the protocol error.
        let mixed = try RawSocket(port: port)
        mixed.send("PING\r\n")
        #expect(mixed.readSome(timeout: 5) == "+PONG\r\n")
        mixed.send("SET mixed 1\r\n*1\r\n:1\r\n")
        let mixedAnswer = mixed.readAll(timeout: 2)
        #expect(mixedAnswer.hasPrefix("+OK\r\n-ERR Protocol error"), "\(mixedAnswer.prefix(80))")
        for (request, reply) in [
            ("*1\r\n$99999999999\r\n", "-ERR Protocol error: invalid bulk length"),
            ("*99999999\r\n", "-ERR Protocol error: invalid multibulk length"),
            ("*1\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'"),
            ("GET \"unbalanced\r\n", "-ERR Protocol error: unbalanced quotes in request"),
            (String(repeating: "x", count: 70_000), "-ERR Protocol error: too big inline request"),
        ] {
            let socket = try RawSocket(port: port)
            socket.send(request)
            let answer = socket.readAll(timeout: 2)
            #expect(answer.hasPrefix(reply), "\(request.prefix(40)): \(answer.prefix(80))")
        }
        // A client that declares a 16 MiB argument and sends a little of it holds no more
        // than it sent; many such clients do not add up to their declarations.
        var sockets: [RawSocket] = []
        for _ in 0..<50 {
            let socket = try RawSocket(port: port)
            socket.send("*2\r\n$3\r\nGET\r\n$16777216\r\n" + String(repeating: "a", count: 1000))
            sockets.append(socket)
        }
        var generator = SplitMix64(seed: 7)
        for round in 0..<200 {
            let socket = try RawSocket(port: port)
            let bytes = (0..<Int(generator.next() % 4096)).map { _ in
                UInt8(truncatingIfNeeded: generator.next())
            }
            // Every other connection, once admitted, sends SETs of distinct keys, which
            // the node starts on the event loop, with the garbage behind them.
            if round % 2 == 1 {
                socket.send("PING\r\n")
                #expect(socket.readSome(timeout: 5) == "+PONG\r\n")
                socket.send((0..<(round % 5)).map { "SET fuzz\(round)-\($0) v\r\n" }.joined())
            }
            socket.send(String(decoding: bytes, as: UTF8.self))
            _ = socket.readSome(timeout: 0.01)
        }
        // A client that pipelines reads of a 1 MiB value and never reads the replies
        // stops being read once 32 are pending: the node does not hold 2,000 of them.
        let big = String(repeating: "b", count: 1 << 20)
        let writer = try RawSocket(port: port)
        writer.send("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$\(big.utf8.count)\r\n\(big)\r\n")
        #expect(writer.readSome(timeout: 5).hasPrefix("+OK"))
        let idle = try RawSocket(port: port, receiveBuffer: 4096)
        let flood = String(repeating: "GET big\r\n", count: 2000)
        // 18,000 bytes: the kernel takes them whole, whatever the node does with them.
        idle.send(flood)
        try await Task.sleep(for: .seconds(3))
        #expect(try Self.cli(port, ["PING"]) == "PONG\n")
        #expect(try Self.cli(port, ["SET", "still", "here"]) == "OK\n")
        let grown = Files.residentKiB(pid) - before
        #expect(grown < 160 * 1024, "the node's memory grew by \(grown) KiB")
        sockets.removeAll()
        _ = idle
    }

    /// Pipelined commands on different keys run side by side, but a command sees every
    /// earlier command of its connection on the same key, and a command that changes the
    /// connection (SELECT) sees everything before it and is seen by everything after.
    @Test("pipelined commands keep Redis's order")
    func pipelinedOrder() async throws {
        let port = try FreePorts.take(1)[0]
        let server = try ServerProcess(arguments: ["--resp-port", String(port)])
        defer { _ = server.terminate() }
        let socket = try RawSocket(port: port)
        var commands = "SET a 1\r\nSELECT 1\r\nGET a\r\nSELECT 0\r\nGET a\r\n"
        var expected = "+OK\r\n+OK\r\n$-1\r\n+OK\r\n$1\r\n1\r\n"
        for index in 1...100 {
            commands += "INCR counter\r\nSET k\(index % 7) v\(index)\r\nGET k\(index % 7)\r\n"
            expected += ":\(index)\r\n+OK\r\n$\("v\(index)".utf8.count)\r\nv\(index)\r\n"
        }
        commands += "DEL counter\r\nGET counter\r\nQUIT\r\n"
        expected += ":1\r\n$-1\r\n+OK\r\n"
        socket.send(commands)
        let replies = socket.readAll(timeout: 10)
        #expect(replies == expected, "\(replies.prefix(300))")
        // On a node of its own those GETs were answered where they arrived, outside the
        // session, and still each saw the SET before it.
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        #expect(try await MetricsTests.scrape(connection).value("kv_reads_answered_locally_total") >= 100)
        // A SET sent alone, as a client that waits for each reply sends it, is applied
        // where it arrives, and the next command sees it.
        let alone = try RawSocket(port: port)
        // Once the connection is admitted: before, every command takes the ordinary path.
        alone.send("PING\r\n")
        #expect(alone.readSome(timeout: 5) == "+PONG\r\n")
        for index in 1...20 {
            alone.send("SET alone\(index % 3) w\(index)\r\n")
            #expect(alone.readSome(timeout: 5) == "+OK\r\n")
            alone.send("GET alone\(index % 3)\r\n")
            #expect(alone.readSome(timeout: 5) == "$\("w\(index)".utf8.count)\r\nw\(index)\r\n")
        }
        #expect(try await MetricsTests.scrape(connection).value("kv_writes_applied_locally_total") >= 20)
        await connection.close()
        // A reply is written in the protocol of its command's time, and after QUIT
        // nothing more is read.
        let hello = try RawSocket(port: port)
        hello.send("GET missing\r\nHELLO 3\r\nGET missing\r\nQUIT\r\nSET after-quit 1\r\n")
        let answers = hello.readAll(timeout: 5)
        #expect(answers.hasPrefix("$-1\r\n%7\r\n") && answers.hasSuffix("_\r\n+OK\r\n"), "\(answers)")
        #expect(try Self.cli(port, ["EXISTS", "after-quit"]) == "0\n")
        #expect(
            try Self.cli(port, ["SETRANGE", "k", "9223372036854775807", "x"]).hasPrefix(
                "ERR string exceeds maximum allowed size"))
        // A database's table dropped over HTTP is created again on next use.
        #expect(try Files.curlStatus(["-X", "DELETE", "\(server.url)/v1/_tables/redis/db0"]) == 204)
        #expect(try Self.cli(port, ["GET", "k1"]) == "\n")
        #expect(try Self.cli(port, ["SET", "k1", "again"]) == "OK\n")
        #expect(try Self.cli(port, ["GET", "k1"]) == "again\n")
    }

    @Test("with access control on, commands need AUTH with a cluster token")
    func authentication() async throws {
        let port = try FreePorts.take(1)[0]
        let token = "resp-test-admin-token-0123456789abcdef"
        let server = try ServerProcess(
            arguments: ["--resp-port", String(port)], environment: ["KV_ADMIN_TOKEN": token])
        defer { _ = server.terminate() }
        #expect(try Self.cli(port, ["GET", "k"]).hasPrefix("NOAUTH Authentication required."))
        #expect(try Self.cli(port, ["PING"]).hasPrefix("NOAUTH"))
        // redis-cli reports a refused AUTH on its standard error and sends the command
        // anyway, unauthenticated.
        #expect(
            try Self.cli(port, ["--no-auth-warning", "-a", "wrong-token", "GET", "k"]).hasPrefix("NOAUTH"))
        let socket = try RawSocket(port: port)
        socket.send("AUTH wrong-token\r\nAUTH default \(token)\r\nGET k\r\n")
        let replies = socket.readAll(timeout: 1)
        #expect(
            replies == "-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n$-1\r\n",
            "\(replies)")
        #expect(try Self.cli(port, ["--no-auth-warning", "-a", token, "SET", "k", "v"]) == "OK\n")
        #expect(
            try Self.cli(port, ["--no-auth-warning", "--user", "default", "--pass", token, "GET", "k"])
                == "v\n")
    }

    func waitUntil(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) async throws {
        if await !eventually(within: seconds, condition) { Issue.record("timed out waiting until \(what)") }
    }
}
