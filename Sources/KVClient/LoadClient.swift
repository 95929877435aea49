import KVCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// One client of a load: one request in flight at a time, each on a connection to the
/// node the step goes to, opened when first needed and again after it is lost. Lives on
/// one event loop and is called only there.
final class LoadClient {
    /// How long to wait before trying again after a connection could not be made.
    static let reconnectPause = TimeAmount.milliseconds(50)

    let nodes: [LoadNode]
    /// The node of every step when there is no route.
    let home: Int
    let route: (@Sendable (LoadStep, UInt64) -> Int)?
    let eventLoop: any EventLoop
    let contexts: LoadContexts
    let script: any LoadScript
    let done: EventLoopPromise<Void>
    private var isDone = false
    /// The ready connection to each node, by index.
    private var ready: [Int: LoadHandler] = [:]
    /// The step waiting for its node's connection, and that node.
    private var waiting: (step: LoadStep, node: Int)?
    /// Steps taken so far: a route's turn, and the counter in request ids.
    private var turn: UInt64 = 0
    /// This client's part of its request ids, random so that no two runs share one.
    private let requestIDPrefix = String(UInt64.random(in: 0...UInt64.max), radix: 16)

    init(
        nodes: [LoadNode], home: Int, route: (@Sendable (LoadStep, UInt64) -> Int)?, eventLoop: any EventLoop,
        contexts: LoadContexts, script: any LoadScript, done: EventLoopPromise<Void>
    ) {
        self.nodes = nodes
        self.home = home
        self.route = route
        self.eventLoop = eventLoop
        self.contexts = contexts
        self.script = script
        self.done = done
    }

    /// Sends the script's next step, connecting first when its node has no connection;
    /// ends the client when the script has ended.
    func sendNext() {
        guard !isDone else { return }
        guard let step = script.next(now: .now()) else {
            isDone = true
            let connections = ready.values
            ready = [:]
            for handler in connections { handler.close() }
            done.succeed(())
            return
        }
        let node = route.map { route in min(max(route(step, turn), 0), nodes.count - 1) } ?? home
        turn &+= 1
        if let handler = ready[node] {
            send(step, on: handler)
        } else {
            waiting = (step, node)
            connect(node)
        }
    }

    private func send(_ step: LoadStep, on handler: LoadHandler) {
        let requests = nodes[handler.node].requests
        if step.isGet {
            handler.send(step, requests: requests, context: nil, requestID: nil)
        } else {
            handler.send(
                step, requests: requests, context: contexts.context(of: step.key),
                requestID: requests.target.identifiesWrites ? "\(requestIDPrefix)-\(turn)" : nil)
        }
    }

    /// Goes on with the next step after a pause, so that a node that refuses or drops
    /// connections is not asked again at full speed.
    private func pauseThenSendNext() {
        let client = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(in: Self.reconnectPause) { client.value.sendNext() }
    }

    private func connect(_ node: Int) {
        let endpoint = nodes[node].endpoint
        let client = NIOLoopBound(self, eventLoop: eventLoop)
        // An address is checked against the certificate's IP names; a host name is
        // also sent as SNI, which must not carry an address.
        let isAddress = (try? SocketAddress(ipAddress: endpoint.host, port: 0)) != nil
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = endpoint.tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(
                                context: tls, serverHostname: isAddress ? nil : endpoint.host))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        LoadHandler(client: client.value, node: node, awaitsHandshake: endpoint.tls != nil))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .whenFailure { _ in client.value.connectionFailed() }
    }

    /// A connection can carry requests: the step waiting for it goes.
    func connectionReady(_ handler: LoadHandler) {
        guard !isDone else {
            handler.close()
            return
        }
        ready[handler.node] = handler
        if let (step, node) = waiting, node == handler.node {
            waiting = nil
            send(step, on: handler)
        }
    }

    /// The connection could not be made (or closed before it was ready): the step
    /// waiting for it fails, and the client goes on after a pause.
    func connectionFailed() {
        guard let (step, _) = waiting else { return }
        waiting = nil
        script.ended(step, .failed(.unavailable), latency: .zero, now: .now())
        pauseThenSendNext()
    }

    /// A connection that was ready closed; the step it carried, if any, fails and the
    /// client goes on (connecting again when a step needs the node), after a pause when
    /// the connection had answered nothing.
    func connectionClosed(_ handler: LoadHandler, carrying step: (LoadStep, NIODeadline)?) {
        if ready[handler.node] === handler { ready[handler.node] = nil }
        guard let (step, sentAt) = step else { return }
        let now = NIODeadline.now()
        script.ended(step, .failed(.unavailable), latency: now - sentAt, now: now)
        if handler.answers == 0 { pauseThenSendNext() } else { sendNext() }
    }

    /// A step's request could not be written (its connection was already gone).
    func notSent(_ step: LoadStep) {
        script.ended(step, .failed(.unavailable), latency: .zero, now: .now())
        pauseThenSendNext()
    }

    /// A step was answered on `handler`'s connection.
    func answered(
        _ step: LoadStep, _ answer: LoadResponseParser.Response, sentAt: NIODeadline, on handler: LoadHandler
    ) {
        let now = NIODeadline.now()
        let outcome = Self.outcome(of: step, answer)
        if outcome == .succeeded, let context = answer.context { contexts.record(context, for: step.key) }
        script.ended(step, outcome, latency: now - sentAt, now: now)
        guard answer.closes else {
            sendNext()
            return
        }
        // The server closes this connection after its answer: the next step goes on a
        // new one, after a pause when this one's only answer was an error (a server
        // that refuses connections answers each with one error and closes it).
        if ready[handler.node] === handler { ready[handler.node] = nil }
        handler.close()
        if handler.answers <= 1 && outcome != .succeeded { pauseThenSendNext() } else { sendNext() }
    }

    static func outcome(of step: LoadStep, _ answer: LoadResponseParser.Response) -> LoadOutcome {
        switch (step.isGet, answer.status) {
        case (true, 200), (true, 300), (false, 204): return .succeeded
        default:
            let error = HTTPKeyValueService.failure(
                ClientResponse(status: answer.status, headers: HTTPHeaders(), body: answer.errorBody))
            if step.isGet, answer.status == 404, error.code == .rowNotFound { return .succeeded }
            return .failed(error.code)
        }
    }
}

