import KVCluster
import KVCore
import KVNode
import KVTestSupport
import KVWire
import NIOCore
import Testing

/// The transport's defences, over real sockets: the handshake, its timeout, and the
/// limits on what peers may hold open and buffer.
@Suite("Peer transport security")
struct PeerTransportSecurityTests {
    static let message = ReplicaMessage.quorum(
        .fetch(id: 1, key: ReplicaKey(partition: PartitionID(rawValue: 3), bytes: [1])))

    @Test("nodes with different secrets never exchange a message, in either direction")
    func differentSecrets() async throws {
        let (a, aEvents, aAddress) = try await PeerTransportTests.transport(
            1, secret: "the secret of cluster one")
        let (b, bEvents, bAddress) = try await PeerTransportTests.transport(
            2, secret: "the secret of cluster two")
        a.setAddress(bAddress, of: NodeID(rawValue: 2))
        b.setAddress(aAddress, of: NodeID(rawValue: 1))
        a.send(Self.message, to: NodeID(rawValue: 2))
        b.send(Self.message, to: NodeID(rawValue: 1))
        #expect(await aEvents.wait { $0.failed.count == 1 }, "A: \(aEvents.summary)")
        #expect(await bEvents.wait { $0.failed.count == 1 }, "B: \(bEvents.summary)")
        for events in [aEvents, bEvents] {
            events.events.withLockedValue { events in
                #expect(events.received.isEmpty)
                #expect(events.announced.isEmpty, "an unproven peer's address was taken")
                #expect(!events.reachability.contains { $0.1 })
            }
        }
        // Each side refused the other's connection, and saw its own refused.
        #expect(a.refusedConnections == 2 && b.refusedConnections == 2)
        await a.shutdown()
        await b.shutdown()
    }

    @Test("a hello followed by messages, without a proof, delivers nothing and is disconnected")
    func noProof() async throws {
        let (b, events, address) = try await PeerTransportTests.transport(2)
        let stranger = try PeerSocket(port: address.port!)
        stranger.send(
            .hello(
                node: NodeID(rawValue: 66), cluster: "test", listenAddress: "127.0.0.1:1",
                clockMilliseconds: PeerSocket.wallClockMilliseconds()))
        stranger.send(.message(Self.message))
        stranger.send(.message(.quorum(.stored(id: 5, durable: true))))
        let (frames, closed) = stranger.readUntilClosed(timeout: 5)
        #expect(closed)
        #expect(frames.count == 1, "only the challenge: \(frames)")
        if case .challenge? = frames.first {} else { Issue.record("no challenge: \(frames)") }
        #expect(events.events.withLockedValue { $0.received.isEmpty && $0.announced.isEmpty })
        #expect(b.refusedConnections == 1)
        await b.shutdown()
    }

