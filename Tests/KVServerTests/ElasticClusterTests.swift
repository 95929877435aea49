import Foundation
import KVClient
import KVCore
import KVTestSupport
import Synchronization
import Testing

/// Layout changes of real `kv server` processes under load: a join, two leaves and a
/// replace while clients read and write, and a transfer that resumes after its receiver
/// is killed.
@Suite("elastic cluster of real processes", .serialized)
struct ElasticClusterTests {
    static let arguments = ["--partitions", "64", "--replica-timeout-ms", "5000"]
    static let bulk = try! TableName(namespace: "elastic", table: "bulk")
    static let live = try! TableName(namespace: "elastic", table: "live")

    static let largeValueCount = 4
    static func largeKey(_ index: Int) -> RowKey { RowKey(table: live, parts: [.string("large\(index)")]) }
    /// A value of a few MiB, stored in chunks.
    static func largeValue(_ index: Int) -> RowValue {
        var random = SplitMix64(seed: UInt64(index) + 100)
        return RowValue(
            bytes: (0..<((3 << 20) + 1234 * index)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
    }

    static func bulkKey(_ index: Int) -> RowKey { RowKey(table: bulk, parts: [.string("b\(index)")]) }
    static func bulkValue(_ index: Int, size: Int = 100) -> RowValue {
        let text = "value-\(index)-"
        return RowValue(bytes: Array((text + String(repeating: "x", count: max(0, size - text.count))).utf8))
    }

    /// Writes `count` bulk rows through `service`, 500 per batch, four batches at once.
    static func load(_ count: Int, into service: HTTPKeyValueService, valueSize: Int = 100) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<4 {
                group.addTask {
                    var start = lane * 500
                    while start < count {
                        let operations = (start..<min(count, start + 500)).map {
                            BatchOperation.put(bulkKey($0), bulkValue($0, size: valueSize), WriteOptions())
                        }
                        let results = try await service.batch(operations)
                        for result in results {
                            if case .failed(let error) = result { throw error }
                        }
                        start += 2_000
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Starts a node that joins through `seed` and waits until the cluster knows it.
    static func joiner(_ seed: HTTPKeyValueService, seedPort: Int, extra: [String] = []) async throws -> (
        ServerProcess, NodeID
    ) {
        let ports = try FreePorts.take(2)
        let process = try await offCooperativePool {
            try ServerProcess(
                arguments: ["--peer-port", String(ports[1]), "--join", "127.0.0.1:\(seedPort)"] + arguments
                    + extra,
                port: ports[0])
        }
        // The seed knows the joiner once its hello arrived; the joiner knows the cluster
        // (and serves requests instead of answering 503) once the seed's metadata reached
        // it over the seed's own connection, a moment later. Wait for both.
        let joiner = try await HTTPKeyValueService(host: "127.0.0.1", port: ports[0])
        defer { Task { await joiner.close() } }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let member = try? await seed.clusterStatus().members.first(where: {
                $0.state == "joining" && $0.httpAddress == "127.0.0.1:\(ports[0])"
            }), let view = try? await joiner.clusterStatus(), view.layoutVersion > 0 {
                return (process, member.nodeID)
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw KVError(.unavailable, "the joining node never became a member of the formed cluster")
    }

    /// Stages `changes`, commits the plan and returns it.
    @discardableResult
    static func commit(_ changes: [LayoutChangeRequest], through service: HTTPKeyValueService) async throws
        -> LayoutPlanReport
    {
        var plan: LayoutPlanReport?
        for change in changes { plan = try await service.stageLayoutChange(change) }
        let id = try #require(plan?.id)
        return try await service.commitLayoutPlan(id)
    }

    /// Waits until no data is moving.
    static func waitForTransfers(_ service: HTTPKeyValueService, seconds: Int) async throws -> Duration {
        let started = ContinuousClock.now
        let deadline = started + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if let report = try? await service.transfers(), !report.inProgress {
                return ContinuousClock.now - started
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        let report = try await service.transfers()
        Issue.record(
            "transfers still in progress after \(seconds) s: \(report.received)/\(report.total) received, \(report.unreleased) unreleased"
        )
        return ContinuousClock.now - started
    }

    static func counter(_ name: String, _ services: [HTTPKeyValueService]) async throws -> Int64 {
        var total: Int64 = 0
        for service in services { total += try await service.clusterStatus().counters[name] ?? 0 }
        return total
    }

    /// Clients writing fresh keys and reading back keys they wrote, until stopped. Every
    /// failure is kept, every acknowledged write remembered.
    final class Load: Sendable {
        let stopped = Atomic(false)
        let acknowledged = Mutex<[Int: Int]>([:])
        let failures = Mutex<[String]>([])
        let operations = Atomic(0)

        func run(_ services: [HTTPKeyValueService], lanes: Int) async {
            await withTaskGroup(of: Void.self) { group in
                for lane in 0..<lanes {
                    group.addTask {
                        var sequence = 0
                        while !self.stopped.load(ordering: .relaxed) {
                            let service = services[(lane + sequence) % services.count]
                            let key = lane * 1_000_000 + sequence
                            do {
                                _ = try await service.put(
                                    RowKey(table: ElasticClusterTests.live, parts: [.string("l\(key)")]),
                                    value: RowValue(bytes: Array("v\(key)".utf8)), options: WriteOptions())
                                self.acknowledged.withLock { $0[key] = key }
                                if sequence > 0 {
                                    let earlier = lane * 1_000_000 + Int.random(in: 0..<sequence)
                                    let read = try await service.get(
                                        RowKey(
                                            table: ElasticClusterTests.live, parts: [.string("l\(earlier)")]))
                                    let values = read.siblings.compactMap { $0.value?.bytes }
                                    if values != [Array("v\(earlier)".utf8)] {
                                        self.failures.withLock {
                                            $0.append("l\(earlier) read \(values.count) values")
                                        }
                                    }
                                }
                            } catch {
                                self.failures.withLock { $0.append("l\(key): \(error)") }
                            }
                            _ = self.operations.add(2, ordering: .relaxed)
                            sequence += 1
                        }
                    }
                }
            }
        }
    }

    @Test(
        "a fifth node joins 200,000 keys under load, two nodes leave and one is replaced: a fifth moves, nothing fails or is lost",
        .timeLimit(.minutes(15)))
    func joinLeaveReplaceUnderLoad() async throws {
        let keyCount = Int(ProcessInfo.processInfo.environment["KV_ELASTIC_KEYS"] ?? "") ?? 200_000
        let cluster = try await offCooperativePool { try LocalCluster(count: 4, arguments: Self.arguments) }
        var clients: [HTTPKeyValueService] = []
        for index in 0..<4 { clients.append(try await HTTPKeyValueService(url: cluster.url(index))) }
        let a = clients[0]
        // The bulk table reads with R=N, so the final check reads every key from every replica.
        _ = try await a.createTable(
            TableDescriptor(
                name: Self.bulk, schema: try KeySchema([.string]),
                defaults: ReplicationDefaults(n: 3, r: 3, w: 2)))
        _ = try await a.createTable(TableDescriptor(name: Self.live, schema: try KeySchema([.string])))
        let loadStarted = ContinuousClock.now
        try await Self.load(keyCount, into: a)
        print("loaded \(keyCount) keys in \(ContinuousClock.now - loadStarted)")
        // Large values too: their chunks are rows of the chunk table, which every layout
        // change below moves like any other.
        for index in 0..<Self.largeValueCount {
            _ = try await a.put(Self.largeKey(index), value: Self.largeValue(index), options: WriteOptions())
        }

        // A fifth node joins under load.
        let (fifth, fifthID) = try await Self.joiner(a, seedPort: cluster.httpPorts[0])
        let e = try await HTTPKeyValueService(url: fifth.url)
        let load = Load()
        let loadTask = Task { await load.run([a, e], lanes: 4) }
        try await Task.sleep(for: .seconds(1))
        let receivedBefore = try await Self.counter("handoff.rows_received", clients + [e])
        let joined = try await Self.commit(
            [LayoutChangeRequest(change: "join", node: fifthID.description)], through: a)
        let totalReplicas = 64 * 3
        #expect(
            Double(joined.movedReplicas) <= 1.1 * Double(totalReplicas) / 5,
            "\(joined.movedReplicas) of \(totalReplicas) partition copies move")
        let joinTime = try await Self.waitForTransfers(a, seconds: 300)
        let moved = try await Self.counter("handoff.rows_received", clients + [e]) - receivedBefore
        let stored = 3 * (keyCount + load.acknowledged.withLock { $0.count })
        print(
            "join: \(joined.movedReplicas) of \(totalReplicas) partition copies, \(moved) of \(stored) rows moved in \(joinTime)"
        )
        #expect(Double(moved) <= 1.1 * Double(stored) / 5, "\(moved) of \(stored) rows moved")
        #expect(moved > 0)

        // Two nodes leave at once.
        let ids = try await a.clusterStatus().members.map(\.nodeID)
        let second = try await clients[1].nodeInfo().nodeID
        let third = try await clients[2].nodeInfo().nodeID
        let fourth = try await clients[3].nodeInfo().nodeID
        #expect(ids.contains(third) && ids.contains(fourth))
        try await Self.commit(
            [
                LayoutChangeRequest(change: "leave", node: third.description),
                LayoutChangeRequest(change: "leave", node: fourth.description),
            ], through: a)
        let leaveTime = try await Self.waitForTransfers(a, seconds: 300)
        let afterLeave = try await a.clusterStatus()
        #expect(
            afterLeave.members.filter { $0.state == "left" }.map(\.nodeID).sorted()
                == [third, fourth].sorted())
        print("two nodes left in \(leaveTime)")

        // One node is replaced by a new one, which takes exactly its partitions.
        let layoutBefore = try await a.clusterLayout()
        let (sixth, sixthID) = try await Self.joiner(a, seedPort: cluster.httpPorts[0])
        try await Self.commit(
            [
                LayoutChangeRequest(
                    change: "replace", node: second.description, replacement: sixthID.description)
            ],
            through: a)
        let replaceTime = try await Self.waitForTransfers(a, seconds: 300)
        let layoutAfter = try await a.clusterLayout()
        for (old, new) in zip(layoutBefore.partitions, layoutAfter.partitions) {
            #expect(Set(new) == Set(old.map { $0 == second ? sixthID : $0 }))
        }
        print("replaced in \(replaceTime)")

        load.stopped.store(true, ordering: .relaxed)
        await loadTask.value
        let failures = load.failures.withLock { $0 }
        let acknowledged = load.acknowledged.withLock { $0 }
        print("load: \(load.operations.load(ordering: .relaxed)) requests, \(failures.count) failed")
        #expect(failures.isEmpty, "failed requests: \(failures.prefix(5))")

        // Every acknowledged write and every bulk key reads back from every replica.
        let f = try await HTTPKeyValueService(url: sixth.url)
        var missing: [String] = []
        for key in acknowledged.keys.sorted() {
            let read = try await f.get(
                RowKey(table: Self.live, parts: [.string("l\(key)")]),
                options: ReadOptions(quorum: QuorumOverrides(r: 3)))
            if read.siblings.compactMap({ $0.value?.bytes }) != [Array("v\(key)".utf8)] {
                missing.append("l\(key)")
            }
        }
        var start = 0
        while start < keyCount {
            let range = start..<min(keyCount, start + 500)
            let results = try await e.batch(range.map { .get(Self.bulkKey($0)) })
            for (index, result) in zip(range, results) {
                guard case .read(let read) = result,
                    read.siblings.compactMap({ $0.value?.bytes }) == [Self.bulkValue(index).bytes]
                else {
                    missing.append("b\(index)")
                    continue
                }
            }
            start += 500
        }
        #expect(missing.isEmpty, "\(missing.count) keys are not readable with R=N: \(missing.prefix(5))")
        for index in 0..<Self.largeValueCount {
            let received = Mutex<[UInt8]>([])
            _ = try await f.download(Self.largeKey(index), options: ReadOptions()) { piece in
                received.withLock { $0 += piece }
            }
            #expect(received.withLock { $0 } == Self.largeValue(index).bytes, "large value \(index)")
        }
        let final = try await f.clusterStatus()
        #expect(final.members.filter { $0.state == "left" }.count == 3)
        for client in clients + [e, f] { await client.close() }
        _ = (fifth, sixth)
    }

    @Test(
        "a transfer whose receiver is killed resumes from its last batch instead of starting over",
        .timeLimit(.minutes(5)))
    func transferResumesAfterReceiverRestart() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments + ["--transfer-batch-kib", "16"])
        }
        var clients: [HTTPKeyValueService] = []
        for index in 0..<3 { clients.append(try await HTTPKeyValueService(url: cluster.url(index))) }
        let a = clients[0]
        _ = try await a.createTable(TableDescriptor(name: Self.bulk, schema: try KeySchema([.string])))
        let keyCount = 20_000
        try await Self.load(keyCount, into: a, valueSize: 500)
        // Slow enough that the receiver is killed with most of its partitions to go.
        _ = try await a.controlTransfers(TransferControlRequest(bytesPerSecond: 1 << 20))
        let (joiner, joinerID) = try await Self.joiner(
            a, seedPort: cluster.httpPorts[0], extra: ["--transfer-batch-kib", "16"])
        let d = try await HTTPKeyValueService(url: joiner.url)
        let plan = try await Self.commit(
            [LayoutChangeRequest(change: "join", node: joinerID.description)], through: a)
        let deadline = ContinuousClock.now + .seconds(60)
        var receivedBeforeKill: Int64 = 0
        while ContinuousClock.now < deadline, receivedBeforeKill < 2_000 {
            try await Task.sleep(for: .milliseconds(100))
            receivedBeforeKill = try await d.clusterStatus().counters["handoff.rows_received"] ?? 0
        }
        await d.close()
        joiner.kill()
        print("killed the receiver after \(receivedBeforeKill) rows")
        try await Task.sleep(for: .seconds(1))
        try await offCooperativePool { try joiner.start(port: joiner.port) }
        _ = try await a.controlTransfers(TransferControlRequest(bytesPerSecond: 0))
        _ = try await Self.waitForTransfers(a, seconds: 120)
        let report = try await a.transfers()
        let resent = report.transfers.map(\.resentBatches)
        print(
            "resent batches per partition: \(resent.filter { $0 > 0 }.count) partitions re-sent some, max \(resent.max() ?? 0)"
        )
        // The source counts a pull that goes back before what it last sent, once per
        // restart of the partition's sequence (with pulls pipelined, the batches after
        // it follow on).
        #expect(resent.allSatisfy { $0 <= 1 }, "each partition went back at most once")
        let sent = try await Self.counter("handoff.rows_sent", clients)
        // Every row of the moved partitions once (each source counted its partition in its
        // snapshot), and at most two batches again for each partition the receiver was
        // taking at the kill (4 at once); starting over would send what it had already.
        let needed = report.transfers.reduce(UInt64(0)) { $0 + $1.estimatedRows }
        let batchRows: UInt64 = (16 << 10) / 500 + 1
        print("rows sent \(sent), \(needed) needed, \(plan.movedReplicas) partition copies")
        #expect(needed > 0 && UInt64(sent) >= needed)
        #expect(UInt64(sent) <= needed + 4 * 2 * batchRows, "the transfer did not start over")
        let restarted = try await HTTPKeyValueService(url: joiner.url)
        for index in stride(from: 0, to: keyCount, by: 97) {
            let read = try await restarted.get(
                Self.bulkKey(index), options: ReadOptions(quorum: QuorumOverrides(r: 3)))
            #expect(read.siblings.compactMap { $0.value?.bytes } == [Self.bulkValue(index, size: 500).bytes])
        }
        for client in clients + [restarted] { await client.close() }
    }
}
