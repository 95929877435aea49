import KVCore
import KVRESP
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Cuts RESP commands out of a connection's bytes (see ``RESPParser``).
struct RESPCommandDecoder: ByteToMessageDecoder {
    typealias InboundOut = [[UInt8]]
    var parser: RESPParser

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let command = try parser.next(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(command))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        try decode(context: context, buffer: &buffer)
    }
}

/// The node's Redis-protocol listener: each connection's commands run through its
/// ``RESPSession`` as its ``RESPPipeline`` schedules them, and the replies keep the
/// commands' order. A connection stops being read while its pipeline is full, which
/// bounds what a client can make the node hold; a protocol error is answered and closes
/// the connection, as in Redis.
public final class RESPServer: Sendable {
    private let frontEnd: RESPFrontEnd
    private let host: String
    private let port: Int
    private let maximumConnections: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let tls: (@Sendable () -> NIOSSLContext)?
    private let openConnections = Atomic<Int>(0)
    private let serverChannel = Mutex<(any Channel)?>(nil)
    private let acceptLoop = Mutex<Task<Void, Never>?>(nil)

    /// Creates a listener on `host:port` (0 picks a free port).
    public init(
        frontEnd: RESPFrontEnd, host: String, port: Int, maximumConnections: Int = 10_000,
        group: any EventLoopGroup, logger: Logger, tls: (@Sendable () -> NIOSSLContext)? = nil
    ) {
        self.frontEnd = frontEnd
        self.host = host
        self.port = port
        self.maximumConnections = maximumConnections
        self.group = group
        self.logger = logger
        self.tls = tls
    }

    /// Binds and starts accepting; returns the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        let limits = frontEnd.limits
        let tls = self.tls
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls())) }
                    try sync.addHandler(
                        ByteToMessageHandler(RESPCommandDecoder(parser: RESPParser(limits: limits))))
                    return try NIOAsyncChannel<[[UInt8]], ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8)))
                }
            }
        guard let address = server.channel.localAddress else {
            throw KVError(.internalError, "the RESP listener has no address")
        }
        serverChannel.withLock { $0 = server.channel }
        frontEnd.listening(on: address.port ?? port)
        let task = Task { await self.accept(server) }
        acceptLoop.withLock { $0 = task }
        logger.info("RESP server listening", metadata: ["address": "\(address)"])
        return address
    }

    /// Stops accepting and closes every connection.
    public func stop() async {
        let channel = serverChannel.withLock { $0 }
        try? await channel?.close()
        let task = acceptLoop.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    private func accept(_ server: NIOAsyncChannel<NIOAsyncChannel<[[UInt8]], ByteBuffer>, Never>) async {
        await withDiscardingTaskGroup { connections in
            do {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        connections.addTask { await self.serve(connection) }
                    }
                }
            } catch {
                logger.debug("the RESP listener stopped", metadata: ["error": "\(error)"])
            }
            connections.cancelAll()
        }
    }

    private func serve(_ connection: NIOAsyncChannel<[[UInt8]], ByteBuffer>) async {
        let open = openConnections.add(1, ordering: .relaxed).newValue
        defer { openConnections.subtract(1, ordering: .relaxed) }
        let session = frontEnd.openSession()
        do {
            try await connection.executeThenClose { inbound, outbound in
                if open > maximumConnections {
                    try await outbound.write(
                        connection.channel.allocator.buffer(string: "-ERR max number of clients reached\r\n"))
                    return
                }
                try await RESPPipeline(session: session, allocator: connection.channel.allocator).run(
                    inbound, outbound)
            }
        } catch {
            logger.debug("a RESP connection ended", metadata: ["error": "\(error)"])
        }
        await session.close()
    }
}
