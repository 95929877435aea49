import Foundation
import KVClient
import KVCore
import KVTestSupport
import Testing

/// The store's nodes on each database engine, as real processes: the replication cases
/// of ``ClusterProcessTests`` over SQLite, PostgreSQL, MariaDB and Redis, a restart of
/// the database server under load, and a cluster mixing every engine.
@Suite("clusters on database engines", .serialized)
struct DatabaseEngineClusterTests {
    enum Engine: String, CaseIterable, Sendable, CustomStringConvertible {
        case sqlite, postgres, mariadb, redis
        var description: String { rawValue }

        var server: DatabaseServers.Kind? {
            switch self {
            case .sqlite: nil
            case .postgres: .postgres
            case .mariadb: .mariadb
            case .redis: .redis
            }
        }

        /// The flags of one node: its own table (or key prefix) on the shared server.
        func arguments(table: String) throws -> [String] {
            guard let server else { return ["--engine", rawValue] }
            return [
                "--engine", rawValue, "--storage-url", try DatabaseServers.url(server) + "?table=\(table)",
            ]
        }
    }

    static let arguments = ["--partitions", "32", "--replica-timeout-ms", "2000"]
    // The table and row helpers of the same cases on RocksDB nodes.
    static let items = ClusterProcessTests.items
    static func key(_ text: String) -> RowKey { ClusterProcessTests.key(text) }
    static func text(_ value: String) -> RowValue { ClusterProcessTests.text(value) }
    static func values(_ result: ReadResult) -> [String] { ClusterProcessTests.values(result) }

    static func cluster(_ engines: [Engine], extra: [String] = [], run: String = UUID().uuidString)
        async throws
        -> LocalCluster
    {
        let run = run.prefix(8).lowercased()
        let perNode = try engines.enumerated().map { index, engine in
            try engine.arguments(table: "n\(run)_\(index)")
        }
        return try await offCooperativePool {
            try LocalCluster(
                count: engines.count, arguments: Self.arguments + extra, perNodeArguments: perNode)
        }
    }

    static func stop(_ cluster: LocalCluster) async throws {
        try await offCooperativePool { for node in cluster.nodes { node.kill() } }
    }

