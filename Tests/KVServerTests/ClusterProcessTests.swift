import Foundation
import KVClient
import KVCore
import KVTestSupport
import NIOHTTP1
import Testing

/// Real `kv server` processes on 127.0.0.1 forming one cluster with N=3, R=W=2 (the
/// table defaults): replication, failures, siblings across nodes, read repair,
/// idempotent retries, cluster scans and joins.
@Suite("cluster of real processes", .serialized)
struct ClusterProcessTests {
    static let arguments = ["--partitions", "64", "--replica-timeout-ms", "2000"]

    static func client(_ cluster: LocalCluster, _ index: Int) async throws -> HTTPKeyValueService {
        try await HTTPKeyValueService(url: cluster.url(index))
    }

    static let items = try! TableName(namespace: "test", table: "items")

    static func key(_ text: String) -> RowKey { RowKey(table: items, parts: [.string(text)]) }

    static func text(_ value: String) -> RowValue {
        RowValue(bytes: Array(value.utf8), contentType: "text/plain")
    }

    static func values(_ result: ReadResult) -> [String] {
        result.siblings.map { String(decoding: $0.value?.bytes ?? [], as: UTF8.self) }.sorted()
    }

    /// The hints each of the nodes `indexes` holds (`hints.pending`, -1 when unknown).
    static func pendingHints(_ cluster: LocalCluster, _ indexes: Range<Int>) async throws -> [Int64] {
        var values: [Int64] = []
        for index in indexes {
            let client = try await Self.client(cluster, index)
            values.append(try await client.clusterStatus().counters["hints.pending"] ?? -1)
            await client.close()
        }
        return values
    }

    static func createTable(_ service: HTTPKeyValueService) async throws {
        _ = try await service.createTable(TableDescriptor(name: items, schema: try KeySchema([.string])))
    }

