import KVCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// A complete HTTP response as the client sees it.
public struct ClientResponse: Sendable {
    /// The status code.
    public var status: Int
    /// The headers.
    public var headers: HTTPHeaders
    /// The body.
    public var body: [UInt8]
}

/// Why a request failed below HTTP, carried as the ``KVError/underlying`` error of a
/// `server.unavailable` failure, so a client can tell whether the request may have
/// reached the server.
public enum TransportFailure: Error, Hashable, Sendable {
    /// No connection could be made: the request was never sent.
    case notConnected
    /// Every connection the client allows to the node stayed busy for the whole wait:
    /// the request was never sent, and the node is busy, not down.
    case busy
    /// The connection broke, or the request timed out, after the request was (or may
    /// have been) sent: the server may have acted on it.
    case lost
}

/// Takes the body of a streamed response piece by piece, on the connection's event loop.
public typealias ResponseSink = @Sendable ([UInt8]) -> Void

/// Collects response parts into complete responses, answering requests in order.
///
/// It also says when the connection can carry requests (``ready``): at once over plain
/// TCP, after the handshake over TLS. A connection whose handshake fails (an untrusted
/// certificate) or that closes first is never handed out as connected, so the caller
/// learns why, with the request not sent, rather than a lost request later (or, when
/// the failure won the race, a confusing error from the pipeline).
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    /// How long a TLS handshake may take once the TCP connection is up.
    static let handshakeTimeout = TimeAmount.seconds(5)

    /// Succeeded when requests can be sent; failed with why they cannot.
    let ready: EventLoopPromise<Void>
    private let awaitsHandshake: Bool
    private var isReadySettled = false
    private var handshakeDeadline: Scheduled<Void>?

    init(ready: EventLoopPromise<Void>, awaitsHandshake: Bool) {
        self.ready = ready
        self.awaitsHandshake = awaitsHandshake
    }

    private var waiting: [(promise: EventLoopPromise<ClientResponse>, sink: ResponseSink?)] = []
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    /// Where the body of the response being read goes, when its request gave a sink and
    /// the answer is a success (an error's body is collected, to be reported).
    private var streamingTo: ResponseSink?

    func enqueue(_ promise: EventLoopPromise<ClientResponse>, sink: ResponseSink? = nil) {
        waiting.append((promise, sink))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let responseHead):
            // 1xx responses (100 Continue) precede the real one.
            guard responseHead.status.code >= 200 else { return }
            head = responseHead
            body = []
            streamingTo = (200..<300).contains(responseHead.status.code) ? waiting.first?.sink : nil
        case .body(var chunk):
            let bytes = chunk.readBytes(length: chunk.readableBytes) ?? []
            if let streamingTo {
                streamingTo(bytes)
            } else {
                body.append(contentsOf: bytes)
            }
        case .end:
            guard let responseHead = head, !waiting.isEmpty else { return }
            head = nil
            streamingTo = nil
            waiting.removeFirst().promise.succeed(
                ClientResponse(
                    status: Int(responseHead.status.code), headers: responseHead.headers, body: body))
            body = []
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        if awaitsHandshake {
            let channel = context.channel
            let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
            handshakeDeadline = context.eventLoop.scheduleTask(in: Self.handshakeTimeout) {
                loopBoundSelf.value.settleReady(
                    .failure(
                        KVError(
                            .unavailable, "the TLS handshake did not finish within \(Self.handshakeTimeout)"))
                )
                channel.close(promise: nil)
            }
        } else {
            settleReady(.success(()))
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            settleReady(.success(()))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settleReady(.failure(KVError(.unavailable, "the server closed the connection before it was ready")))
        failAll(KVError(.unavailable, "the server closed the connection", underlying: TransportFailure.lost))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settleReady(.failure(error))
        failAll(KVError(.unavailable, "the connection failed: \(error)", underlying: TransportFailure.lost))
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A connection that never became active (refused, timed out) is torn down
        // without an inactive event.
        settleReady(.failure(KVError(.unavailable, "the connection closed before it was ready")))
    }

    private func settleReady(_ result: Result<Void, any Error>) {
        guard !isReadySettled else { return }
        isReadySettled = true
        handshakeDeadline?.cancel()
        handshakeDeadline = nil
        ready.completeWith(result)
    }

    private func failAll(_ error: KVError) {
        let pending = waiting
        waiting = []
        for entry in pending { entry.promise.fail(error) }
    }
}

