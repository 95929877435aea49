import KVCluster
import KVCore
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// What a ``PeerTransport`` reports to the node that owns it.
public protocol PeerTransportDelegate: AnyObject, Sendable {
    /// A message arrived from `node`.
    func transport(received message: ReplicaMessage, from node: NodeID)
    /// A message could not be delivered to `node` (no connection, the connection broke
    /// before it was written, or too much is already queued for that peer).
    func transport(failedToSend message: ReplicaMessage, to node: NodeID)
    /// The connection to `node` was established or lost.
    func transport(peer node: NodeID, isReachable: Bool)
    /// A peer said hello on a connection it opened, naming where it listens.
    func transport(peer node: NodeID, announcedAddress: String)
}

/// Settings of a ``PeerTransport``.
public struct PeerTransportSettings: Hashable, Sendable {
    /// The cluster's name: peers of another cluster are disconnected after `hello`.
    public var cluster: String
    /// The secret peers prove they hold before they may say anything but hello.
    public var secret: ClusterSecret
    /// The largest frame accepted from a peer.
    public var maximumFrameBytes: Int
    /// Bytes that may wait unsent for one peer before further messages to it fail
    /// at once (backpressure: a slow peer cannot make this node buffer without bound).
    public var maximumQueuedBytesPerPeer: Int
    /// How long a connection attempt may take.
    public var connectTimeoutMilliseconds: Int64
    /// How long a frame may wait in a peer's send queue: an older one is dropped (and
    /// reported as not sent) instead of written. Bounding how stale a delivered message
    /// can be is what lets a tombstone be reaped a fixed time after every replica holds
    /// it (a store of a value it covers cannot still be queued somewhere).
    public var maximumFrameAgeMilliseconds: Int64
    /// The default of ``maximumFrameAgeMilliseconds``.
    public static let defaultMaximumFrameAgeMilliseconds: Int64 = 5_000
    /// How long a connection may take to complete the handshake before it is closed.
    public var handshakeTimeoutMilliseconds: Int64 = 5_000
    /// How far a peer's wall clock may be from this node's when it connects; a peer
    /// further off is refused (`nil`: not checked). Expiry times and last-writer-wins
    /// timestamps compare the clocks of different nodes (docs/replication.md).
    public var maximumClockSkewMilliseconds: Int64? = 1_000
    /// The most connections peers may hold open to this node at once.
    public var maximumInboundConnections = 512
    /// The most of them that may be mid-handshake at once: strangers cannot crowd out
    /// members by opening connections and saying nothing.
    public var maximumHandshakingConnections = 64
    /// Room for large frames still arriving, shared by every inbound connection.
    public var frameBudgetBytes = 512 << 20

    /// Creates settings.
    public init(
        cluster: String = "kv", secret: ClusterSecret,
        maximumFrameBytes: Int = WireCodec.defaultMaximumFrameBytes,
        maximumQueuedBytesPerPeer: Int = 64 << 20, connectTimeoutMilliseconds: Int64 = 1_000,
        maximumFrameAgeMilliseconds: Int64 = Self.defaultMaximumFrameAgeMilliseconds
    ) {
        self.maximumFrameAgeMilliseconds = maximumFrameAgeMilliseconds
        self.cluster = cluster
        self.secret = secret
        self.maximumFrameBytes = maximumFrameBytes
        self.maximumQueuedBytesPerPeer = maximumQueuedBytesPerPeer
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
    }
}

/// TLS for node-to-node connections: both sides present a certificate signed by the
/// cluster's CA (mutual TLS), on top of the secret's handshake. Each context is asked
/// for once per connection, so contexts reloaded from new files apply to the next one.
public struct PeerTLS: Sendable {
    /// The context of connections peers open to this node (it asks for their certificate).
    public var server: @Sendable () -> NIOSSLContext
    /// The context of connections this node opens (it presents its own certificate).
    public var client: @Sendable () -> NIOSSLContext

    /// Creates the pair.
    public init(
        server: @escaping @Sendable () -> NIOSSLContext, client: @escaping @Sendable () -> NIOSSLContext
    ) {
        self.server = server
        self.client = client
    }
}

