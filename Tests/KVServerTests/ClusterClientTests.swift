import Foundation
import KVCore
import KVTestSupport
import Synchronization
import Testing

@testable import KVClient

/// The cluster-aware client library against real `kv server` processes: three nodes
/// with two replicas per partition, so a key has a node that is not its replica.
@Suite("cluster-aware client", .serialized)
struct ClusterClientTests {
    static let arguments = ["--partitions", "64", "--replication-factor", "2"]
    static let defaults = ReplicationDefaults(n: 2, r: 2, w: 2)

    static func startCluster() async throws -> LocalCluster {
        try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
    }

    static func client(
        _ cluster: LocalCluster, seed: Int = 0, options: ClusterClientOptions = ClusterClientOptions()
    )
        async throws -> ClusterClient
    {
        try await ClusterClient(seeds: [cluster.url(seed)], options: options)
    }

    static func counter(_ name: String, _ cluster: LocalCluster, running: [Int]? = nil) async throws -> Int64
    {
        var total: Int64 = 0
        for index in running ?? Array(cluster.nodes.indices) {
            let service = try await HTTPKeyValueService(url: cluster.url(index))
            total += try await service.clusterStatus().counters[name] ?? 0
            await service.close()
        }
        return total
    }

    static func text(_ value: String) -> RowValue {
        RowValue(bytes: Array(value.utf8), contentType: "text/plain")
    }

    static func string(_ value: RowValue?) -> String? {
        value.map { String(decoding: $0.bytes, as: UTF8.self) }
    }

    @Test("kvlayer's cases through the library: namespaces, many-row put/get/delete, paged inclusive scans")
    func kvlayerSemantics() async throws {
        let cluster = try await Self.startCluster()
        let client = try await Self.client(cluster)
        let schema = try KeySchema([.string, .int64], partitionKeyLength: 1)
        let tables = try await client.setUpNamespace(
            "kvl", tables: ["t": schema, "u": try KeySchema([.uuid])], defaults: Self.defaults)
        #expect(tables.map(\.name.table) == ["t", "u"])
        // Setting up again keeps the tables; another schema for one of them is refused.
        _ = try await client.setUpNamespace("kvl", tables: ["t": schema], defaults: Self.defaults)
        let refused = await errorCode {
            _ = try await client.setUpNamespace("kvl", tables: ["t": try KeySchema([.string])])
        }
        #expect(refused == .tableExists)

        let t = try TableName(namespace: "kvl", table: "t")
        let keys: [[KeyPart]] = ["a", "ab", "b", "c"].flatMap { first in
            (1...3).map { [.string(first), .int64(Int64($0))] }
        }
        try await client.put(t, keys.shuffled().map { ($0, Self.text("\($0)")) })
        // Many keys answer in request order, nil for the missing ones.
        let asked: [[KeyPart]] = [
            [.string("c"), .int64(2)], [.string("zz"), .int64(1)], [.string("a"), .int64(1)],
        ]
        let values = try await client.values(t, keys: asked)
        #expect(values.map(Self.string) == ["\(asked[0])", nil, "\(asked[2])"])

        // Scans page by themselves (page size 5 over 12 rows), inclusive and prefix-aware.
        func scanned(_ range: KeyRange, reverse: Bool = false) async throws -> [[KeyPart]] {
            var found: [[KeyPart]] = []
            for try await row in client.scan(t, range: range, reverse: reverse, pageSize: 5) {
                #expect(Self.string(row.siblings.first?.value) == "\(row.key)")
                found.append(row.key)
            }
            return found
        }
        #expect(try await scanned(KeyRange()) == keys)
        #expect(try await scanned(KeyRange(), reverse: true) == keys.reversed())
        #expect(try await scanned(.prefix([.string("a")])) == Array(keys[0..<3]))
        #expect(try await scanned(KeyRange(start: [.string("a")], end: [.string("b")])) == Array(keys[0..<9]))
        #expect(
            try await scanned(KeyRange(start: [.string("ab"), .int64(2)], end: [.string("b"), .int64(1)]))
                == Array(keys[4..<7]))
        var scannedKeys: [[KeyPart]] = []
        for try await key in client.scanKeys(t, range: .prefix([.string("c")]), pageSize: 2) {
            scannedKeys.append(key)
        }
        #expect(scannedKeys == Array(keys[9..<12]))