    @Test("random bytes on the peer port are refused before they are buffered")
    func randomBytes() async throws {
        // Three bytes are not even a length prefix: only the handshake timeout ends those.
        let (b, events, address) = try await PeerTransportTests.transport(2) {
            $0.handshakeTimeoutMilliseconds = 500
        }
        var generator = SeededRandom(seed: 14)
        for round in 0..<20 {
            let stranger = try PeerSocket(port: address.port!)
            let count = [3, 100, 5_000, 70_000][round % 4]
            stranger.send((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
            #expect(stranger.readUntilClosed(timeout: 10).closed, "round \(round)")
        }
        // A length prefix over the handshake's limit is refused from the prefix alone.
        let announcer = try PeerSocket(port: address.port!)
        announcer.send([0, 0x10, 0, 0])
        #expect(announcer.readUntilClosed(timeout: 5).closed)
        #expect(b.bufferedFrameBytes == 0)
        #expect(events.events.withLockedValue { $0.received.isEmpty && $0.announced.isEmpty })
        #expect(b.refusedConnections == 21)
        await b.shutdown()
    }

    @Test("a connection that does not finish its handshake in time is closed")
    func handshakeTimeout() async throws {
        let (b, _, address) = try await PeerTransportTests.transport(2) {
            $0.handshakeTimeoutMilliseconds = 300
        }
        let silent = try PeerSocket(port: address.port!)
        let halfway = try PeerSocket(port: address.port!)
        halfway.send(
            .hello(
                node: NodeID(rawValue: 66), cluster: "test", listenAddress: "",
                clockMilliseconds: PeerSocket.wallClockMilliseconds()))
        #expect(silent.readUntilClosed(timeout: 10).closed)
        let (frames, closed) = halfway.readUntilClosed(timeout: 10)
        #expect(closed && frames.count == 1)
        #expect(b.refusedConnections == 2)
        #expect(await Self.eventually { b.inboundConnections.open == 0 })
        await b.shutdown()
    }

    @Test("strangers mid-handshake cannot hold more than their share of connections")
    func handshakingConnectionsAreCapped() async throws {
        let (b, events, address) = try await PeerTransportTests.transport(2) {
            $0.maximumHandshakingConnections = 3
        }
        let strangers = try (0..<3).map { _ in try PeerSocket(port: address.port!) }
        #expect(await Self.eventually { b.inboundConnections.handshaking == 3 })
        let turnedAway = try PeerSocket(port: address.port!)
        #expect(turnedAway.readUntilClosed(timeout: 5).closed)
        for stranger in strangers { #expect(stranger.readFrame(timeout: 0.2) == .timedOut) }
        // Once they are gone, a member gets in.
        for stranger in strangers { stranger.hangUp() }
        #expect(await Self.eventually { b.inboundConnections.open == 0 })
        let member = try PeerSocket(port: address.port!)
        #expect(
            try member.handshake(
                node: NodeID(rawValue: 1), cluster: "test", secret: PeerTransportTests.secret))
        member.send(.message(Self.message))
        #expect(await events.wait { $0.received.count == 1 })
        await b.shutdown()
    }

    @Test("a node sends nothing to an address whose listener cannot prove it holds the secret")
    func impostorListener() async throws {
        let (a, events, _) = try await PeerTransportTests.transport(1)
        let impostor = try PeerListener()
        a.setAddress(try SocketAddress(ipAddress: "127.0.0.1", port: impostor.port), of: NodeID(rawValue: 2))
        a.send(Self.message, to: NodeID(rawValue: 2))
        let connection = try #require(impostor.accept(timeout: 5))
        guard case .frame(.hello) = connection.readFrame(timeout: 5) else {
            Issue.record("no hello")
            return
        }
        connection.send(.challenge(nonce: [UInt8](repeating: 1, count: PeerHandshake.tokenBytes)))
        guard case .frame(.proof) = connection.readFrame(timeout: 5) else {
            Issue.record("no proof")
            return
        }
        connection.send(.accepted(mac: [UInt8](repeating: 2, count: PeerHandshake.tokenBytes)))
        let (frames, closed) = connection.readUntilClosed(timeout: 5)
        #expect(closed)
        #expect(frames.isEmpty, "the impostor was sent \(frames)")
        #expect(await events.wait { $0.failed.count == 1 }, "\(events.summary)")
        #expect(!events.events.withLockedValue { $0.reachability.contains { $0.1 } })
        await a.shutdown()
    }

    @Test("large frames still arriving share one budget, returned when their connections close")
    func frameBudget() async throws {
        let (b, _, address) = try await PeerTransportTests.transport(2) { $0.frameBudgetBytes = 1 << 20 }
        let first = try PeerSocket(port: address.port!)
        #expect(
            try first.handshake(node: NodeID(rawValue: 1), cluster: "test", secret: PeerTransportTests.secret)
        )
        first.send([0, 0x09, 0x60, 0] + [UInt8](repeating: 0, count: 100_000))  // 600 KiB announced
        #expect(await Self.eventually { b.bufferedFrameBytes == 600 << 10 })
        let second = try PeerSocket(port: address.port!)
        #expect(
            try second.handshake(
                node: NodeID(rawValue: 3), cluster: "test", secret: PeerTransportTests.secret))
        second.send([0, 0x09, 0x60, 0] + [UInt8](repeating: 0, count: 100_000))
        #expect(second.readUntilClosed(timeout: 5).closed, "a frame beyond the budget is refused")
        #expect(b.bufferedFrameBytes == 600 << 10)
        first.hangUp()
        #expect(await Self.eventually { b.bufferedFrameBytes == 0 })
        await b.shutdown()
    }

    /// Waits up to five seconds for `condition`.
    static func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}