/// Node-to-node messaging over persistent TCP connections carrying ``WireFrame``s.
///
/// Each node sends on one outbound connection per peer, opened on first use and
/// reopened on the next send after it breaks; it receives on the connections its
/// peers opened. Every connection starts with the ``PeerHandshake``: the connecting
/// node's hello (node id, cluster name and listen address), then a challenge-response
/// in which each side proves it holds the cluster's secret. So a receiver knows who
/// speaks, refuses other clusters and strangers, and can answer a node it has never
/// heard of; and a node sends nothing to an address until whoever answers there has
/// proven itself. Requests and replies are
/// matched by the ids inside the messages, so one connection carries any number of
/// concurrent requests. Timeouts belong to the ``Coordinator``'s timers; the transport
/// only reports what it could not send.
public final class PeerTransport: Sendable {
    private let node: NodeID
    private let settings: PeerTransportSettings
    private let group: any EventLoopGroup
    private let logger: Logger
    private let delegateBox = NIOLockedValueBox<(any PeerTransportDelegate)?>(nil)
    private let addresses = NIOLockedValueBox<[NodeID: SocketAddress]>([:])
    private let outbound = NIOLockedValueBox<[NodeID: OutboundPeer]>([:])
    /// The connections peers opened, with the peer each said it is in its hello.
    private let inbound = NIOLockedValueBox<[ObjectIdentifier: (channel: any Channel, peer: NodeID?)]>([:])
    private let serverChannel = NIOLockedValueBox<(any Channel)?>(nil)
    private let advertised = NIOLockedValueBox("")
    /// Addresses with an introduction under way.
    private let introducing = NIOLockedValueBox<Set<String>>([])
    private let budget: WireFrameBudget
    private let refusals: RefusalLog
    private let tls: PeerTLS?

    /// Creates a transport; it neither listens nor connects until told to. With `tls`,
    /// every connection is mutual TLS before the handshake starts.
    public init(
        node: NodeID, settings: PeerTransportSettings, group: any EventLoopGroup, logger: Logger,
        tls: PeerTLS? = nil
    ) {
        self.tls = tls
        self.node = node
        self.settings = settings
        self.group = group
        self.logger = logger
        budget = WireFrameBudget(totalBytes: settings.frameBudgetBytes)
        refusals = RefusalLog(logger: logger)
    }

    /// How many peer connections were refused or failed their handshake, either side's.
    public var refusedConnections: Int { refusals.count }

    /// Bytes of large frames still arriving on inbound connections.
    public var bufferedFrameBytes: Int { budget.heldBytes }

    /// How many connections peers hold open to this node, and how many of them are
    /// still in their handshake.
    public var inboundConnections: (open: Int, handshaking: Int) {
        inbound.withLockedValue { ($0.count, $0.values.count { $0.peer == nil }) }
    }

    /// Sets who hears about messages and failures. Held strongly until ``shutdown()``.
    public func setDelegate(_ delegate: any PeerTransportDelegate) {
        delegateBox.withLockedValue { $0 = delegate }
    }

    private var delegate: (any PeerTransportDelegate)? { delegateBox.withLockedValue { $0 } }

