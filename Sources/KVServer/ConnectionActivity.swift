import NIOCore
import Synchronization

/// Asks a connection to close once its current request is answered (graceful shutdown).
struct CloseWhenIdle: Sendable {}

/// Asks a connection to close if it is waiting between requests (the server is full).
struct CloseIfIdle: Sendable {}

/// Since when a connection has been waiting between requests, readable from any thread:
/// a full server closes the connection that has waited longest to make room.
final class ConnectionActivity: Sendable {
    /// Uptime nanoseconds when it became idle; 0 while a request is under way.
    private let idleSince = Atomic<UInt64>(0)

    func setIdle() { idleSince.store(max(1, NIODeadline.now().uptimeNanoseconds), ordering: .relaxed) }
    func setBusy() { idleSince.store(0, ordering: .relaxed) }

    /// Takes the connection for closing if it is still idle since `nanoseconds`, so that
    /// two new connections never both count on closing the same one.
    func claim(idleSince nanoseconds: UInt64) -> Bool {
        idleSince.compareExchange(expected: nanoseconds, desired: 0, ordering: .relaxed).exchanged
    }

    /// When it became idle, or `nil` while busy.
    var idleSinceNanoseconds: UInt64? {
        let value = idleSince.load(ordering: .relaxed)
        return value == 0 ? nil : value
    }
}

/// Notices raw bytes before the HTTP decoder sees them, so a request that arrives one
/// byte at a time (slowloris) starts the request timer with its first byte, long before
/// its head is complete.
///
/// It also writes responses that must bypass the HTTP handlers: a request that times
/// out before its head is complete has never reached NIO's pipelining handler, which
/// does not accept a response to a request it has not seen.
final class ByteActivityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: HTTPConnectionHandler
    private var context: ChannelHandlerContext?

    init(connection: HTTPConnectionHandler) {
        self.connection = connection
        connection.byteLevel = self
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes raw bytes straight to the socket, then closes the connection.
    func writeRawAndClose(_ bytes: ByteBuffer) {
        guard let context else { return }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.bytesArrived(unwrapInboundIn(data), context: context)
        context.fireChannelRead(data)
    }
}
