import KVCore
import KVRESP
import Logging
import NIOCore
import NIOPosix
import NIOSSL

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
    private let listener: StreamListener<[[UInt8]], RESPReplies>

    /// Creates a listener on `host:port` (0 picks a free port).
    public init(
        frontEnd: RESPFrontEnd, host: String, port: Int, maximumConnections: Int = 10_000,
        group: any EventLoopGroup, logger: Logger, tls: (@Sendable () -> NIOSSLContext)? = nil
    ) {
        self.frontEnd = frontEnd
        let limits = frontEnd.limits
        listener = StreamListener(
            name: "RESP", host: host, port: port, maximumConnections: maximumConnections, group: group,
            logger: logger, tls: tls,
            addDecoder: {
                try $0.addHandler(
                    ByteToMessageHandler(RESPCommandDecoder(parser: RESPParser(limits: limits))))
                try $0.addHandler(RESPImmediateReplies())
            },
            serve: { connection, overLimit in
                try await Self.serve(connection, overLimit: overLimit, frontEnd: frontEnd)
            })
    }

    /// Binds and starts accepting; returns the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        let address = try await listener.start()
        frontEnd.listening(on: address.port ?? 0)
        return address
    }

    /// Stops accepting and closes every connection.
    public func stop() async {
        await listener.stop()
    }

    private static func serve(
        _ connection: NIOAsyncChannel<[[UInt8]], RESPReplies>, overLimit: Bool, frontEnd: RESPFrontEnd
    ) async throws {
        let session = frontEnd.openSession()
        do {
            try await connection.executeThenClose { inbound, outbound in
                if overLimit {
                    let refusal = connection.channel.allocator.buffer(
                        string: "-ERR max number of clients reached\r\n")
                    try await outbound.write(RESPReplies(buffer: refusal, commands: 0))
                    return
                }
                // Admitted: GETs the store answers at once may now be answered on the
                // connection's event loop.
                let channel = connection.channel
                try await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.handler(type: RESPImmediateReplies.self).session =
                        session
                }.get()
                try await RESPPipeline(session: session, allocator: connection.channel.allocator).run(
                    inbound, outbound)
            }
        } catch {
            await session.close()
            throw error
        }
        await session.close()
    }
}