/// One connection of a load client: writes a step's request as bytes encoded in one
/// buffer, reads the answer with ``LoadResponseParser``, and hands it to the client.
final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// How long a TLS handshake may take once the TCP connection is up.
    static let handshakeTimeout = TimeAmount.seconds(5)

    /// The node it connects to, by index.
    let node: Int
    private let client: LoadClient
    private let awaitsHandshake: Bool
    private var context: ChannelHandlerContext?
    private var parser = LoadResponseParser()
    private var inFlight: (step: LoadStep, sentAt: NIODeadline)?
    private var isReady = false
    private var handshakeDeadline: Scheduled<Void>?
    private var timeoutCheck: RepeatedTask?
    private var request = ByteBuffer()
    /// Answers read on this connection.
    private(set) var answers = 0

    init(client: LoadClient, node: Int, awaitsHandshake: Bool) {
        self.client = client
        self.node = node
        self.awaitsHandshake = awaitsHandshake
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if awaitsHandshake {
            let channel = context.channel
            handshakeDeadline = context.eventLoop.scheduleTask(in: Self.handshakeTimeout) {
                channel.close(promise: nil)
            }
        } else {
            becameReady()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            handshakeDeadline?.cancel()
            handshakeDeadline = nil
            becameReady()
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func becameReady() {
        isReady = true
        if let context {
            // One check per connection and interval, not a timer per request: a request
            // older than the limit closes the connection, which fails its step.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let limit = client.nodes[node].requests.target.requestTimeout
            // Checked at most once a second, and at least every 10 ms however short the
            // limit (a limit of zero would otherwise make the check spin).
            let interval = max(.milliseconds(10), min(limit, .seconds(1)))
            timeoutCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) {
                _ in
                handler.value.closeIfOverdue(limit: limit)
            }
        }
        client.connectionReady(self)
    }

    /// Fails a request older than `limit` and closes its connection. The step is
    /// reported here, not when the channel goes (over TLS closing takes a round trip,
    /// during which a late answer is now ignored and no step is written on it).
    private func closeIfOverdue(limit: TimeAmount) {
        guard let overdue = inFlight, NIODeadline.now() - overdue.sentAt > limit else { return }
        inFlight = nil
        close()
        client.connectionClosed(self, carrying: overdue)
    }

    /// Writes the request of `step`.
    func send(_ step: LoadStep, requests: LoadRequests, context requestContext: String?, requestID: String?) {
        guard let context else {
            client.notSent(step)
            return
        }
        requests.encode(step, context: requestContext, requestID: requestID, into: &request)
        inFlight = (step, .now())
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    func close() {
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        do {
            // Handing an answer over writes the next request; that never touches the
            // parser.
            try parser.parse(&bytes) { answer in
                // An answer with no request in flight is the server's own (a timeout's
                // answer before it closes, say): nothing to report.
                guard let (step, sentAt) = inFlight else { return }
                inFlight = nil
                answers += 1
                client.answered(step, answer, sentAt: sentAt, on: self)
            }
        } catch {
            // Bytes that are not a response this client can frame: the connection goes,
            // and the step it carried fails.
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
        timeoutCheck?.cancel()
        if isReady {
            let carried = inFlight
            inFlight = nil
            client.connectionClosed(self, carrying: carried)
        } else {
            client.connectionFailed()
        }
        context.fireChannelInactive()
    }
}