    /// Listens for peers on `host:port` (port 0 picks one) and returns the bound address.
    public func listen(host: String, port: Int) async throws -> SocketAddress {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let id = ObjectIdentifier(channel)
                    let refusal: String? = inbound.withLockedValue { connections in
                        if connections.count >= settings.maximumInboundConnections {
                            return "\(connections.count) peer connections are open, the most this node allows"
                        }
                        if connections.values.count(where: { $0.peer == nil })
                            >= settings.maximumHandshakingConnections
                        {
                            return
                                "\(settings.maximumHandshakingConnections) peer connections are mid-handshake already"
                        }
                        connections[id] = (channel, nil)
                        return nil
                    }
                    if let refusal {
                        refused(refusal, remote: channel.remoteAddress)
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { [self] _ in
                        _ = inbound.withLockedValue { $0.removeValue(forKey: id) }
                    }
                    let limit = WireFrameLimit(bytes: PeerHandshake.maximumUnauthenticatedFrameBytes)
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLServerHandler(context: tls.server()))
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(WireFrameDecoder(limit: limit, budget: budget)),
                        InboundPeerHandler(
                            transport: self,
                            handshake: PeerHandshake.Acceptor(
                                secret: settings.secret, cluster: settings.cluster, nonce: Self.nonce(),
                                maximumClockSkewMilliseconds: settings.maximumClockSkewMilliseconds),
                            limit: limit, authenticatedFrameBytes: settings.maximumFrameBytes,
                            handshakeTimeout: .milliseconds(settings.handshakeTimeoutMilliseconds)),
                    ])
                }
            }
            .bind(host: host, port: port).get()
        serverChannel.withLockedValue { $0 = channel }
        return channel.localAddress!
    }

    /// Where `peer` listens. A changed address takes effect on the next connection.
    public func setAddress(_ address: SocketAddress, of peer: NodeID) {
        addresses.withLockedValue { $0[peer] = address }
    }

    /// Whether a connection to `peer` is open right now.
    public func isConnected(to peer: NodeID) -> Bool {
        outbound.withLockedValue { $0[peer] }?.channel() != nil
    }

    /// Closes every connection with `peer`, failing what waits on them: this node's own,
    /// and those `peer` opened to this node. A peer answers over its own connection, so a
    /// silent one of its own leaves this node's requests unanswered just as a silent one
    /// of this node's does; closed, each side opens a new one with its next send.
    public func reconnect(to peer: NodeID) {
        outbound.withLockedValue { $0[peer] }?.openedChannel()?.close(promise: nil)
        let opened = inbound.withLockedValue { $0.values.filter { $0.peer == peer }.map(\.channel) }
        for channel in opened { channel.close(promise: nil) }
    }

    /// Whether an address of `peer` is known.
    public func knowsAddress(of peer: NodeID) -> Bool {
        addresses.withLockedValue { $0[peer] != nil }
    }

    /// The address (`host:port`) this node names in its hello, so that peers it
    /// connects to can connect back.
    public func setAdvertisedAddress(_ address: String) {
        advertised.withLockedValue { $0 = address }
    }

    /// Connects to a node whose id is not known yet (a seed), completes the handshake,
    /// sends `message`, then closes the connection. The seed learns this node's id and
    /// address from the hello and answers over its own connection. Failures are only
    /// logged: the caller retries.
    public func introduce(to address: SocketAddress, message: ReplicaMessage) {
        // One introduction per address at a time: a caller that retries faster than a
        // handshake completes must not pile connections up at the seed.
        let key = "\(address)"
        guard introducing.withLockedValue({ $0.insert(key).inserted }) else { return }
        let frame = ByteBuffer(bytes: WireCodec.encode(.message(message)))
        bootstrap(
            authenticated: { channel in
                channel.writeAndFlush(frame).whenComplete { _ in channel.close(promise: nil) }
            },
            refused: { [self] reason in
                refusals.log("the handshake with a seed failed", reason: reason, remote: address)
            }
        )
        .connect(to: address)
        .whenComplete { [self] result in
            switch result {
            case .success(let channel):
                channel.closeFuture.whenComplete { [self] _ in
                    _ = introducing.withLockedValue { $0.remove(key) }
                }
            case .failure(let error):
                _ = introducing.withLockedValue { $0.remove(key) }
                logger.debug("cannot reach seed", metadata: ["address": "\(address)", "error": "\(error)"])
            }
        }
    }

    private func hello() -> WireFrame {
        .hello(
            node: node, cluster: settings.cluster, listenAddress: advertised.withLockedValue { $0 },
            clockMilliseconds: NodeStorage.wallClockMilliseconds())
    }

    /// A fresh handshake nonce.
    static func nonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<PeerHandshake.tokenBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// A bootstrap whose connections run the connecting side of the handshake.
    private func bootstrap(
        authenticated: @escaping @Sendable (any Channel) -> Void,
        refused: @escaping @Sendable (String) -> Void
    ) -> ClientBootstrap {
        ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(settings.connectTimeoutMilliseconds))
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Peers are named by address, not host name: the CA and the secret
                    // decide who is a member (the client context skips host names).
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls.client(), serverHostname: nil))
                    }
                    // The accepting node sends only its handshake frames on this connection.
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(
                            WireFrameDecoder(
                                maximumFrameBytes: PeerHandshake.maximumUnauthenticatedFrameBytes)),
                        OutboundHandshakeHandler(
                            handshake: PeerHandshake.Connector(
                                secret: settings.secret, hello: hello(), nonce: Self.nonce()),
                            handshakeTimeout: .milliseconds(settings.handshakeTimeoutMilliseconds),
                            authenticated: authenticated, refused: refused),
                    ])
                }
            }
    }

    /// Sends `message` to `peer`, connecting first if needed. Failures are reported to
    /// the delegate, never thrown: the coordinator counts them like a lost reply.
    public func send(_ message: ReplicaMessage, to peer: NodeID) {
        // Encoded once, here: the size counts against the peer's queue limit, and the
        // bytes are what the connection writes.
        let encoded = WireCodec.encode(.message(message))
        let address = addresses.withLockedValue { $0[peer] }
        let (peerState, isNew): (OutboundPeer?, Bool) = outbound.withLockedValue { peers in
            if let existing = peers[peer] { return (existing, false) }
            guard let address else { return (nil, false) }
            let created = OutboundPeer(peer: peer, address: address)
            peers[peer] = created
            return (created, true)
        }
        if let peerState, isNew { connect(peerState) }
        guard let peerState else {
            delegate?.transport(failedToSend: message, to: peer)
            return
        }
        guard peerState.enqueue(message, encoded: encoded, limit: settings.maximumQueuedBytesPerPeer) else {
            delegate?.transport(failedToSend: message, to: peer)
            return
        }
        flush(peerState)
    }

    /// Stops listening and closes every connection.
    public func shutdown() async {
        let server = serverChannel.withLockedValue { $0 }
        try? await server?.close()
        let peers = outbound.withLockedValue { peers in
            defer { peers = [:] }
            return Array(peers.values)
        }
        for peer in peers { try? await peer.openedChannel()?.close() }
        for channel in inbound.withLockedValue({ $0.values.map(\.channel) }) { try? await channel.close() }
        delegateBox.withLockedValue { $0 = nil }
    }

    // MARK: - Outbound connections

    private func connect(_ peer: OutboundPeer) {
        // Outbound connections carry this node's messages once the handshake is done;
        // the peer answers on its own outbound connection.
        bootstrap(
            authenticated: { [self] channel in
                peer.authenticated(channel)
                delegate?.transport(peer: peer.peer, isReachable: true)
                flush(peer)
            },
            refused: { [self] reason in
                refusals.log("the handshake with a peer failed", reason: reason, remote: peer.address)
            }
        )
        .connect(to: peer.address)
        .whenComplete { [self] result in
            switch result {
            case .success(let channel):
                peer.opened(channel)
                channel.closeFuture.whenComplete { [self] _ in disconnected(peer) }
            case .failure(let error):
                logger.debug(
                    "cannot connect to peer", metadata: ["peer": "\(peer.peer)", "error": "\(error)"])
                disconnected(peer)
            }
        }
    }

    /// Forgets a broken connection and fails whatever was queued on it; the next send
    /// connects again.
    private func disconnected(_ peer: OutboundPeer) {
        outbound.withLockedValue { peers in
            if peers[peer.peer] === peer { peers[peer.peer] = nil }
        }
        let unsent = peer.close()
        delegate?.transport(peer: peer.peer, isReachable: false)
        for message in unsent { delegate?.transport(failedToSend: message, to: peer.peer) }
    }

    /// Writes whatever is queued for `peer` once it is connected.
    ///
    /// At most one flush per peer is scheduled at a time, and it takes everything queued
    /// when it runs: under load, the messages of many concurrent operations leave in one
    /// system call instead of one each.
    private func flush(_ peer: OutboundPeer) {
        guard let channel = peer.channel(), peer.scheduleFlush() else { return }
        channel.eventLoop.execute { [self] in
            let messages = peer.drain()
            let oldest = NIODeadline.now() - .milliseconds(settings.maximumFrameAgeMilliseconds)
            for (message, encoded, queuedAt) in messages {
                guard queuedAt >= oldest else {
                    // Too stale to send (see ``PeerTransportSettings/maximumFrameAgeMilliseconds``).
                    peer.written(encoded.count)
                    delegate?.transport(failedToSend: message, to: peer.peer)
                    continue
                }
                let promise = channel.eventLoop.makePromise(of: Void.self)
                promise.futureResult.whenComplete { [self] result in
                    peer.written(encoded.count)
                    if case .failure = result { delegate?.transport(failedToSend: message, to: peer.peer) }
                }
                channel.write(ByteBuffer(bytes: encoded), promise: promise)
            }
            channel.flush()
        }
    }

    // MARK: - Inbound

    /// A peer proved itself on a connection it opened.
    func authenticated(inbound channel: any Channel, peer: NodeID, listenAddress: String) {
        inbound.withLockedValue { $0[ObjectIdentifier(channel)]?.peer = peer }
        if !listenAddress.isEmpty { delegate?.transport(peer: peer, announcedAddress: listenAddress) }
    }

    /// A message arrived from a proven peer.
    func received(_ message: ReplicaMessage, from peer: NodeID) {
        delegate?.transport(received: message, from: peer)
    }

    /// A connection was refused: logged (within limits) and counted.
    func refused(_ reason: String, remote: SocketAddress?) {
        refusals.log("refused a peer connection", reason: reason, remote: remote)
    }
}