        // Deleting many, missing ones included.
        try await client.delete(t, keys: [keys[0], keys[1], [.string("nope"), .int64(9)]])
        #expect(try await scanned(.prefix([.string("a")])) == [keys[2]])

        // Counters, clearing a table, deleting the namespace.
        let counter = RowKey(
            table: try TableName(namespace: "kvl", table: "u"),
            parts: [.uuid(try #require(UUIDValue(UUID().uuidString)))])
        #expect(try await client.increment(counter, by: 5) == 5)
        #expect(try await client.increment(counter, by: -2) == 3)
        try await client.clearTable(t)
        #expect(try await scanned(KeyRange()).isEmpty)
        try await client.deleteNamespace("kvl")
        #expect(try await client.namespaces().contains("kvl") == false)
        await client.close()
    }

    @Test("siblings reach a caller that wants them, and a resolver picks one value")
    func siblingsAndResolver() async throws {
        let cluster = try await Self.startCluster()
        let client = try await Self.client(cluster)
        let t = try TableName(namespace: "sib", table: "t")
        _ = try await client.setUpNamespace(
            "sib", tables: ["t": try KeySchema([.string])], defaults: Self.defaults)
        // Two blind writes are concurrent: both values stay.
        try await client.put(t, [([.string("k")], Self.text("left"))])
        try await client.put(t, [([.string("k")], Self.text("right"))])
        let read = try #require(try await client.get(t, keys: [[.string("k")]]).first ?? nil)
        #expect(Set(read.siblings.compactMap { Self.string($0.value) }) == ["left", "right"])
        let resolved = try await client.values(t, keys: [[.string("k")]]) { siblings in
            Self.text(siblings.compactMap { Self.string($0.value) }.sorted().joined(separator: "+"))
        }
        #expect(resolved.map(Self.string) == ["left+right"])
        // Writing back with the read's context supersedes both.
        _ = try await client.put(
            RowKey(table: t, parts: [.string("k")]), value: Self.text("merged"),
            options: WriteOptions(context: read.context))
        #expect(try await client.values(t, keys: [[.string("k")]]).map(Self.string) == ["merged"])
        await client.close()
    }

    @Test("each row request goes straight to a replica of its key; a one-node client's do not")
    func requestsGoToReplicas() async throws {
        let cluster = try await Self.startCluster()
        let client = try await Self.client(cluster)
        let t = try TableName(namespace: "route", table: "t")
        _ = try await client.setUpNamespace(
            "route", tables: ["t": try KeySchema([.string])], defaults: Self.defaults)
        let before = try await Self.counter("requests.not_at_replica", cluster)
        let atBefore = try await Self.counter("requests.at_replica", cluster)
        for index in 0..<200 {
            let key = RowKey(table: t, parts: [.string("k\(index)")])
            _ = try await client.put(key, value: Self.text("v\(index)"), options: WriteOptions())
            #expect(Self.string(try await client.get(key).siblings.first?.value) == "v\(index)")
        }
        // The many-row calls split by replica too.
        try await client.put(t, (0..<200).map { ([.string("m\($0)")], Self.text("m")) })
        #expect(
            try await client.values(t, keys: (0..<200).map { [.string("m\($0)")] }).allSatisfy { $0 != nil })
        #expect(try await Self.counter("requests.not_at_replica", cluster) == before)
        #expect(try await Self.counter("requests.at_replica", cluster) - atBefore >= 800)
        #expect(client.statistics.elsewhere == 0)

        // The same requests through one node: a third of the keys are not its.
        let plain = try await HTTPKeyValueService(url: cluster.url(0))
        for index in 0..<200 {
            _ = try await plain.get(RowKey(table: t, parts: [.string("k\(index)")]), options: ReadOptions())
        }
        let elsewhere = try await Self.counter("requests.not_at_replica", cluster) - before
        #expect(
            elsewhere > 30 && elsewhere < 200,
            "\(elsewhere) of 200 reads arrived at a node that is not a replica")
        await plain.close()
        await client.close()
    }