    @Test(
        "writes through any node, siblings, kill -9 under load with hints handed back",
        .timeLimit(.minutes(3)), arguments: Engine.allCases)
    func replication(engine: Engine) async throws {
        // Anti-entropy is off, so only the hints can make the restarted node whole.
        let cluster = try await Self.cluster(
            [engine, engine, engine], extra: ["--anti-entropy-interval-ms", "0"])
        let clients = [
            try await HTTPKeyValueService(url: cluster.url(0)),
            try await HTTPKeyValueService(url: cluster.url(1)),
            try await HTTPKeyValueService(url: cluster.url(2)),
        ]
        _ = try await clients[1].createTable(
            TableDescriptor(name: Self.items, schema: try KeySchema([.string])))
        // Writes through one node read back through the others.
        for index in 0..<20 {
            _ = try await clients[index % 3].put(
                Self.key("k\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        for index in 0..<20 {
            #expect(
                Self.values(try await clients[(index + 1) % 3].get(Self.key("k\(index)"))) == ["v\(index)"])
        }
        // Blind writes through two nodes are siblings on every replica; a write with the
        // context resolves them.
        let cart = Self.key("cart")
        _ = try await clients[0].put(cart, value: Self.text("from 0"), options: WriteOptions())
        _ = try await clients[1].put(cart, value: Self.text("from 1"), options: WriteOptions())
        let all = ReadOptions(quorum: QuorumOverrides(r: 3))
        let read = try await clients[2].get(cart, options: all)
        #expect(Self.values(read) == ["from 0", "from 1"])
        _ = try await clients[2].put(
            cart, value: Self.text("merged"), options: WriteOptions(context: read.context))
        #expect(Self.values(try await clients[0].get(cart, options: all)) == ["merged"])

        // kill -9 of a node under load: every acknowledged write stays readable, and
        // the hints the coordinators kept bring the node back to whole.
        let writer = Task {
            var acknowledged: [Int] = []
            for index in 100..<260 {
                if (try? await clients[0].put(
                    Self.key("k\(index)"), value: Self.text("v\(index)"), options: WriteOptions())) != nil
                {
                    acknowledged.append(index)
                }
            }
            return acknowledged
        }
        try await Task.sleep(for: .milliseconds(150))
        try await offCooperativePool { cluster.nodes[2].kill() }
        let acknowledged = await writer.value
        #expect(acknowledged.count >= 100, "writes went on with one node down: \(acknowledged.count)")
        try await offCooperativePool {
            try cluster.restart(2)
            try cluster.waitUntilFormed()
        }
        for index in acknowledged {
            #expect(Self.values(try await clients[1].get(Self.key("k\(index)"))) == ["v\(index)"])
        }
        // Through the restarted node with r=1 a scan reads its own replicas: whole once
        // the hints are back.
        let restarted = try await HTTPKeyValueService(url: cluster.url(2))
        let expected = 20 + 1 + acknowledged.count
        let deadline = ContinuousClock.now + .seconds(40)
        var seen = 0
        while ContinuousClock.now < deadline {
            seen =
                (try? await restarted.scan(ScanRequest(table: Self.items, limit: 1000, r: 1)).rows.count) ?? 0
            if seen >= expected { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(seen == expected, "the restarted \(engine) node holds every row")
        await restarted.close()
        for client in clients { await client.close() }
        try await Self.stop(cluster)
    }

    @Test(
        "a restart of the database server under load gives clean errors, then recovery, and loses no acknowledged write",
        .timeLimit(.minutes(3)), arguments: [Engine.postgres, .mariadb, .redis])
    func databaseRestart(engine: Engine) async throws {
        let cluster = try await Self.cluster([engine, engine, engine])
        let client = try await HTTPKeyValueService(url: cluster.url(0))
        _ = try await client.createTable(TableDescriptor(name: Self.items, schema: try KeySchema([.string])))
        let writer = Task {
            var acknowledged: [Int] = []
            var failures: [KVError] = []
            for index in 0..<300 {
                do {
                    _ = try await client.put(
                        Self.key("r\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
                    acknowledged.append(index)
                } catch let error as KVError {
                    failures.append(error)
                } catch {
                    Issue.record("not a KVError: \(error)")
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
            return (acknowledged, failures)
        }
        try await Task.sleep(for: .milliseconds(400))
        _ = try await offCooperativePool { try DatabaseServers.restart(engine.server!) }
        print("\(engine): the database server was restarted")
        let (acknowledged, failures) = await writer.value
        print(
            "\(engine): \(acknowledged.count) writes acknowledged, \(failures.count) refused during the restart"
        )
        // Refusals are clean errors of the store, never a dropped connection.
        for failure in failures {
            #expect(
                [KVError.Code.storageIO, .quorumUnavailable, .writeIndeterminate, .unavailable].contains(
                    failure.code), "unexpected error \(failure)")
        }
        // The nodes came back by themselves: new writes succeed, and every
        // acknowledged write is there.
        _ = try await client.put(Self.key("after"), value: Self.text("ok"), options: WriteOptions())
        for index in acknowledged {
            #expect(Self.values(try await client.get(Self.key("r\(index)"))) == ["v\(index)"])
        }
        await client.close()
        try await Self.stop(cluster)
    }

    /// Deletes a stopped node's data rows and anti-entropy entries (keyspaces 0 and 3)
    /// behind its back, with the database's own client; returns how many rows (Redis:
    /// keys) went.
    static func loseRows(of engine: Engine, table: String, node: ServerProcess) async throws -> Int {
        let (executable, arguments): (String, [String])
        switch engine {
        case .postgres:
            (executable, arguments) = (
                "/usr/bin/psql",
                [
                    try DatabaseServers.url(.postgres), "-qtA", "-c",
                    "WITH gone AS (DELETE FROM \(table) WHERE ks IN (0, 3) RETURNING 1) SELECT count(*) FROM gone",
                ]
            )
        case .mariadb:
            let url = try #require(URLComponents(string: try DatabaseServers.url(.mariadb)))
            (executable, arguments) = (
                "/usr/bin/mariadb",
                [
                    // The server's own settings only, not a machine's option files.
                    "--no-defaults",
                    "-h", url.host ?? "127.0.0.1", "-P", String(url.port ?? 3306), "-u", url.user ?? "root",
                    "--password=\(url.password ?? "")", String(url.path.dropFirst()), "-N", "-B", "-e",
                    "DELETE FROM \(table) WHERE ks IN (0, 3); SELECT ROW_COUNT()",
                ]
            )
        case .redis:
            (executable, arguments) = (
                "/usr/bin/redis-cli",
                ["-u", try DatabaseServers.url(.redis), "DEL"]
                    + [0, 3].flatMap { ["\(table):\($0):z", "\(table):\($0):h"] }
            )
        case .sqlite:
            (executable, arguments) = (
                "/usr/bin/sqlite3",
                [
                    node.dataDirectory + "/sqlite/kv.sqlite",
                    "DELETE FROM kv WHERE ks IN (0, 3); SELECT changes();",
                ]
            )
        }
        let (status, output) = try await offCooperativePool {
            let child = try ChildProcess(executable: executable, arguments: arguments)
            let output = child.finishReading()
            return (child.wait(), String(decoding: output, as: UTF8.self))
        }
        #expect(status.exitedNormally && status.code == 0, "\(executable) failed: \(output)")
        let lines = output.split(whereSeparator: \.isNewline)
        return lines.last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0
    }

    @Test(
        "anti-entropy restores the rows a node lost from its database while it was down",
        .timeLimit(.minutes(3)), arguments: Engine.allCases)
    func antiEntropyRepair(engine: Engine) async throws {
        let run = UUID().uuidString.prefix(8).lowercased()
        let cluster = try await Self.cluster(
            [engine, engine, engine], extra: ["--anti-entropy-interval-ms", "300"], run: String(run))
        let client = try await HTTPKeyValueService(url: cluster.url(0))
        _ = try await client.createTable(TableDescriptor(name: Self.items, schema: try KeySchema([.string])))
        for index in 0..<30 {
            _ = try await client.put(
                Self.key("a\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        // Node 2 goes down and its data rows and anti-entropy entries vanish from its
        // database behind its back (an operator's mistake, a restored old dump). Nothing
        // is written meanwhile, so no hint exists: only anti-entropy can bring them back.
        try await offCooperativePool { cluster.nodes[2].kill() }
        let lost = try await Self.loseRows(of: engine, table: "n\(run)_2", node: cluster.nodes[2])
        #expect(lost > 0, "nothing was deleted from node 2's \(engine) storage")
        try await offCooperativePool {
            try cluster.restart(2)
            try cluster.waitUntilFormed()
        }
        let restarted = try await HTTPKeyValueService(url: cluster.url(2))
        let deadline = ContinuousClock.now + .seconds(60)
        var seen = 0
        var first: Int?
        while ContinuousClock.now < deadline {
            seen =
                (try? await restarted.scan(ScanRequest(table: Self.items, limit: 1000, r: 1)).rows.count) ?? 0
            if first == nil {
                print("\(engine) anti-entropy: node 2 held \(seen) of 30 rows after its restart")
            }
            first = first ?? seen
            if seen == 30 { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(seen == 30, "anti-entropy restored node 2's rows: \(seen) of 30")
        await restarted.close()
        await client.close()
        try await Self.stop(cluster)
    }

    @Test("a cluster with a node on every engine converges", .timeLimit(.minutes(3)))
    func mixedEngines() async throws {
        let run = UUID().uuidString.prefix(8).lowercased()
        let perNode: [[String]] =
            try [["--engine", "rocksdb"]]
            + Engine.allCases.map { try $0.arguments(table: "mixed\(run)") }
        let cluster = try await offCooperativePool {
            try LocalCluster(count: perNode.count, arguments: Self.arguments, perNodeArguments: perNode)
        }
        var clients: [HTTPKeyValueService] = []
        for index in perNode.indices {
            clients.append(try await HTTPKeyValueService(url: cluster.url(index)))
        }
        _ = try await clients[0].createTable(
            TableDescriptor(name: Self.items, schema: try KeySchema([.string])))
        for index in 0..<50 {
            _ = try await clients[index % clients.count].put(
                Self.key("m\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        // Every node serves every row at R=N, and its own replicas (r=1 scans) hold the
        // rows of the partitions it replicates.
        let all = ReadOptions(quorum: QuorumOverrides(r: 3))
        for client in clients {
            for index in 0..<50 {
                #expect(
                    Self.values(try await client.get(Self.key("m\(index)"), options: all)) == ["v\(index)"])
            }
        }
        let total = try await clients[4].scan(ScanRequest(table: Self.items, limit: 1000, r: 3)).rows.count
        #expect(total == 50)
        for client in clients { await client.close() }
        try await Self.stop(cluster)
    }
}