    @Test(
        "writes through one node are readable through the others; one node down is survived",
        .timeLimit(.minutes(3)))
    func replicationAndOneFailure() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let a = try await Self.client(cluster, 0)
        let b = try await Self.client(cluster, 1)
        let c = try await Self.client(cluster, 2)
        // The table is cluster metadata: created through B, used at once through C and A.
        try await Self.createTable(b)
        for index in 0..<30 {
            _ = try await c.put(Self.key("k\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        for index in 0..<30 {
            #expect(Self.values(try await a.get(Self.key("k\(index)"))) == ["v\(index)"])
            #expect(Self.values(try await b.get(Self.key("k\(index)"))) == ["v\(index)"])
        }
        let status = try await a.clusterStatus()
        #expect(status.members.count == 3)
        #expect(status.layoutVersion >= 1)
        let replicas = status.members.map(\.replicas)
        let primaries = status.members.map(\.primaries)
        print(
            "layout v\(status.layoutVersion): replicas per node \(replicas), primaries per node \(primaries)")
        #expect(replicas == [64, 64, 64])
        #expect(primaries.reduce(0, +) == 64)
        #expect(primaries.allSatisfy { $0 >= 10 }, "primaries are spread: \(primaries)")

        try await offCooperativePool { cluster.nodes[2].kill() }
        for index in 30..<60 {
            _ = try await a.put(Self.key("k\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        for index in 0..<60 {
            #expect(Self.values(try await b.get(Self.key("k\(index)"))) == ["v\(index)"])
        }
        // Asking for all three acknowledgements cannot succeed now, and says so.
        await #expect(throws: KVError.self) {
            _ = try await a.put(
                Self.key("w3"), value: Self.text("x"), options: WriteOptions(quorum: QuorumOverrides(w: 3)))
        }
        await a.close()
        await b.close()
        await c.close()
    }

    @Test("with two nodes down, W=2 writes fail fast with quorum.unavailable", .timeLimit(.minutes(3)))
    func twoFailuresRefuseQuorum() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let a = try await Self.client(cluster, 0)
        try await Self.createTable(a)
        _ = try await a.put(Self.key("before"), value: Self.text("old"), options: WriteOptions())
        try await offCooperativePool {
            cluster.nodes[1].kill()
            cluster.nodes[2].kill()
        }
        // Each failure comes well before the 2 s replica timeout: the coordinator knows
        // the replicas are down (their connections are refused) and does not wait.
        var started = ContinuousClock.now
        do {
            _ = try await a.put(Self.key("after"), value: Self.text("new"), options: WriteOptions())
            Issue.record("a W=2 write succeeded with one of three replicas")
        } catch {
            #expect(error.code == .quorumUnavailable)
            #expect(error.message.contains("needs w=2"), "the error says what was needed: \(error.message)")
        }
        #expect(
            ContinuousClock.now - started < .seconds(1),
            "the write failed after \(ContinuousClock.now - started)")
        started = ContinuousClock.now
        do {
            _ = try await a.get(Self.key("before"))
            Issue.record("an R=2 read succeeded with one of three replicas")
        } catch {
            #expect(error.code == .quorumUnavailable)
        }
        #expect(
            ContinuousClock.now - started < .seconds(1),
            "the read failed after \(ContinuousClock.now - started)")
        // An explicit R=1 still reads the surviving copy; W=1 still writes.
        #expect(
            Self.values(
                try await a.get(Self.key("before"), options: ReadOptions(quorum: QuorumOverrides(r: 1)))) == [
                    "old"
                ])
        _ = try await a.put(
            Self.key("w1"), value: Self.text("one"), options: WriteOptions(quorum: QuorumOverrides(w: 1)))
        await a.close()
    }

    @Test("blind writes through different nodes are siblings everywhere; a write with context resolves them")
    func siblingsAcrossNodes() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let clients = [
            try await Self.client(cluster, 0), try await Self.client(cluster, 1),
            try await Self.client(cluster, 2),
        ]
        try await Self.createTable(clients[0])
        let key = Self.key("cart")
        await withTaskGroup(of: Void.self) { group in
            for (index, client) in clients.prefix(2).enumerated() {
                group.addTask {
                    _ = try? await client.put(key, value: Self.text("from \(index)"), options: WriteOptions())
                }
            }
        }
        let all = ReadOptions(quorum: QuorumOverrides(r: 3))
        for client in clients {
            #expect(Self.values(try await client.get(key, options: all)) == ["from 0", "from 1"])
        }
        let read = try await clients[2].get(key)
        _ = try await clients[2].put(
            key, value: Self.text("merged"), options: WriteOptions(context: read.context))
        for client in clients {
            #expect(Self.values(try await client.get(key, options: all)) == ["merged"])
        }
        for client in clients { await client.close() }
    }

    @Test(
        "writes for a down primary are kept as hints, survive the stand-in's restart and are handed back",
        .timeLimit(.minutes(3)))
    func hintedHandoff() async throws {
        // Four nodes, N=3: every partition has a stand-in. Anti-entropy is off, so only
        // the hints can bring the down node's rows back.
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 4, arguments: Self.arguments + ["--anti-entropy-interval-ms", "0"])
        }
        let a = try await Self.client(cluster, 0)
        try await Self.createTable(a)
        try await offCooperativePool { cluster.nodes[3].kill() }
        for index in 0..<40 {
            _ = try await a.put(Self.key("h\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        func pending() async throws -> [Int64] { try await Self.pendingHints(cluster, 0..<3) }
        let held = try await pending()
        #expect(held.reduce(0, +) >= 20, "stand-ins hold hints for the down node: \(held)")
        // A stand-in that restarts still has its hints.
        let holder = held.firstIndex { $0 > 0 }!
        try await offCooperativePool {
            cluster.nodes[holder].kill()
            try cluster.restart(holder)
        }
        #expect(try await pending()[holder] == held[holder])
        // The primary returns: every hint is handed back and removed.
        try await offCooperativePool { try cluster.restart(3) }
        let deadline = ContinuousClock.now + .seconds(30)
        while try await pending().reduce(0, +) > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await pending() == [0, 0, 0])
        // A scan through the returned node with r=1 reads its own replicas for the
        // partitions it holds: without the hints, its rows would be missing.
        let d = try await Self.client(cluster, 3)
        let page = try await d.scan(ScanRequest(table: Self.items, limit: 1000, r: 1))
        #expect(page.rows.count == 40)
        let status = try await d.clusterStatus()
        #expect(status.members.allSatisfy { $0.state == "up" || $0.state == "self" })
        await a.close()
        await d.close()
    }

    @Test(
        "with no node to stand in, the coordinator keeps the hints and a returning replica is whole in seconds",
        .timeLimit(.minutes(3)))
    func hintsWithoutStandIns() async throws {
        // Three nodes, N=3: every node is a primary of every partition, so nobody can
        // stand in for a down one. Anti-entropy is off: only hints can bring the rows back.
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments + ["--anti-entropy-interval-ms", "0"])
        }
        let a = try await Self.client(cluster, 0)
        try await Self.createTable(a)
        try await offCooperativePool { cluster.nodes[2].kill() }
        for index in 0..<100 {
            _ = try await a.put(Self.key("m\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        func pending() async throws -> [Int64] { try await Self.pendingHints(cluster, 0..<2) }
        #expect(try await pending().reduce(0, +) >= 100, "the coordinator keeps a hint for every write")
        try await offCooperativePool {
            try cluster.restart(2)
            try cluster.waitUntilFormed()
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while try await pending().reduce(0, +) > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await pending() == [0, 0])
        // With A and B gone, a scan through C with r=1 reads only C's own copies.
        await a.close()
        try await offCooperativePool {
            cluster.nodes[0].kill()
            cluster.nodes[1].kill()
        }
        let c = try await Self.client(cluster, 2)
        let page = try await c.scan(ScanRequest(table: Self.items, limit: 1000, r: 1))
        #expect(page.rows.count == 100)
        await c.close()
    }

    @Test(
        "before its cluster has formed, a node answers data requests and readiness with 503 server.unavailable"
    )
    func unformedNodeIsUnavailable() async throws {
        // Two members are expected and only one runs: the cluster never forms.
        let ports = try FreePorts.take(3)
        let server = try await offCooperativePool {
            try ServerProcess(
                arguments: [
                    "--peer-port", String(ports[1]), "--peers", "127.0.0.1:\(ports[0]),127.0.0.1:\(ports[2])",
                ],
                port: ports[0])
        }
        let client = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        for (method, target) in [
            (HTTPMethod.GET, "/v1/test/items/a"), (.PUT, "/v1/test/items/a"), (.DELETE, "/v1/test/items/a"),
            (.GET, "/v1/_scan/test/items"), (.GET, "/v1/_counter/test/items/a"),
            (.POST, "/v1/_counter/test/items/a"),
            (.GET, "/v1/_tables/test/items"), (.GET, "/v1/_tables/test"), (.GET, "/v1/_namespaces"),
        ] {
            let response = try await client.send(
                method, target, headers: ["content-type": "text/plain"],
                body: method == .GET ? nil : Array("1".utf8))
            let code = try? JSONDecoder().decode(WireError.self, from: Data(response.body)).code
            #expect(response.status == 503, "\(method) \(target) answered \(response.status)")
            #expect(code == "server.unavailable", "\(method) \(target) answered \(code ?? "no code")")
        }
        // Readiness says so too, so a client that waits for /health is not refused after;
        // liveness only says the process answers.
        for target in ["/health", "/health/ready"] {
            let response = try await client.send(.GET, target)
            let code = try? JSONDecoder().decode(WireError.self, from: Data(response.body)).code
            #expect(response.status == 503 && code == "server.unavailable", "\(target): \(response.status)")
        }
        #expect(try await client.send(.GET, "/health/live").status == 200)
        await client.close()
        server.kill()
    }

    @Test("a read repairs a stale replica", .timeLimit(.minutes(3)))
    func readRepair() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let a = try await Self.client(cluster, 0)
        try await Self.createTable(a)
        _ = try await a.put(Self.key("row"), value: Self.text("first"), options: WriteOptions())
        try await offCooperativePool { cluster.nodes[2].kill() }
        _ = try await a.put(
            Self.key("row"), value: Self.text("second"),
            options: WriteOptions(context: try await a.get(Self.key("row")).context))
        try await offCooperativePool {
            try cluster.restart(2)
            try cluster.waitUntilFormed()
        }
        // C holds "first". A read that waits for every replica sees the difference and
        // sends C the merge.
        #expect(
            Self.values(try await a.get(Self.key("row"), options: ReadOptions(quorum: QuorumOverrides(r: 3))))
                == ["second"])
        // C holds the merge once it stored the read's repair, or A's hint for the write
        // (A kept one while C was down, and may deliver it first, and then the read finds
        // nothing to repair). Whichever came first, every repair A counts as sent (only C
        // was behind) is counted as stored by C.
        let merged = await eventually {
            let sent = try Files.counter("reads.repairs_sent", cluster.url(0))
            let applied = try Files.counter("reads.repairs_applied", cluster.url(2))
            let hinted = try Files.counter("hints.delivered", cluster.url(0))
            return sent == applied && (applied > 0 || hinted > 0)
        }
        #expect(merged, "C did not store A's read repair or its hint within 30 s")
        print(
            "read repairs sent by A: \((try? Files.counter("reads.repairs_sent", cluster.url(0))) ?? -1), "
                + "applied by C: \((try? Files.counter("reads.repairs_applied", cluster.url(2))) ?? -1); "
                + "hints delivered by A: \((try? Files.counter("hints.delivered", cluster.url(0))) ?? -1)")
        await a.close()
        // With A and B gone, an R=1 read through C answers from C's own copy.
        try await offCooperativePool {
            cluster.nodes[0].kill()
            cluster.nodes[1].kill()
        }
        let c = try await Self.client(cluster, 2)
        #expect(
            Self.values(try await c.get(Self.key("row"), options: ReadOptions(quorum: QuorumOverrides(r: 1))))
                == ["second"])
        await c.close()
    }

    @Test("a retried write with the same request id is applied once, whichever node takes it")
    func idempotentRetries() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let a = try await Self.client(cluster, 0)
        let b = try await Self.client(cluster, 1)
        try await Self.createTable(a)
        // The first attempt reaches every replica (w=3), as a write whose answer was lost
        // may well have; the retries then go through another coordinator and the first.
        _ = try await a.put(
            Self.key("once"), value: Self.text("paid"),
            options: WriteOptions(quorum: QuorumOverrides(w: 3), requestID: "order-42"))
        let retried = WriteOptions(requestID: "order-42")
        _ = try await b.put(Self.key("once"), value: Self.text("paid"), options: retried)
        _ = try await a.put(Self.key("once"), value: Self.text("paid"), options: retried)
        #expect(
            try await a.get(Self.key("once"), options: ReadOptions(quorum: QuorumOverrides(r: 3))).siblings
                .count == 1)
        // Without an id, the same blind write twice is two concurrent versions.
        _ = try await a.put(Self.key("twice"), value: Self.text("paid"), options: WriteOptions())
        _ = try await b.put(Self.key("twice"), value: Self.text("paid"), options: WriteOptions())
        #expect(
            try await a.get(Self.key("twice"), options: ReadOptions(quorum: QuorumOverrides(r: 3))).siblings
                .count == 2)
        // Counters too.
        let counter = RowKey(table: Self.items, parts: [.string("visits")])
        _ = try await a.increment(
            counter, by: 5, options: WriteOptions(quorum: QuorumOverrides(w: 3), requestID: "visit-1"))
        _ = try await b.increment(counter, by: 5, options: WriteOptions(requestID: "visit-1"))
        #expect(try await a.counter(counter, options: ReadOptions(quorum: QuorumOverrides(r: 3))) == 5)
        await a.close()
        await b.close()
    }

    @Test(
        "a scan across partitions pages through every row once, in key order, forward and reverse, with r=1 and r=2"
    )
    func clusterScan() async throws {
        // Two replicas per partition on three nodes: no node holds every partition, so
        // every scan gathers pages from other nodes and merges them.
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments + ["--replication-factor", "2"])
        }
        let a = try await Self.client(cluster, 0)
        let c = try await Self.client(cluster, 2)
        try await Self.createTable(a)
        let status = try await c.clusterStatus()
        #expect(status.members.allSatisfy { $0.replicas < 64 }, "\(status.members.map(\.replicas))")
        let names = (0..<57).map { String(format: "row-%03d", $0) }
        for name in names {
            _ = try await a.put(Self.key(name), value: Self.text(name), options: WriteOptions())
        }
        _ = try await a.delete(Self.key("row-010"), options: WriteOptions())
        let live = names.filter { $0 != "row-010" }
        for r in [1, 2] {
            for reverse in [false, true] {
                var seen: [String] = []
                var values: [String] = []
                var continuation: String?
                repeat {
                    let page = try await c.scan(
                        ScanRequest(
                            table: Self.items, limit: 7, reverse: reverse, keysOnly: r == 2,
                            continuation: continuation, r: r))
                    #expect(page.rows.count <= 7)
                    for row in page.rows {
                        guard case .string(let text) = row.key[0] else { continue }
                        seen.append(text)
                        values += Self.values(ReadResult(siblings: row.siblings, context: "", etag: ""))
                    }
                    continuation = page.continuation
                } while continuation != nil
                let expected = reverse ? Array(live.reversed()) : live
                #expect(seen == expected, "r=\(r) reverse=\(reverse)")
                // Keys-only pages (asked for with r=2 here) carry no values.
                #expect(values == (r == 2 ? [] : expected), "r=\(r) reverse=\(reverse)")
            }
        }
        await a.close()
        await c.close()
    }

    @Test("clearing or dropping a table through one node empties it everywhere")
    func clearAndDropAcrossNodes() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let a = try await Self.client(cluster, 0)
        let b = try await Self.client(cluster, 1)
        let c = try await Self.client(cluster, 2)
        try await Self.createTable(a)
        _ = try await a.put(Self.key("old"), value: Self.text("v"), options: WriteOptions())
        let staleContext = try await c.get(Self.key("old")).context
        try await b.clearTable(Self.items)
        #expect(try await c.get(Self.key("old")).isAbsent)
        #expect(try await a.scan(ScanRequest(table: Self.items)).rows.isEmpty)
        // A context from before the clear is refused rather than resurrecting anything.
        await #expect(throws: KVError.self) {
            _ = try await a.put(
                Self.key("old"), value: Self.text("x"), options: WriteOptions(context: staleContext))
        }
        _ = try await a.put(Self.key("new"), value: Self.text("v"), options: WriteOptions())
        try await c.dropTable(Self.items)
        await #expect(throws: KVError.self) { _ = try await b.get(Self.key("new")) }
        try await Self.createTable(b)
        #expect(try await a.get(Self.key("new")).isAbsent)
        for client in [a, b, c] { await client.close() }
    }

    @Test(
        "a node started with --join enters the layout once its join is committed, and serves the existing data",
        .timeLimit(.minutes(3)))
    func joinThroughAMember() async throws {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let a = try await Self.client(cluster, 0)
        try await Self.createTable(a)
        for index in 0..<20 {
            _ = try await a.put(Self.key("j\(index)"), value: Self.text("v\(index)"), options: WriteOptions())
        }
        let before = try await a.clusterStatus()
        let ports = try FreePorts.take(2)
        let joiner = try await offCooperativePool {
            try ServerProcess(
                arguments: ["--peer-port", String(ports[1]), "--join", "127.0.0.1:\(cluster.httpPorts[1])"]
                    + Self.arguments,
                port: ports[0])
        }
        let d = try await HTTPKeyValueService(host: "127.0.0.1", port: ports[0])
        // The joiner is a member at once, but the layout places it only once an operator
        // stages its join and commits the plan.
        var joinerID: NodeID?
        let known = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < known, joinerID == nil {
            try await Task.sleep(for: .milliseconds(200))
            joinerID = try? await a.clusterStatus().members.first { $0.state == "joining" }?.nodeID
        }
        let plan = try await a.stageLayoutChange(
            LayoutChangeRequest(change: "join", node: try #require(joinerID).description))
        #expect(plan.proposedVersion == before.layoutVersion + 1)
        _ = try await a.commitLayoutPlan(try #require(plan.id))
        var status = try? await d.clusterStatus()
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline,
            status?.members.count != 4 || status?.members.contains(where: { $0.state == "joining" }) != false
        {
            try await Task.sleep(for: .milliseconds(200))
            status = try? await d.clusterStatus()
        }
        let after = try #require(status)
        #expect(after.members.count == 4)
        #expect(after.layoutVersion == before.layoutVersion + 1)
        let joined = try #require(after.members.first { $0.state == "self" })
        print(
            "after the join: replicas per node \(after.members.map(\.replicas)) (the new node holds \(joined.replicas) of \(64 * 3))"
        )
        #expect((40...56).contains(joined.replicas), "the new node takes about a quarter: \(joined.replicas)")
        for index in 0..<20 {
            #expect(Self.values(try await d.get(Self.key("j\(index)"))) == ["v\(index)"])
        }
        // With four nodes and N=3, the new node holds only some keys: writes of the
        // others are forwarded to a replica, which makes the version.
        for index in 0..<20 {
            _ = try await d.put(Self.key("d\(index)"), value: Self.text("w\(index)"), options: WriteOptions())
        }
        for index in 0..<20 {
            #expect(Self.values(try await a.get(Self.key("d\(index)"))) == ["w\(index)"])
        }
        await d.close()
        await a.close()
        _ = joiner
    }

    @Test("the CSE138 environment (ADDRESS, VIEW, REPL_FACTOR) forms a cluster")
    func cse138Environment() async throws {
        let ports = try FreePorts.take(4)
        let view = "127.0.0.1:\(ports[0]),127.0.0.1:\(ports[1])"
        let nodes = try await offCooperativePool {
            try (0..<2).map { index in
                try ServerProcess(
                    arguments: ["--peer-port", String(ports[2 + index])] + Self.arguments,
                    environment: ["ADDRESS": "127.0.0.1:\(ports[index])", "VIEW": view, "REPL_FACTOR": "2"],
                    port: ports[index])
            }
        }
        let client = try await HTTPKeyValueService(host: "127.0.0.1", port: ports[1])
        var status = try? await client.clusterStatus()
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline, (status?.layoutVersion ?? 0) == 0 {
            try await Task.sleep(for: .milliseconds(100))
            status = try? await client.clusterStatus()
        }
        #expect(status?.replicationFactor == 2)
        #expect(status?.members.count == 2)
        await client.close()
        _ = nodes
    }
}
