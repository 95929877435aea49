import KVCore
import KVFunctions
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Refuses a connection over the limit with a complete 503 response, then closes it.
final class ConnectionRefusalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        let response = HTTPConnectionHandler.rawResponse(
            for: KVError(.tooManyConnections, "the server has as many connections as it allows"))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// The HTTP/1.1 server: NIOHTTP1 directly, one ``HTTPConnectionHandler`` per connection.
///
/// Hummingbird 2 was the alternative; it serves about 0.6× the requests per second of a
/// bare NIOHTTP1 handler on this project's machines, below the 0.8× the project asks of
/// its HTTP layer, so the front end is a small router over NIOHTTP1 (docs/benchmarks.md).
public final class HTTPServer: Sendable {
    private let settings: HTTPServerSettings
    private let router: Router
    private let metrics: HTTPMetrics
    private let group: any EventLoopGroup
    private let logger: Logger
    private let openConnections = Atomic<Int>(0)
    private let connections = NIOLockedValueBox<
        [ObjectIdentifier: (channel: any Channel, activity: ConnectionActivity)]
    >(
        [:])
    private let serverChannel = NIOLockedValueBox<(any Channel)?>(nil)
    /// The TLS context for each new connection, or `nil` for plain HTTP. Asked once
    /// per connection, so a context reloaded from new files applies to the next one.
    private let tls: (@Sendable () -> NIOSSLContext)?

    /// Creates a server; nothing listens until ``start()``.
    public init(
        settings: HTTPServerSettings, service: any KeyValueService, group: any EventLoopGroup, logger: Logger,
        metrics: HTTPMetrics = HTTPMetrics(), access: AccessControl = .off,
        tls: (@Sendable () -> NIOSSLContext)? = nil, dialect: HTTPDialect = .kv,
        functions: FunctionSandbox = .shared
    )
        throws(KVError)
    {
        self.tls = tls
        let problems = settings.problems()
        guard problems.isEmpty else { throw KVError(.invalidRequest, problems.joined(separator: "; ")) }
        self.settings = settings
        self.metrics = metrics
        self.router = Router(
            service: service, logger: logger, metrics: metrics, access: access, dialect: dialect,
            functions: functions)
        self.group = group
        self.logger = logger
    }

    /// Binds and starts accepting connections; returns the bound address (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                self.initialize(channel)
            }
            .bind(host: settings.host, port: settings.port)
            .get()
        serverChannel.withLockedValue { $0 = channel }
        guard let address = channel.localAddress else {
            throw KVError(.internalError, "the server has no address")
        }
        logger.info("HTTP server listening", metadata: ["address": "\(address)"])
        return address
    }

    private func initialize(_ channel: any Channel) -> EventLoopFuture<Void> {
        let count = openConnections.add(1, ordering: .relaxed).newValue
        metrics.connections.record(count)
        channel.closeFuture.whenComplete { [self] _ in
            metrics.connections.record(openConnections.subtract(1, ordering: .relaxed).newValue)
            connections.withLockedValue { $0[ObjectIdentifier(channel)] = nil }
        }
        let context = tls?()
        if count > settings.maximumConnections && !closeLongestIdleConnection() {
            metrics.refusedConnections.increment()
            return channel.eventLoop.makeCompletedFuture {
                if let context {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                }
                try channel.pipeline.syncOperations.addHandler(ConnectionRefusalHandler())
            }
        }
        let connection = HTTPConnectionHandler(router: router, settings: settings, logger: logger)
        connections.withLockedValue { $0[ObjectIdentifier(channel)] = (channel, connection.activity) }
        return channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            // TLS first: everything after it sees plaintext, and a client that never
            // completes the handshake sends no request bytes, so it counts as idle.
            if let context { try sync.addHandler(NIOSSLServerHandler(context: context)) }
            try Self.addHTTPHandlers(for: connection, to: sync)
        }
    }

    /// Adds a connection's HTTP/1.1 handlers: raw byte activity, NIO's request decoder,
    /// kv's response encoder (one buffer per small response; see ``ResponseEncoder``), the
    /// connection, which also takes pipelined requests one at a time, in order.
    static func addHTTPHandlers(
        for connection: HTTPConnectionHandler, to pipeline: ChannelPipeline.SynchronousOperations
    ) throws {
        try pipeline.addHandler(ByteActivityHandler(connection: connection))
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        try pipeline.addHandler(ResponseEncoder())
        try pipeline.addHandler(connection)
    }

    /// Makes room for a new connection when the server is full, as production servers
    /// do: the connection that has waited longest between requests (or since it opened,
    /// without a byte) is closed. Returns `false` when every connection is busy.
    private func closeLongestIdleConnection() -> Bool {
        let longest: (any Channel)? = connections.withLockedValue { open in
            let idle = open.values.compactMap { entry in
                entry.activity.idleSinceNanoseconds.map { (since: $0, entry: entry) }
            }
            for candidate in idle.sorted(by: { $0.since < $1.since })
            where candidate.entry.activity.claim(idleSince: candidate.since) {
                return candidate.entry.channel
            }
            return nil
        }
        guard let longest else { return false }
        longest.pipeline.fireUserInboundEventTriggered(CloseIfIdle())
        return true
    }

    /// Stops accepting connections, lets in-flight requests finish (closing each
    /// connection once it is idle), and after the grace period closes whatever is left.
    public func shutdown() async {
        if let channel = serverChannel.withLockedValue({ $0 }) {
            try? await channel.close()
        }
        let open = connections.withLockedValue { $0.values.map(\.channel) }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(CloseWhenIdle())
        }
        let deadline = ContinuousClock.now.advanced(by: .seconds(settings.shutdownGraceSeconds))
        while connections.withLockedValue({ !$0.isEmpty }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for channel in connections.withLockedValue({ $0.values.map(\.channel) }) {
            try? await channel.close()
        }
        logger.info("HTTP server stopped")
    }
}
