import KVCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A TCP listener whose connections each become an `NIOAsyncChannel` of decoded
/// messages: binding (TLS when asked), accepting, counting open connections against the
/// limit, and stopping. The RESP and Mykeyv listeners are this with their own decoder and
/// their own conversation.
final class StreamListener<Inbound: Sendable, Outbound: Sendable>: Sendable {
    typealias Connection = NIOAsyncChannel<Inbound, Outbound>

    /// Names the listener in logs ("RESP", "Mykeyv").
    private let name: String
    private let host: String
    private let port: Int
    private let maximumConnections: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let tls: (@Sendable () -> NIOSSLContext)?
    /// Adds the handlers that turn a connection's bytes into `Inbound` messages and
    /// `Outbound` messages into bytes.
    private let addDecoder: @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void
    /// Holds one connection's conversation; `overLimit` when the listener already had
    /// as many connections as it allows (the conversation says so and ends).
    private let serve: @Sendable (_ connection: Connection, _ overLimit: Bool) async throws -> Void
    private let openConnections = Atomic<Int>(0)
    private let serverChannel = Mutex<(any Channel)?>(nil)
    private let acceptLoop = Mutex<Task<Void, Never>?>(nil)

    init(
        name: String, host: String, port: Int, maximumConnections: Int, group: any EventLoopGroup,
        logger: Logger,
        tls: (@Sendable () -> NIOSSLContext)?,
        addDecoder: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void,
        serve: @escaping @Sendable (_ connection: Connection, _ overLimit: Bool) async throws -> Void
    ) {
        self.name = name
        self.host = host
        self.port = port
        self.maximumConnections = maximumConnections
        self.group = group
        self.logger = logger
        self.tls = tls
        self.addDecoder = addDecoder
        self.serve = serve
    }

    /// Binds and starts accepting; returns the bound address.
    func start() async throws -> SocketAddress {
        let tls = tls
        let addDecoder = addDecoder
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls())) }
                    try addDecoder(sync)
                    return try Connection(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8)))
                }
            }
        guard let address = server.channel.localAddress else {
            throw KVError(.internalError, "the \(name) listener has no address")
        }
        serverChannel.withLock { $0 = server.channel }
        let task = Task { await self.accept(server) }
        acceptLoop.withLock { $0 = task }
        logger.info("\(name) server listening", metadata: ["address": "\(address)"])
        return address
    }

    /// Stops accepting and closes every connection.
    func stop() async {
        let channel = serverChannel.withLock { $0 }
        try? await channel?.close()
        let task = acceptLoop.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    private func accept(_ server: NIOAsyncChannel<Connection, Never>) async {
        await withDiscardingTaskGroup { connections in
            do {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        connections.addTask { await self.hold(connection) }
                    }
                }
            } catch {
                logger.debug("the \(name) listener stopped", metadata: ["error": "\(error)"])
            }
            connections.cancelAll()
        }
    }

    private func hold(_ connection: Connection) async {
        let open = openConnections.add(1, ordering: .relaxed).newValue
        defer { openConnections.subtract(1, ordering: .relaxed) }
        do {
            try await serve(connection, open > maximumConnections)
        } catch {
            logger.debug("a \(name) connection ended", metadata: ["error": "\(error)"])
        }
    }
}