/// How a client reaches a kv server and proves who it is.
public struct HTTPClientOptions: Sendable, Hashable {
    /// The bearer token sent with every request, if any.
    public var token: String?
    /// Whether to speak HTTPS (an `https://` URL sets it).
    public var useTLS: Bool
    /// The PEM file of the CA that signed the server's certificate; `nil` trusts the
    /// system's roots.
    public var caFile: String?
    /// How long a whole-body request may wait for its answer before the connection is
    /// closed and the request fails as lost; `nil` waits as long as the server takes.
    /// Streamed requests are not limited (a large value takes as long as it takes).
    public var requestTimeout: Duration?

    /// Creates options.
    public init(
        token: String? = nil, useTLS: Bool = false, caFile: String? = nil, requestTimeout: Duration? = nil
    ) {
        self.token = token
        self.useTLS = useTLS
        self.caFile = caFile
        self.requestTimeout = requestTimeout
    }

    /// Options from the environment: the token in `KV_TOKEN`, the CA in `KV_CA_FILE`.
    public static func environment(_ variables: [String: String]) -> HTTPClientOptions {
        HTTPClientOptions(
            token: variables["KV_TOKEN"].flatMap { $0.isEmpty ? nil : $0 },
            caFile: variables["KV_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The TLS context these options ask for, or `nil` for plain HTTP.
    func tlsContext() throws(KVError) -> NIOSSLContext? {
        guard useTLS else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile { configuration.trustRoots = .file(caFile) }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw KVError(
                .invalidRequest, "cannot set up TLS with the CA file \(caFile ?? "(system)"): \(error)")
        }
    }
}

/// One persistent HTTP/1.1 connection to a kv server.
///
/// Calls may overlap (an actor lets a second call start while the first waits): their
/// requests are then pipelined and the answers matched in order. When the server has
/// closed the connection (idle timeout, an error answer, a restart), the next call
/// connects again; a request that was already sent is not repeated.
public actor HTTPConnection {
    private var channel: any Channel
    private var collector: NIOLoopBound<ResponseCollector>
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let options: HTTPClientOptions
    private let tls: NIOSSLContext?
    /// The host and port this connection talks to, for messages.
    public nonisolated let authority: String

    /// Connects to `host:port`.
    public init(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        options: HTTPClientOptions = HTTPClientOptions()
    )
        async throws(KVError)
    {
        self.host = host
        self.port = port
        self.group = group
        self.options = options
        tls = try options.tlsContext()
        authority = "\(host):\(port)"
        (channel, collector) = try await Self.connect(host: host, port: port, group: group, tls: tls)
    }

    private static func connect(host: String, port: Int, group: any EventLoopGroup, tls: NIOSSLContext?)
        async throws(KVError) -> (any Channel, NIOLoopBound<ResponseCollector>)
    {
        // An address is checked against the certificate's IP names; a host name is
        // also sent as SNI, which must not carry an address.
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        do {
            let (channel, collector, ready) = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(5))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : host))
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        let collector = ResponseCollector(
                            ready: channel.eventLoop.makePromise(), awaitsHandshake: tls != nil)
                        do {
                            try channel.pipeline.syncOperations.addHandler(collector)
                        } catch {
                            collector.ready.fail(error)
                            throw error
                        }
                        return (
                            channel, NIOLoopBound(collector, eventLoop: channel.eventLoop),
                            collector.ready.futureResult
                        )
                    }
                }
            do {
                try await ready.get()
            } catch {
                channel.close(promise: nil)
                throw error
            }
            return (channel, collector)
        } catch {
            throw KVError(
                .unavailable, "cannot connect to \(host):\(port): \(error)",
                underlying: TransportFailure.notConnected)
        }
    }

    /// Sends one request and waits for its complete response.
    public func send(
        _ method: HTTPMethod, _ target: String, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8]? = nil
    ) async throws(KVError) -> ClientResponse {
        var headers = headers
        headers.replaceOrAdd(name: "host", value: authority)
        if let token = options.token, !headers.contains(name: "authorization") {
            headers.add(name: "authorization", value: "Bearer " + token)
        }
        if let body { headers.replaceOrAdd(name: "content-length", value: String(body.count)) }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: headers)
        if !channel.isActive {
            (channel, collector) = try await Self.connect(host: host, port: port, group: group, tls: tls)
        }
        let channel = channel
        let collector = collector
        let timeout = options.requestTimeout
        let authority = authority
        do {
            return try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<ClientResponse> in
                let promise = channel.eventLoop.makePromise(of: ClientResponse.self)
                if let timeout {
                    // Answers are matched in order, so a request that never gets one
                    // blocks those behind it: the connection goes, failing them all.
                    let timer = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
                        promise.fail(
                            KVError(
                                .unavailable, "\(authority) did not answer within \(timeout)",
                                underlying: TransportFailure.lost))
                        channel.close(promise: nil)
                    }
                    promise.futureResult.whenComplete { _ in timer.cancel() }
                }
                collector.value.enqueue(promise)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                if let body, !body.isEmpty {
                    channel.write(
                        HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
                }
                channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { promise.fail($0) }
                return promise.futureResult
            }.get()
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(
                .unavailable, "the request to \(authority) failed: \(error)",
                underlying: TransportFailure.lost)
        }
    }

    /// Sends one request whose body is read from `body` piece by piece, each written
    /// before the next is read (so a slow server slows the reader down), and waits for the
    /// response. With a `sink`, a successful response's body goes to it as it arrives
    /// instead of into ``ClientResponse/body``. `length`, when known, is sent as the
    /// Content-Length; otherwise the body is chunked.
    public func stream(
        _ method: HTTPMethod, _ target: String, headers: HTTPHeaders = HTTPHeaders(), length: Int64? = nil,
        body: (any ValueBody)? = nil, sink: ResponseSink? = nil
    ) async throws(KVError) -> ClientResponse {
        var headers = headers
        headers.replaceOrAdd(name: "host", value: authority)
        if let token = options.token, !headers.contains(name: "authorization") {
            headers.add(name: "authorization", value: "Bearer " + token)
        }
        if let length {
            headers.replaceOrAdd(name: "content-length", value: String(length))
        } else if body != nil {
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: headers)
        if !channel.isActive {
            (channel, collector) = try await Self.connect(host: host, port: port, group: group, tls: tls)
        }
        let channel = channel
        let collector = collector
        let promise = channel.eventLoop.makePromise(of: ClientResponse.self)
        do {
            try await channel.eventLoop.submit {
                collector.value.enqueue(promise, sink: sink)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
            }.get()
            if let body {
                while let piece = try await body.next() {
                    try await channel.writeAndFlush(
                        HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: piece)))
                    )
                    .get()
                }
            }
            try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        } catch let error as KVError {
            throw error
        } catch {
            // The server may have answered (and closed) before the whole body was sent:
            // its answer says why; the collector fails the promise once the connection
            // is gone.
            if let answered = try? await promise.futureResult.get() { return answered }
            throw KVError(
                .unavailable, "the request to \(authority) failed: \(error)",
                underlying: TransportFailure.lost)
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(
                .unavailable, "the request to \(authority) failed: \(error)",
                underlying: TransportFailure.lost)
        }
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }
}
