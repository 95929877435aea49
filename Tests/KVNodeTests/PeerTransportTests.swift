import KVCluster
import KVCore
import KVNode
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Records what a transport reports.
final class RecordingDelegate: PeerTransportDelegate {
    struct Events {
        var received: [(ReplicaMessage, NodeID)] = []
        var failed: [(ReplicaMessage, NodeID)] = []
        var reachability: [(NodeID, Bool)] = []
        var announced: [(NodeID, String)] = []
    }
    let events = NIOLockedValueBox(Events())

    func transport(received message: ReplicaMessage, from node: NodeID) {
        events.withLockedValue { $0.received.append((message, node)) }
    }

    func transport(failedToSend message: ReplicaMessage, to node: NodeID) {
        events.withLockedValue { $0.failed.append((message, node)) }
    }

    func transport(peer node: NodeID, isReachable: Bool) {
        events.withLockedValue { $0.reachability.append((node, isReachable)) }
    }

    func transport(peer node: NodeID, announcedAddress: String) {
        events.withLockedValue { $0.announced.append((node, announcedAddress)) }
    }

    /// What was reported so far, for a failed expectation's message.
    var summary: String {
        events.withLockedValue { events in
            "reachability \(events.reachability.map { "\($0.0):\($0.1)" }), "
                + "received \(events.received.count), failed \(events.failed.count)"
        }
    }

