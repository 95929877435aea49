import Foundation
import KVClient
import KVCluster
import KVCore
import KVStorage
import KVTestSupport
import KVWire
import Testing

/// Strangers on the peer port of real `kv server` processes. Each attack that worked
/// before peers authenticated is tried twice, with a bare hello and with a guessed
/// secret, and must change nothing while the cluster keeps serving; then the same
/// frames from a holder of the secret take effect, which shows the attack is real and
/// that only the handshake stops it.
@Suite("peer port against strangers", .serialized)
struct PeerAuthenticationTests {
    static let arguments = ["--partitions", "64", "--replica-timeout-ms", "2000"]
    static let items = try! TableName(namespace: "test", table: "items")
    static let row = RowKey(table: items, parts: [.string("k")])
    static let guess = "a guess at the cluster's secret"
    static let intruder = NodeID(rawValue: 0x5354_5241_4e47)

    /// A 3-node cluster with the table and one row, `k` = `original`.
    static func cluster() async throws -> (LocalCluster, HTTPKeyValueService) {
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: Self.arguments) }
        let client = try await HTTPKeyValueService(url: cluster.url(0))
        _ = try await client.createTable(TableDescriptor(name: items, schema: try KeySchema([.string])))
        _ = try await client.put(row, value: text("original"), options: WriteOptions())
        return (cluster, client)
    }

    static func text(_ value: String) -> RowValue {
        RowValue(bytes: Array(value.utf8), contentType: "text/plain")
    }

    static func values(_ client: HTTPKeyValueService) async throws -> [String] {
        try await client.get(row).siblings.map { String(decoding: $0.value?.bytes ?? [], as: UTF8.self) }
            .sorted()
    }

    /// Sends `frames` to `port` as a stranger, twice: after a bare hello, and right
    /// behind a proof made with a guessed secret. Each connection must be closed having
    /// been sent nothing but the challenge.
    static func asStranger(
        _ frames: [WireFrame], to port: Int, as node: NodeID = intruder, listenAddress: String = "",
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let bare = try PeerSocket(port: port)
        bare.send(
            .hello(
                node: node, cluster: "kv", listenAddress: listenAddress,
                clockMilliseconds: PeerSocket.wallClockMilliseconds()))
        for frame in frames { bare.send(frame) }
        let unproven = bare.readUntilClosed(timeout: 10)
        #expect(
            unproven.closed, "a stranger without a proof stayed connected", sourceLocation: sourceLocation)
        #expect(
            unproven.frames.allSatisfy(isChallenge), "sent \(unproven.frames)", sourceLocation: sourceLocation
        )
        let guessed = try PeerSocket(port: port).attempt(
            frames, as: node, guessing: guess, listenAddress: listenAddress)
        #expect(
            guessed.closed, "a stranger with a guessed secret stayed connected",
            sourceLocation: sourceLocation)
        #expect(
            guessed.frames.allSatisfy(isChallenge), "sent \(guessed.frames)", sourceLocation: sourceLocation)
    }

    /// Sends `frames` to `port` as a holder of the secret.
    static func asMember(
        _ frames: [WireFrame], to port: Int, as node: NodeID = intruder, listenAddress: String = ""
    )
        throws -> PeerSocket
    {
        let socket = try PeerSocket(port: port)
        #expect(
            try socket.handshake(
                node: node, secret: ServerProcess.testClusterSecret, listenAddress: listenAddress))
        for frame in frames { socket.send(frame) }
        return socket
    }

    static func isChallenge(_ frame: WireFrame) -> Bool {
        if case .challenge = frame { return true }
        return false
    }

    /// What a stranger must not be able to change: members, their addresses, the layout.
    static func fingerprint(_ client: HTTPKeyValueService) async throws -> String {
        let status = try await client.clusterStatus()
        return "\(status.layoutVersion) "
            + status.members.map { "\($0.nodeID)@\($0.peerAddress)/\($0.httpAddress)" }.joined(separator: ",")
    }

    /// The cluster still serves: the row reads as written, and a new write goes through.
    static func stillServes(_ client: HTTPKeyValueService, sourceLocation: SourceLocation = #_sourceLocation)
        async throws
    {
        #expect(try await values(client) == ["original"], sourceLocation: sourceLocation)
        let probe = RowKey(table: items, parts: [.string("probe-\(UUID().uuidString)")])
        _ = try await client.put(probe, value: text("ok"), options: WriteOptions())
        #expect(try await client.get(probe).siblings.count == 1, sourceLocation: sourceLocation)
    }

    @Test(
        "random bytes and strangers on every peer port are refused and logged; nothing changes",
        .timeLimit(.minutes(3)))
    func randomBytes() async throws {
        let (cluster, client) = try await Self.cluster()
        let before = try await Self.fingerprint(client)
        var generator = SeededRandom(seed: 1_414)
        for port in cluster.peerPorts {
            // Whole frames of random bytes, and a length over the handshake's limit: each
            // refused at once. (Bytes that never complete a frame wait for the handshake
            // timeout; the transport's own tests cover that.)
            for size in [1, 10, 100, 4_000, 1 << 20] {
                let socket = try PeerSocket(port: port)
                let body = (0..<min(size, 4_000)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                socket.send((0..<4).map { UInt8(truncatingIfNeeded: size >> (24 - 8 * $0)) } + body)
                #expect(socket.readUntilClosed(timeout: 10).closed, "\(size) random bytes on \(port)")
            }
            try Self.asStranger([.message(.quorum(.stored(id: 1, durable: true)))], to: port)
        }
        try await Self.stillServes(client)
        #expect(try await Self.fingerprint(client) == before)
        for (index, node) in cluster.nodes.enumerated() {
            let log = (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? ""
            #expect(log.contains("refused a peer connection"), "the refusals are not in \(node.logPath)")
            // And counted: five random byte streams and two strangers per node.
            let connection = try await HTTPConnection(host: "127.0.0.1", port: cluster.httpPorts[index])
            let metrics = try await MetricsTests.scrape(connection)
            #expect(metrics.value("kv_peer_refused_connections_total") >= 7)
            await connection.close()
        }
        await client.close()
    }

    @Test("a stranger's scan reads no row; a member's does", .timeLimit(.minutes(3)))
    func scan() async throws {
        let (cluster, client) = try await Self.cluster()
        let listener = try PeerListener()
        let scan = WireFrame.message(
            .scans(
                .scan(
                    id: 77,
                    request: PartitionScan(
                        tablePrefix: KeyEncoding.encode([.string("test"), .string("items")]),
                        partitions: (0..<64).map { PartitionID(rawValue: UInt32($0)) }, lowerBound: [],
                        upperBound: nil, limit: 1_000, reverse: false, keysOnly: false))))
        let answerTo = "127.0.0.1:\(listener.port)"
        try Self.asStranger([scan], to: cluster.peerPorts[0], listenAddress: answerTo)
        #expect(listener.accept(timeout: 3) == nil, "the node answered a stranger")
        try await Self.stillServes(client)

        let member = try Self.asMember([scan], to: cluster.peerPorts[0], listenAddress: answerTo)
        let answer = try #require(listener.accept(timeout: 10), "the node did not answer a member")
        #expect(try answer.acceptHandshake(secret: ServerProcess.testClusterSecret) != nil)
        var rows: [String] = []
        while case .frame(let frame) = answer.readFrame(timeout: 10) {
            guard case .message(.scans(.scanned(77, let page))) = frame else { continue }
            rows = page.rows.flatMap {
                $0.object.values.compactMap { $0.value.map { String(decoding: $0.bytes, as: UTF8.self) } }
            }
            break
        }
        #expect(rows.contains("original"), "the member's scan returned \(rows)")
        member.hangUp()
        await client.close()
    }

    @Test("a stranger's store of a forged version changes no row; a member's does", .timeLimit(.minutes(3)))
    func store() async throws {
        let (cluster, client) = try await Self.cluster()
        let encoded = KeyEncoding.encode(Self.row.parts)
        let partition = PartitionID.of(
            namespace: "test", table: "items", encodedPartitionKey: encoded, partitionCount: 64)
        let key = ReplicaKey(
            partition: partition,
            bytes: StorageLayout.dataKey(
                partition: partition, namespace: "test", table: "items", key: encoded),
            generation: 0)
        var forged = StoredObject()
        forged.recordWrite(
            Sibling(value: Self.text("forged"), timestampMilliseconds: 1 << 50), context: VersionVector(),
            actor: ActorID(node: Self.intruder, incarnation: 1))
        let store = WireFrame.message(.quorum(.store(id: 5, key: key, object: forged)))
        for port in cluster.peerPorts { try Self.asStranger([store], to: port) }
        try await Self.stillServes(client)

        let member = try Self.asMember([store], to: cluster.peerPorts[0])
        var seen: [String] = []
        for _ in 0..<100 {
            seen = try await Self.values(client)
            if seen.contains("forged") { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(seen.contains("forged"), "a member's store did not take: \(seen)")
        member.hangUp()
        await client.close()
    }

    @Test(
        "a stranger's membership update makes no member look dead; a member's does", .timeLimit(.minutes(3)))
    func membership() async throws {
        let (cluster, client) = try await Self.cluster()
        // Node 0 shows an incarnation once it has heard from the victim (0 before).
        var victim: ClusterStatus.Member?
        for _ in 0..<100 where victim == nil {
            let status = try await client.clusterStatus()
            victim = status.members.first { $0.nodeID != status.nodeID && $0.incarnation > 0 }
            if victim == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let known = try #require(victim, "node 0 never heard of another member's incarnation")
        let claim = known.incarnation + 1_000
        let ping = WireFrame.message(
            .membership(
                .ping(
                    sequence: 1,
                    updates: [MemberState(node: known.nodeID, incarnation: claim, status: .dead)]),
                metadataDigest: 0))
        /// Whether node 0 took the claim: it then holds the victim at the claimed
        /// incarnation or above (the victim's refutation outbids it). A busy machine can
        /// make a member look suspect on its own, but never raise its incarnation by 1,000.
        func believed() async throws -> Bool {
            let member = try await client.clusterStatus().members.first { $0.nodeID == known.nodeID }
            return member.map { $0.incarnation >= claim } ?? false
        }
        try Self.asStranger([ping], to: cluster.peerPorts[0])
        for _ in 0..<40 {
            #expect(try await believed() == false, "a stranger's claim was believed")
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Self.stillServes(client)

        let member = try Self.asMember([ping], to: cluster.peerPorts[0])
        var taken = false
        for _ in 0..<100 where !taken {
            taken = try await believed()
            if !taken { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(taken, "a member's claim was not believed either")
        member.hangUp()
        await client.close()
    }

    @Test("a stranger's metadata drops no table and adds no member; a member's does", .timeLimit(.minutes(3)))
    func metadata() async throws {
        let (cluster, client) = try await Self.cluster()
        let bogus = NodeID(rawValue: 0xB065_0B06)
        var forged = ClusterMetadata(
            member: ClusterMember(node: bogus, peerAddress: "127.0.0.1:9", httpAddress: "127.0.0.1:9"),
            partitionCount: 64, replicationFactor: 3)
        forged.clock = 1 << 40
        forged.record(Self.items, nil, by: bogus)
        let push = WireFrame.message(.metadata(.push(id: nil, encoded: forged.encoded())))
        for port in cluster.peerPorts { try Self.asStranger([push], to: port) }
        try await Task.sleep(for: .seconds(1))
        try await Self.stillServes(client)
        #expect(!(try await client.clusterStatus().members.contains { $0.nodeID == bogus }))

        let member = try Self.asMember([push], to: cluster.peerPorts[0])
        var dropped = false
        for _ in 0..<100 where !dropped {
            do {
                _ = try await Self.values(client)
                try await Task.sleep(for: .milliseconds(50))
            } catch let error as KVError where error.code == .tableNotFound {
                dropped = true
            }
        }
        #expect(dropped, "a member's metadata did not drop the table")
        #expect(try await client.clusterStatus().members.contains { $0.nodeID == bogus })
        member.hangUp()
        await client.close()
    }

    @Test(
        "an address a stranger announces for a member receives nothing; one a member announces does",
        .timeLimit(.minutes(3)))
    func announcedAddress() async throws {
        let (cluster, client) = try await Self.cluster()
        let status = try await client.clusterStatus()
        let victimIndex = try #require(
            (1..<3).first { index in
                status.members.contains { $0.httpAddress.hasSuffix(":\(cluster.httpPorts[index])") }
            })
        let victim = try #require(
            status.members.first { $0.httpAddress.hasSuffix(":\(cluster.httpPorts[victimIndex])") })
        let listener = try PeerListener()
        let address = "127.0.0.1:\(listener.port)"
        try Self.asStranger([], to: cluster.peerPorts[0], as: victim.nodeID, listenAddress: address)
        // The victim's connections break, so node 0 must connect to it anew: to the
        // stranger's address, had it been taken.
        cluster.nodes[victimIndex].kill()
        for index in 0..<20 {
            _ = try? await client.put(
                RowKey(table: Self.items, parts: [.string("after-\(index)")]), value: Self.text("secret"),
                options: WriteOptions())
        }
        #expect(listener.accept(timeout: 3) == nil, "node 0 connected to an address a stranger announced")
        #expect(try await Self.values(client) == ["original"])

        let member = try Self.asMember(
            [], to: cluster.peerPorts[0], as: victim.nodeID, listenAddress: address)
        for index in 0..<20 {
            _ = try? await client.put(
                RowKey(table: Self.items, parts: [.string("later-\(index)")]), value: Self.text("secret"),
                options: WriteOptions())
        }
        let connection = try #require(listener.accept(timeout: 10), "node 0 ignored a member's address")
        #expect(try connection.acceptHandshake(secret: ServerProcess.testClusterSecret) != nil)
        member.hangUp()
        await client.close()
    }

    @Test(
        "a node with another secret cannot join, and both sides log why; with the cluster's secret file it joins",
        .timeLimit(.minutes(3)))
    func joinNeedsTheSecret() async throws {
        let (cluster, client) = try await Self.cluster()
        let seed = "127.0.0.1:\(cluster.httpPorts[1])"
        let ports = try FreePorts.take(4)
        let outsider = try await offCooperativePool {
            try ServerProcess(
                arguments: ["--peer-port", String(ports[1]), "--join", seed] + Self.arguments,
                environment: ["KV_CLUSTER_SECRET": Self.guess], port: ports[0])
        }
        try await Task.sleep(for: .seconds(3))
        #expect(try await client.clusterStatus().members.count == 3)
        let seedLog = (try? String(contentsOfFile: cluster.nodes[1].logPath, encoding: .utf8)) ?? ""
        #expect(seedLog.contains("refused a peer connection"))
        let outsiderLog = (try? String(contentsOfFile: outsider.logPath, encoding: .utf8)) ?? ""
        #expect(outsiderLog.contains("the handshake with a seed failed"), "\(outsiderLog)")
        _ = outsider.terminate()
        outsider.removeData()

        let secretFile = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-secret-\(UUID().uuidString)"
        ).path
        try Data((ServerProcess.testClusterSecret + "\n").utf8).write(to: URL(fileURLWithPath: secretFile))
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        chmod(secretFile, 0o600)
        let member = try await offCooperativePool {
            try ServerProcess(
                arguments: [
                    "--peer-port", String(ports[3]), "--join", seed, "--cluster-secret-file", secretFile,
                ] + Self.arguments,
                environment: ["KV_CLUSTER_SECRET": ""], port: ports[2])
        }
        var members = 3
        for _ in 0..<100 where members != 4 {
            try await Task.sleep(for: .milliseconds(100))
            members = try await client.clusterStatus().members.count
        }
        #expect(members == 4, "the node with the cluster's secret did not join")
        _ = member.terminate()
        member.removeData()
        await client.close()
    }
}
