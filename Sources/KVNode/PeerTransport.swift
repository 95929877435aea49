import KVCluster
import KVCore
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

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

    /// Creates settings.
    public init(
        cluster: String = "kv", maximumFrameBytes: Int = WireCodec.defaultMaximumFrameBytes,
        maximumQueuedBytesPerPeer: Int = 64 << 20, connectTimeoutMilliseconds: Int64 = 1_000,
        maximumFrameAgeMilliseconds: Int64 = Self.defaultMaximumFrameAgeMilliseconds
    ) {
        self.maximumFrameAgeMilliseconds = maximumFrameAgeMilliseconds
        self.cluster = cluster
        self.maximumFrameBytes = maximumFrameBytes
        self.maximumQueuedBytesPerPeer = maximumQueuedBytesPerPeer
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
    }
}

/// Node-to-node messaging over persistent TCP connections carrying ``WireFrame``s.
///
/// Each node sends on one outbound connection per peer, opened on first use and
/// reopened on the next send after it breaks; it receives on the connections its
/// peers opened. Both directions start with `hello` (node id, cluster name and listen
/// address), so a receiver knows who speaks, refuses other clusters, and can answer a
/// node it has never heard of. Requests and replies are
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

    /// Creates a transport; it neither listens nor connects until told to.
    public init(node: NodeID, settings: PeerTransportSettings, group: any EventLoopGroup, logger: Logger) {
        self.node = node
        self.settings = settings
        self.group = group
        self.logger = logger
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
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(WireFrameDecoder(maximumFrameBytes: settings.maximumFrameBytes)),
                        InboundPeerHandler(transport: self),
                    ])
                    let id = ObjectIdentifier(channel)
                    inbound.withLockedValue { $0[id] = (channel, nil) }
                    channel.closeFuture.whenComplete { [self] _ in
                        _ = inbound.withLockedValue { $0.removeValue(forKey: id) }
                    }
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
        outbound.withLockedValue { $0[peer] }?.channel()?.close(promise: nil)
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

    /// Connects to a node whose id is not known yet (a seed), says hello and sends
    /// `message`, then closes the connection. The seed learns this node's id and
    /// address from the hello and answers over its own connection. Failures are only
    /// logged: the caller retries.
    public func introduce(to address: SocketAddress, message: ReplicaMessage) {
        let frames = WireCodec.encode(hello()) + WireCodec.encode(.message(message))
        ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(settings.connectTimeoutMilliseconds))
            .connect(to: address)
            .whenComplete { [logger] result in
                switch result {
                case .success(let channel):
                    channel.writeAndFlush(ByteBuffer(bytes: frames)).whenComplete { _ in
                        channel.close(promise: nil)
                    }
                case .failure(let error):
                    logger.debug(
                        "cannot reach seed", metadata: ["address": "\(address)", "error": "\(error)"])
                }
            }
    }

    private func hello() -> WireFrame {
        .hello(node: node, cluster: settings.cluster, listenAddress: advertised.withLockedValue { $0 })
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
        for peer in peers { try? await peer.channel()?.close() }
        for channel in inbound.withLockedValue({ $0.values.map(\.channel) }) { try? await channel.close() }
        delegateBox.withLockedValue { $0 = nil }
    }

    // MARK: - Outbound connections

    private func connect(_ peer: OutboundPeer) {
        // Outbound connections only carry already-encoded frames this way; the peer
        // answers on its own outbound connection, so nothing is read here.
        ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(settings.connectTimeoutMilliseconds))
            .connect(to: peer.address)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    channel.writeAndFlush(ByteBuffer(bytes: WireCodec.encode(hello())), promise: nil)
                    peer.connected(channel)
                    channel.closeFuture.whenComplete { [self] _ in disconnected(peer) }
                    delegate?.transport(peer: peer.peer, isReachable: true)
                    flush(peer)
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

    fileprivate func receivedFrame(_ frame: WireFrame, on channel: any Channel, peer: inout NodeID?) {
        switch frame {
        case .hello(let node, let cluster, let listenAddress):
            guard cluster == settings.cluster else {
                logger.warning(
                    "refusing a peer of another cluster",
                    metadata: ["peer": "\(node)", "cluster": "\(cluster)"])
                channel.close(promise: nil)
                return
            }
            peer = node
            inbound.withLockedValue { $0[ObjectIdentifier(channel)]?.peer = node }
            if !listenAddress.isEmpty { delegate?.transport(peer: node, announcedAddress: listenAddress) }
        case .message(let message):
            guard let peer else {
                logger.warning("a peer sent a message before hello; closing its connection")
                channel.close(promise: nil)
                return
            }
            delegate?.transport(received: message, from: peer)
        }
    }
}

/// One outbound connection and the messages waiting for it.
final class OutboundPeer: Sendable {
    let peer: NodeID
    let address: SocketAddress
    private struct State {
        var channel: (any Channel)?
        var queue: [(message: ReplicaMessage, encoded: [UInt8], queuedAt: NIODeadline)] = []
        var queuedBytes = 0
        var closed = false
        var flushScheduled = false
    }
    private let state = NIOLockedValueBox(State())

    init(peer: NodeID, address: SocketAddress) {
        self.peer = peer
        self.address = address
    }

    /// Queues a message and its frame unless that would exceed `limit` bytes waiting.
    func enqueue(_ message: ReplicaMessage, encoded: [UInt8], limit: Int) -> Bool {
        state.withLockedValue { state in
            guard !state.closed, state.queuedBytes + encoded.count <= limit else { return false }
            state.queue.append((message, encoded, NIODeadline.now()))
            state.queuedBytes += encoded.count
            return true
        }
    }

    func connected(_ channel: any Channel) {
        state.withLockedValue { $0.channel = channel }
    }

    func channel() -> (any Channel)? {
        state.withLockedValue { $0.channel }
    }

    /// Marks a flush as scheduled; `false` if one already is (it will take what is
    /// queued now).
    func scheduleFlush() -> Bool {
        state.withLockedValue { state in
            guard !state.flushScheduled else { return false }
            state.flushScheduled = true
            return true
        }
    }

    /// Takes the queued messages for writing and ends the scheduled flush; their bytes
    /// count until ``written(_:)``.
    func drain() -> [(message: ReplicaMessage, encoded: [UInt8], queuedAt: NIODeadline)] {
        state.withLockedValue { state in
            state.flushScheduled = false
            defer { state.queue = [] }
            return state.queue
        }
    }

    func written(_ bytes: Int) {
        state.withLockedValue { $0.queuedBytes -= bytes }
    }

    /// Marks the connection gone and returns what was never handed to it.
    func close() -> [ReplicaMessage] {
        state.withLockedValue { state in
            state.closed = true
            state.channel = nil
            defer { state.queue = [] }
            return state.queue.map(\.message)
        }
    }
}

/// Reads frames from a connection a peer opened.
private final class InboundPeerHandler: ChannelInboundHandler {
    typealias InboundIn = WireFrame

    private let transport: PeerTransport
    private var peer: NodeID?

    init(transport: PeerTransport) {
        self.transport = transport
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        transport.receivedFrame(unwrapInboundIn(data), on: context.channel, peer: &peer)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A peer that sends bytes we refuse loses its connection; it reconnects.
        context.close(promise: nil)
    }
}