    /// Waits up to five seconds for `condition`.
    func wait(_ condition: (Events) -> Bool) async -> Bool {
        for _ in 0..<500 {
            if events.withLockedValue({ condition($0) }) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}

/// Node-to-node messaging over real sockets on 127.0.0.1.
@Suite("Peer transport")
struct PeerTransportTests {
    static let group = MultiThreadedEventLoopGroup.singleton

    static let secret = "peer-transport-test-secret"

    static func settings(cluster: String = "test", secret: String = Self.secret) throws
        -> PeerTransportSettings
    {
        PeerTransportSettings(cluster: cluster, secret: try ClusterSecret(secret))
    }

    static func transport(
        _ node: UInt64, cluster: String = "test", secret: String = Self.secret,
        configure: (inout PeerTransportSettings) -> Void = { _ in }
    ) async throws -> (PeerTransport, RecordingDelegate, SocketAddress) {
        var settings = try Self.settings(cluster: cluster, secret: secret)
        configure(&settings)
        let transport = PeerTransport(
            node: NodeID(rawValue: node), settings: settings, group: group, logger: Logger(label: "test"))
        let delegate = RecordingDelegate()
        transport.setDelegate(delegate)
        let address = try await transport.listen(host: "127.0.0.1", port: 0)
        return (transport, delegate, address)
    }

    @Test("messages and replies cross real connections, many at once, in order")
    func exchange() async throws {
        let (a, aEvents, aAddress) = try await Self.transport(1)
        let (b, bEvents, bAddress) = try await Self.transport(2)
        a.setAddress(bAddress, of: NodeID(rawValue: 2))
        b.setAddress(aAddress, of: NodeID(rawValue: 1))
        for id in UInt64(1)...200 {
            a.send(
                .quorum(.fetch(id: id, key: ReplicaKey(partition: PartitionID(rawValue: 3), bytes: [1, 2]))),
                to: NodeID(rawValue: 2))
        }
        #expect(await bEvents.wait { $0.received.count == 200 })
        let ids = bEvents.events.withLockedValue { events in
            events.received.map { message, from -> UInt64 in
                #expect(from == NodeID(rawValue: 1))
                if case .quorum(.fetch(let id, _)) = message { return id }
                return 0
            }
        }
        #expect(ids == Array(1...200))
        b.send(.quorum(.stored(id: 7, durable: true)), to: NodeID(rawValue: 1))
        #expect(await aEvents.wait { $0.received.count == 1 })
        #expect(
            aEvents.events.withLockedValue { $0.received.first?.0 } == .quorum(.stored(id: 7, durable: true)))
        #expect(aEvents.events.withLockedValue { $0.failed.isEmpty })
        await a.shutdown()
        await b.shutdown()
    }

    @Test("a peer with no address, or nobody listening, is a reported failure")
    func unreachable() async throws {
        let (a, events, _) = try await Self.transport(1)
        a.send(.quorum(.stored(id: 1, durable: true)), to: NodeID(rawValue: 9))
        #expect(events.events.withLockedValue { $0.failed.count } == 1, "no address: failed at once")

        // A port bound without listening refuses connections, and stays ours (no other
        // test can start listening on it) until the socket is closed.
        let reserved = try ReservedPort()
        defer { reserved.close() }
        a.setAddress(try SocketAddress(ipAddress: "127.0.0.1", port: reserved.port), of: NodeID(rawValue: 2))
        a.send(.quorum(.stored(id: 2, durable: true)), to: NodeID(rawValue: 2))
        #expect(await events.wait { $0.failed.count == 2 })
        #expect(events.events.withLockedValue { $0.reachability.last?.1 } == false)
        await a.shutdown()
    }

    @Test(
        "reconnecting to a silent peer closes the connection it opened to this node as well as this node's own"
    )
    func reconnectClosesBothDirections() async throws {
        let (a, aEvents, aAddress) = try await Self.transport(1)
        let (b, bEvents, bAddress) = try await Self.transport(2)
        let (one, two) = (NodeID(rawValue: 1), NodeID(rawValue: 2))
        a.setAddress(bAddress, of: two)
        b.setAddress(aAddress, of: one)
        // Each opens its own connection: A's requests go on A's, B's answers on B's.
        a.send(
            .quorum(.fetch(id: 1, key: ReplicaKey(partition: PartitionID(rawValue: 3), bytes: [1]))), to: two)
        b.send(.quorum(.stored(id: 1, durable: true)), to: one)
        #expect(await aEvents.wait { $0.received.count == 1 })
        #expect(await bEvents.wait { $0.received.count == 1 })
        #expect(a.isConnected(to: two) && b.isConnected(to: one))
        // A finds B silent: B's connection to A closes too, so B's next answer goes on a
        // new one.
        a.reconnect(to: two)
        #expect(
            await bEvents.wait { $0.reachability.map(\.1) == [true, false] },
            "B: \(bEvents.summary); A: \(aEvents.summary)")
        #expect(await aEvents.wait { $0.reachability.map(\.1) == [true, false] }, "A: \(aEvents.summary)")
        b.send(.quorum(.stored(id: 2, durable: true)), to: one)
        #expect(
            await aEvents.wait { $0.received.count == 2 }, "A: \(aEvents.summary); B: \(bEvents.summary)")
        #expect(b.isConnected(to: one))
        await a.shutdown()
        await b.shutdown()
    }

    @Test("a peer of another cluster is refused")
    func otherCluster() async throws {
        let (a, aEvents, _) = try await Self.transport(1, cluster: "blue")
        let (b, bEvents, bAddress) = try await Self.transport(2, cluster: "green")
        a.setAddress(bAddress, of: NodeID(rawValue: 2))
        a.send(.quorum(.stored(id: 1, durable: true)), to: NodeID(rawValue: 2))
        // The connection is made, then closed by the other side after hello: the peer
        // never counts as reached, and the message fails.
        #expect(await aEvents.wait { $0.failed.count == 1 }, "A: \(aEvents.summary)")
        #expect(aEvents.events.withLockedValue { $0.reachability.map(\.1) } == [false])
        #expect(bEvents.events.withLockedValue { $0.received.isEmpty })
        #expect(b.refusedConnections == 1)
        await a.shutdown()
        await b.shutdown()
    }

    @Test("after a peer restarts, the next send reconnects to its new address")
    func reconnect() async throws {
        let (a, aEvents, _) = try await Self.transport(1)
        let (b, bEvents, bAddress) = try await Self.transport(2)
        a.setAddress(bAddress, of: NodeID(rawValue: 2))
        a.send(.quorum(.stored(id: 1, durable: true)), to: NodeID(rawValue: 2))
        #expect(await bEvents.wait { $0.received.count == 1 })
        await b.shutdown()
        #expect(await aEvents.wait { $0.reachability.last.map { !$0.1 } ?? false })

        let restarted = PeerTransport(
            node: NodeID(rawValue: 2), settings: try Self.settings(), group: Self.group,
            logger: Logger(label: "test"))
        let restartedEvents = RecordingDelegate()
        restarted.setDelegate(restartedEvents)
        // It comes back on another port (rebinding the old one could race with other
        // tests' ephemeral ports); the new address applies to the next connection.
        let restartedAddress = try await restarted.listen(host: "127.0.0.1", port: 0)
        a.setAddress(restartedAddress, of: NodeID(rawValue: 2))
        a.send(.quorum(.stored(id: 2, durable: true)), to: NodeID(rawValue: 2))
        #expect(await restartedEvents.wait { $0.received.count == 1 })
        await a.shutdown()
        await restarted.shutdown()
    }
}

/// A TCP port bound on 127.0.0.1 but not listening: connecting to it is refused.
struct ReservedPort {
    let descriptor: Int32
    let port: Int

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard descriptor >= 0, bound == 0, named == 0 else { throw SocketAddressError.unsupported }
        self.descriptor = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() { _ = Glibc.close(descriptor) }
}
