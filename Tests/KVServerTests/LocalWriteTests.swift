import Foundation
import KVCore
import KVNode
import KVStorage
import KVStorageMemory
import KVTestSupport
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import Testing

/// Puts a node starts without a task (``ClusterNode/startPut(_:value:options:completion:)``)
/// must store and answer exactly what ``ClusterNode/put(_:value:options:)`` does, and
/// skip the coordinator only where it would write this node's replica alone.
@Suite("Local writes")
struct LocalWriteTests {
    /// The outcome of a started put, or `nil` when the node declined it.
    static func startPut(_ node: ClusterNode, _ key: RowKey, _ value: String, _ options: WriteOptions)
        async -> Result<WriteResult, KVError>?
    {
        await withCheckedContinuation { continuation in
            let started = node.startPut(key, value: text(value), options: options) { outcome in
                continuation.resume(returning: outcome.result())
            }
            if !started { continuation.resume(returning: nil) }
        }
    }

    /// The same put through the coordinator.
    static func put(_ node: ClusterNode, _ key: RowKey, _ value: String, _ options: WriteOptions) async
        -> Result<WriteResult, KVError>
    {
        do {
            return .success(try await node.put(key, value: text(value), options: options))
        } catch {
            return .failure(error)
        }
    }

    /// What a read shows of a row, without what differs between two rows written alike
    /// (their dots, timestamps and sealed contexts).
    static func shape(_ result: ReadResult) -> [String] {
        result.siblings.map { sibling in
            "\(sibling.value.map { String(decoding: $0.bytes, as: UTF8.self) } ?? "-") \(sibling.value?.contentType ?? "") \(sibling.expiresAtMilliseconds.map(String.init) ?? "")"
        }.sorted()
    }

    @Test("one node applies puts itself, storing and answering what its coordinator does")
    func oneNode() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let node = nodes[0]
            let expiry = Int64(Date().timeIntervalSince1970 * 1000) + 3_600_000
            for policy in [ConflictPolicy.siblings, .lastWriterWins] {
                let name = table("local", "writes_\(policy == .siblings ? "siblings" : "lww")")
                _ = try await node.createTable(
                    TableDescriptor(name: name, schema: try KeySchema([.string]), conflictPolicy: policy))
                let fast = RowKey(table: name, parts: [.string("fast")])
                let slow = RowKey(table: name, parts: [.string("slow")])
                // Each step's options, made from the row's last read and last write result.
                let steps: [(String, (ReadResult, WriteResult?) -> WriteOptions)] = [
                    ("one", { _, _ in WriteOptions() }),
                    ("two", { _, _ in WriteOptions() }),
                    ("three", { read, _ in WriteOptions(context: read.context) }),
                    ("four", { _, _ in WriteOptions(condition: .ifAbsent) }),
                    ("five", { read, _ in WriteOptions(condition: .ifMatch(read.etag)) }),
                    ("six", { _, _ in WriteOptions(condition: .ifMatch("\"stale\"")) }),
                    ("seven", { _, _ in WriteOptions(expiresAtMilliseconds: expiry) }),
                    ("eight", { _, _ in WriteOptions(requestID: "request-8") }),
                    ("nine", { _, written in WriteOptions(context: written?.context) }),
                    ("ten", { _, _ in WriteOptions(context: "not a context") }),
                ]
                var lastWritten: [RowKey: WriteResult] = [:]
                for (value, options) in steps {
                    let fastOptions = options(try await node.get(fast), lastWritten[fast])
                    let slowOptions = options(try await node.get(slow), lastWritten[slow])
                    let appliedBefore = try await Self.appliedAlone(node)
                    let immediate = await Self.startPut(node, fast, value, fastOptions)
                    // On a node of its own every put that starts is applied alone.
                    #expect(
                        try await Self.appliedAlone(node) == appliedBefore + (immediate == nil ? 0 : 1),
                        "\(value)")
                    let coordinated = await Self.put(node, slow, value, slowOptions)
                    switch (immediate, coordinated) {
                    case (.success(let written)?, .success(let other)):
                        lastWritten[fast] = written
                        lastWritten[slow] = other
                        #expect(written.etag == (try await node.get(fast)).etag, "\(value): the reply's ETag")
                    case (.failure(let error)?, .failure(let other)):
                        #expect(error.code == other.code, "\(value)")
                    case (nil, .failure):
                        // Declined: the ordinary path gives the error (a context that
                        // does not open is refused before anything is queued).
                        #expect(value == "ten")
                    default:
                        Issue.record("\(value): \(String(describing: immediate)) against \(coordinated)")
                    }
                    #expect(
                        Self.shape(try await node.get(fast)) == Self.shape(try await node.get(slow)),
                        "\(policy) after \(value)")
                }
                #expect(Self.shape(try await node.get(fast)).count == 1)
            }
            // A value over the inline limit is declined, and the ordinary path refuses it.
            let huge = RowKey(table: table("local", "writes_siblings"), parts: [.string("huge")])
            let hugeValue = String(repeating: "x", count: 17 << 20)
            #expect(await Self.startPut(node, huge, hugeValue, .init()) == nil)
            if case .success = await Self.put(node, huge, hugeValue, .init()) {
                Issue.record("a value over the inline limit was stored")
            }
            // A table not made yet is left to the ordinary path, which reports it.
            #expect(
                await Self.startPut(
                    node, RowKey(table: table("local", "none"), parts: [.string("k")]), "v", .init())
                    == nil)
        }
    }

    /// How many writes `node` applied alone so far.
    static func appliedAlone(_ node: ClusterNode) async throws -> Int64 {
        try await node.clusterStatus().counters["writes.applied_locally"] ?? 0
    }

    @Test("in a cluster, every node starts puts; only the replica of an n=1 table applies them alone")
    func cluster() async throws {
        try await LocalReadTests.using(.cluster) { nodes in
            let (replicated, single) = try await LocalReadTests.createTables(
                on: nodes[0], named: "writes_n3", "writes_n1")
            // Every node must know both tables, or it declines their puts.
            for node in nodes {
                for name in [replicated, single] {
                    for _ in 0..<100 where node.immediateTable(name) == nil {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    #expect(node.immediateTable(name) != nil)
                }
            }
            var before: [Int64] = []
            for node in nodes { before.append(try await Self.appliedAlone(node)) }
            for (index, node) in nodes.enumerated() {
                let key = RowKey(table: replicated, parts: [.string("row\(index)")])
                let outcome = await Self.startPut(node, key, "v\(index)", WriteOptions())
                #expect((try? outcome?.get()) != nil, "the coordinator writes row\(index)")
                for reader in nodes {
                    let read = try await reader.get(key, options: ReadOptions())
                    #expect(Self.shape(read) == ["v\(index) text/plain "])
                }
            }
            for (index, node) in nodes.enumerated() {
                #expect(try await Self.appliedAlone(node) == before[index], "N=3 writes are coordinated")
            }
            for index in 0..<8 {
                let key = RowKey(table: single, parts: [.string("row\(index)")])
                var alone = 0
                for node in nodes {
                    let applied = try await Self.appliedAlone(node)
                    let outcome = await Self.startPut(node, key, "v\(index)", WriteOptions())
                    #expect((try? outcome?.get()) != nil)
                    if try await Self.appliedAlone(node) > applied { alone += 1 }
                }
                #expect(alone == 1, "exactly the key's one replica writes row\(index) alone")
                let read = try await nodes[0].get(key, options: ReadOptions())
                let shape = Self.shape(read)
                #expect(!shape.isEmpty && shape.allSatisfy { $0 == "v\(index) text/plain " })
            }
        }
    }
}