    @Test("retries follow the table in docs/client.md")
    func retryRules() {
        func step(_ code: KVError.Code, _ failure: TransportFailure?, _ retry: ClusterClient.Retry)
            -> ClusterClient.Step
        {
            ClusterClient.next(after: KVError(code, "x", underlying: failure), retry)
        }
        // Never sent: another node, whatever the request.
        for retry in [ClusterClient.Retry.read, .write, .onlyIfNotSent] {
            #expect(step(.unavailable, .notConnected, retry) == .nextNode)
            #expect(step(.unavailable, .busy, retry) == .nextNode)
        }
        // Lost after sending: reads and identified writes go on, streams do not.
        #expect(step(.unavailable, .lost, .read) == .nextNode)
        #expect(step(.unavailable, .lost, .write) == .nextNode)
        #expect(step(.unavailable, .lost, .onlyIfNotSent) == .fail)
        // The node's own answers.
        #expect(step(.unavailable, nil, .read) == .nextNode)
        #expect(step(.unavailable, nil, .onlyIfNotSent) == .fail)
        #expect(step(.writeIndeterminate, nil, .write) == .sameNode)
        #expect(step(.writeIndeterminate, nil, .read) == .nextNode)
        #expect(step(.quorumUnavailable, nil, .write) == .sameNode)
        #expect(step(.quorumUnavailable, nil, .read) == .nextNode)
        #expect(step(.preconditionFailed, nil, .write) == .fail)
        #expect(step(.tableNotFound, nil, .read) == .fail)
    }

