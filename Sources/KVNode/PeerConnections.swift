import CoreMetrics
import KVCluster
import KVCore
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One outbound connection and the messages waiting for it.
final class OutboundPeer: Sendable {
    let peer: NodeID
    let address: SocketAddress
    private struct State {
        /// The connection, once opened; it carries messages only once ``authenticated``.
        var channel: (any Channel)?
        var authenticated = false
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

    /// The connection is open; its handshake is under way.
    func opened(_ channel: any Channel) {
        state.withLockedValue { $0.channel = $0.channel ?? channel }
    }

    /// The peer proved it holds the cluster's secret: messages may go.
    func authenticated(_ channel: any Channel) {
        state.withLockedValue { state in
            state.channel = channel
            state.authenticated = true
        }
    }

    /// The connection, if it may carry messages.
    func channel() -> (any Channel)? {
        state.withLockedValue { $0.authenticated ? $0.channel : nil }
    }

    /// The connection, even mid-handshake: to close it.
    func openedChannel() -> (any Channel)? {
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
            state.authenticated = false
            defer { state.queue = [] }
            return state.queue.map(\.message)
        }
    }
}

/// Runs the accepting side of the handshake on a connection a peer opened, then hands
/// its messages to the transport.
final class InboundPeerHandler: ChannelInboundHandler {
    typealias InboundIn = WireFrame
    typealias OutboundOut = ByteBuffer

    private let transport: PeerTransport
    private var handshake: PeerHandshake.Acceptor
    private let limit: WireFrameLimit
    private let authenticatedFrameBytes: Int
    private let handshakeTimeout: TimeAmount
    private var timeout: Scheduled<Void>?
    private var peer: NodeID?
    private var refused = false

    init(
        transport: PeerTransport, handshake: PeerHandshake.Acceptor, limit: WireFrameLimit,
        authenticatedFrameBytes: Int, handshakeTimeout: TimeAmount
    ) {
        self.transport = transport
        self.handshake = handshake
        self.limit = limit
        self.authenticatedFrameBytes = authenticatedFrameBytes
        self.handshakeTimeout = handshakeTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let reason = "no proof of the cluster secret within \(handshakeTimeout.nanoseconds / 1_000_000) ms"
        timeout = context.eventLoop.scheduleTask(in: handshakeTimeout) { [transport] in
            transport.refused(reason, remote: channel.remoteAddress)
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !refused else { return }
        if let peer {
            guard case .message(let message) = frame else {
                refuse("node \(peer) sent a \(frame.kindName) frame after the handshake", context: context)
                return
            }
            transport.received(message, from: peer)
            return
        }
        switch handshake.received(frame, nowMilliseconds: NodeStorage.wallClockMilliseconds()) {
        case .send(let reply):
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: WireCodec.encode(reply))), promise: nil)
        case .authenticated(let reply):
            timeout?.cancel()
            guard let (node, listenAddress) = handshake.peer else { return }
            peer = node
            // Only a proven peer may send frames of the full size.
            limit.bytes = authenticatedFrameBytes
            if let reply {
                context.writeAndFlush(
                    wrapOutboundOut(ByteBuffer(bytes: WireCodec.encode(reply))), promise: nil)
            }
            transport.authenticated(inbound: context.channel, peer: node, listenAddress: listenAddress)
        case .refuse(let reason):
            refuse(reason, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A peer that sends bytes this node refuses loses its connection; a member
        // reconnects on its next send.
        refuse(
            peer.map { "node \($0) sent a frame this node refuses: \(error)" } ?? "\(error)", context: context
        )
    }

    private func refuse(_ reason: String, context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        timeout?.cancel()
        transport.refused(reason, remote: context.channel.remoteAddress)
        context.close(promise: nil)
    }
}

/// Runs the connecting side of the handshake on a connection this node opened. Once the
/// accepting node has proven itself, `authenticated` is called; after that, the peer
/// has nothing more to say on this connection.
final class OutboundHandshakeHandler: ChannelInboundHandler {
    typealias InboundIn = WireFrame
    typealias OutboundOut = ByteBuffer

    private var handshake: PeerHandshake.Connector
    private let handshakeTimeout: TimeAmount
    private let authenticated: @Sendable (any Channel) -> Void
    private let refused: @Sendable (String) -> Void
    private var timeout: Scheduled<Void>?
    private var done = false

    init(
        handshake: PeerHandshake.Connector, handshakeTimeout: TimeAmount,
        authenticated: @escaping @Sendable (any Channel) -> Void,
        refused: @escaping @Sendable (String) -> Void
    ) {
        self.handshake = handshake
        self.handshakeTimeout = handshakeTimeout
        self.authenticated = authenticated
        self.refused = refused
    }

    func channelActive(context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(in: handshakeTimeout) {
            handler.value.fail("the peer did not complete the handshake in time", context: boundContext.value)
        }
        context.writeAndFlush(
            wrapOutboundOut(ByteBuffer(bytes: WireCodec.encode(handshake.hello))), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if !done && !handshake.isAuthenticated {
            done = true
            refused(
                "the peer closed the connection during the handshake (does it hold the same cluster name and secret?)"
            )
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch handshake.received(unwrapInboundIn(data)) {
        case .send(let reply):
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: WireCodec.encode(reply))), promise: nil)
        case .authenticated:
            timeout?.cancel()
            authenticated(context.channel)
        case .refuse(let reason):
            fail(reason, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail("\(error)", context: context)
    }

    private func fail(_ reason: String, context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        refused(reason)
        context.close(promise: nil)
    }
}

/// Logs refused peer connections (either side's) without letting a flood of them flood the log: at
/// most ``burst`` lines per ``window``, then one line that counts the rest.
final class RefusalLog: Sendable {
    static let burst = 10
    static let window = TimeAmount.seconds(10)

    private let logger: Logger
    private let state = NIOLockedValueBox(
        (windowStart: NIODeadline.uptimeNanoseconds(0), logged: 0, suppressed: 0))
    private let total = NIOLockedValueBox(0)
    private let counter = CoreMetrics.Counter(label: "kv_peer_refused_connections_total")

    init(logger: Logger) {
        self.logger = logger
    }

    /// Refusals so far.
    var count: Int { total.withLockedValue { $0 } }

    func log(_ message: Logger.Message, reason: String, remote: SocketAddress?) {
        total.withLockedValue { $0 += 1 }
        counter.increment()
        let now = NIODeadline.now()
        let (shouldLog, suppressed): (Bool, Int) = state.withLockedValue { state in
            if now - state.windowStart >= Self.window {
                let suppressed = state.suppressed
                state = (now, 1, 0)
                return (true, suppressed)
            }
            guard state.logged < Self.burst else {
                state.suppressed += 1
                return (false, 0)
            }
            state.logged += 1
            return (true, 0)
        }
        if suppressed > 0 {
            logger.warning("\(suppressed) more refused peer connections were not logged")
        }
        if shouldLog {
            logger.warning(
                message, metadata: ["remote": "\(remote.map { "\($0)" } ?? "?")", "reason": "\(reason)"])
        }
    }
}