extension LocalWriteTests {
    /// A put applied alone whose drain stalls past the request timeout answers
    /// `write.indeterminate`, once, as the coordinator's write does; it is applied when
    /// the drain moves again.
    @Test("a put applied alone times out as indeterminate when the drain stalls")
    func stalledDrain() async throws {
        // A stalled disk: writes wait while the gate is closed.
        let isClosed = NIOLockedValueBox(false)
        let engine = WriteHookedEngine { while isClosed.withLockedValue({ $0 }) { usleep(1_000) } }
        let logger = Logger(label: "test")
        let node = try ClusterNode(
            local: try NodeStorage(
                engine: engine, engineName: "memory", settings: NodeSettings(partitionCount: 16),
                logger: logger),
            settings: ClusterSettings(
                secret: try ClusterSecret(ServerProcess.testClusterSecret), requestTimeoutMilliseconds: 300),
            group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        _ = try await node.start()
        defer { isClosed.withLockedValue { $0 = false } }
        for _ in 0..<500 where !node.isFormed { try await Task.sleep(for: .milliseconds(10)) }
        let name = table("local", "stalled")
        _ = try await node.createTable(TableDescriptor(name: name, schema: try KeySchema([.string])))
        let key = RowKey(table: name, parts: [.string("k")])
        isClosed.withLockedValue { $0 = true }
        // Without the timeout the put would wait for the gate: it opens by itself after
        // 3 s, so the test then fails instead of hanging.
        let opener = Task {
            try await Task.sleep(for: .seconds(3))
            isClosed.withLockedValue { $0 = false }
        }
        let calls = NIOLockedValueBox(0)
        let outcome = await withCheckedContinuation {
            (continuation: CheckedContinuation<PutOutcome, Never>) in
            let started = node.startPut(key, value: text("late"), options: WriteOptions()) { outcome in
                if calls.withLockedValue({
                    $0 += 1
                    return $0
                }) == 1 {
                    continuation.resume(returning: outcome)
                }
            }
            if !started {
                continuation.resume(returning: PutOutcome(failed: KVError(.internalError, "declined")))
            }
        }
        #expect(outcome.failure?.code == .writeIndeterminate, "\(String(describing: outcome.failure))")
        opener.cancel()
        isClosed.withLockedValue { $0 = false }
        // The drain notices the open gate within a millisecond, then applies the write.
        var values: [RowValue?] = []
        for _ in 0..<200 {
            values = try await node.get(key).siblings.map(\.value)
            if !values.isEmpty { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(values == [text("late")], "applied once the drain moved")
        #expect(calls.withLockedValue { $0 } == 1, "answered once")
        await node.shutdown()
    }
}