    @Test("one connection per node serves many concurrent requests in turn")
    func requestsWaitForAConnection() async throws {
        let cluster = try await Self.startCluster()
        let client = try await Self.client(cluster, options: ClusterClientOptions(connectionsPerNode: 1))
        let t = try TableName(namespace: "pool", table: "t")
        _ = try await client.setUpNamespace(
            "pool", tables: ["t": try KeySchema([.string])], defaults: Self.defaults)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<40 {
                group.addTask {
                    let key = RowKey(table: t, parts: [.string("k\(index)")])
                    _ = try await client.put(key, value: Self.text("v\(index)"), options: WriteOptions())
                    let read = try await client.get(key)
                    #expect(Self.string(read.siblings.first?.value) == "v\(index)")
                }
            }
            try await group.waitForAll()
        }
        #expect(client.statistics.retries == 0)
        await client.close()
    }

    @Test("a node killed mid-run is routed around: no request fails, every acknowledged write reads back")
    func killedNodeIsRoutedAround() async throws {
        let cluster = try await Self.startCluster()
        let client = try await Self.client(
            cluster,
            options: ClusterClientOptions(requestTimeout: .seconds(10), topologyRefreshInterval: .seconds(1)))
        let t = try TableName(namespace: "fail", table: "t")
        _ = try await client.setUpNamespace(
            "fail", tables: ["t": try KeySchema([.string])], defaults: Self.defaults)
        var failures: [String] = []
        for index in 0..<600 {
            if index == 200 { cluster.nodes[2].kill() }
            let key = RowKey(table: t, parts: [.string("k\(index)")])
            do {
                _ = try await client.put(key, value: Self.text("v\(index)"), options: WriteOptions())
                let read = try await client.get(key, options: ReadOptions(quorum: QuorumOverrides(r: 1)))
                if Self.string(read.siblings.first?.value) != "v\(index)" {
                    failures.append("k\(index): read back")
                }
            } catch {
                failures.append("k\(index): \(error)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) failed: \(failures.prefix(3))")
        #expect(client.statistics.retries > 0, "no request was ever tried on another node")
        // Every write reads back through the nodes that are left.
        let values = try await client.values(
            t, keys: (0..<600).map { [.string("k\($0)")] },
            options: ReadOptions(quorum: QuorumOverrides(r: 1)))
        #expect(values.enumerated().allSatisfy { Self.string($1) == "v\($0)" })
        await client.close()
    }

    @Test("the client follows a layout change: a joined node gets the requests for its keys")
    func layoutChangeIsFollowed() async throws {
        let cluster = try await Self.startCluster()
        let client = try await Self.client(
            cluster, options: ClusterClientOptions(topologyRefreshInterval: .milliseconds(500)))
        let t = try TableName(namespace: "grow", table: "t")
        _ = try await client.setUpNamespace(
            "grow", tables: ["t": try KeySchema([.string])], defaults: Self.defaults)
        try await client.put(t, (0..<300).map { ([.string("k\($0)")], Self.text("v\($0)")) })
        let versionBefore = client.topology.layoutVersion
        let seed = try await HTTPKeyValueService(url: cluster.url(0))
        let (joiner, joinerID) = try await ElasticClusterTests.joiner(
            seed, seedPort: cluster.httpPorts[0], extra: Self.arguments)
        _ = try await ElasticClusterTests.commit(
            [LayoutChangeRequest(change: "join", node: joinerID.description)], through: seed)
        _ = try await ElasticClusterTests.waitForTransfers(seed, seconds: 120)
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline,
            client.topology.addresses[joinerID] == nil
                || client.topology.layoutVersion == versionBefore
        {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(client.topology.layoutVersion > versionBefore)
        #expect(client.topology.addresses[joinerID] == "http://127.0.0.1:\(joiner.port)")
        let joined = try await HTTPKeyValueService(url: joiner.url)
        let before = try await joined.clusterStatus().counters["requests.at_replica"] ?? 0
        let values = try await client.values(t, keys: (0..<300).map { [.string("k\($0)")] })
        #expect(values.enumerated().allSatisfy { Self.string($1) == "v\($0)" })
        let after = try await joined.clusterStatus().counters["requests.at_replica"] ?? 0
        #expect(after - before > 0, "the new node coordinated none of the reads of its keys")
        await joined.close()
        await seed.close()
        await client.close()
        _ = joiner
    }

    @Test(
        "update under contention: 8 tasks × 200 increments of one JSON value through different nodes count all 1,600"
    )
    func updateUnderContention() async throws {
        let cluster = try await Self.startCluster()
        let setup = try await Self.client(cluster)
        let t = try TableName(namespace: "upd", table: "t")
        _ = try await setup.setUpNamespace(
            "upd", tables: ["t": try KeySchema([.string])], defaults: Self.defaults)
        let key: [KeyPart] = [.string("total")]
        final class Conflicts: Sendable { let seen = Atomic(0) }
        let conflicts = Conflicts()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    let client = try await Self.client(cluster, seed: task % 3)
                    for _ in 0..<200 {
                        let outcomes = try await client.update(t, keys: [key], attempts: 1000) { _, values in
                            if values.count > 1 { conflicts.seen.add(1, ordering: .relaxed) }
                            let count =
                                values.first.flatMap {
                                    try? JSONDecoder().decode([String: Int].self, from: Data($0.bytes))[
                                        "count"]
                                } ?? 0
                            return .write(
                                RowValue(
                                    bytes: Array(try JSONEncoder().encode(["count": count + 1])),
                                    contentType: "application/json"))
                        }
                        guard case .written = outcomes.first else {
                            throw KVError(.internalError, "an update did not write: \(outcomes)")
                        }
                    }
                    await client.close()
                }
            }
            try await group.waitForAll()
        }
        let final = try #require(try await setup.values(t, keys: [key]).first ?? nil)
        #expect(try JSONDecoder().decode([String: Int].self, from: Data(final.bytes)) == ["count": 1600])
        #expect(conflicts.seen.load(ordering: .relaxed) == 0, "conditional writes never leave siblings")
        // A function may keep or delete a row.
        let kept = try await setup.update(t, keys: [key, [.string("absent")]]) { _, _ in .keep }
        #expect(kept == [.kept, .kept])
        let deleted = try await setup.update(t, keys: [key]) { _, _ in .delete }
        guard case .deleted = deleted.first else {
            Issue.record("not deleted: \(deleted)")
            return
        }
        #expect(try await setup.values(t, keys: [key]) == [nil])
        await setup.close()
    }
}
