import KVRESP
import NIOCore

/// What a RESP connection's pipeline writes: the replies to `commands` of the commands
/// the listener passed on to it, in one buffer (possibly empty: an empty inline line has
/// no reply).
struct RESPReplies: Sendable {
    var buffer: ByteBuffer
    var commands: Int
}

/// Answers a `GET` on the connection's event loop when the store can answer it at once
/// (``RESPSession/immediateReply(to:)``) and nothing is owed before it: no earlier
/// command of the connection is still waiting for its reply to pass. Every other command
/// goes on to the connection's ``RESPPipeline``, whose replies this handler counts as
/// they pass, so a reply written here never overtakes an earlier one.
///
/// It answers nothing before the listener has admitted the connection (``session`` is
/// set), after `QUIT` (Redis reads nothing after it), or while the socket cannot take
/// more (a client that does not read its replies then fills the pipeline, which stops
/// reading it). What it writes is flushed at the end of each read and whenever
/// ``flushThreshold`` bytes are waiting: a TLS handler holds written bytes until they
/// are flushed, so only flushed replies count against the socket's limit, and one read
/// of many GETs must not pile up their replies first.
final class RESPImmediateReplies: ChannelDuplexHandler {
    typealias InboundIn = [[UInt8]]
    typealias InboundOut = [[UInt8]]
    typealias OutboundIn = RESPReplies
    typealias OutboundOut = ByteBuffer

    /// Set once the connection is admitted.
    var session: RESPSession?
    /// Commands passed on whose replies have not passed yet.
    private var owed = 0
    private var quitting = false
    /// Bytes of immediate replies written and not yet flushed.
    private var unflushed = 0
    /// Flush once this many bytes of immediate replies wait.
    static let flushThreshold = 64 << 10

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let command = unwrapInboundIn(data)
        if owed == 0, !quitting, context.channel.isWritable, let session,
            let reply = session.immediateReply(to: command)
        {
            var buffer = context.channel.allocator.buffer(capacity: 64)
            reply.value.write(to: &buffer, protocolVersion: reply.protocolVersion)
            unflushed += buffer.readableBytes
            context.write(wrapOutboundOut(buffer), promise: nil)
            if unflushed >= Self.flushThreshold {
                unflushed = 0
                context.flush()
            }
            return
        }
        if let name = command.first, name.count == 4,
            String(decoding: name, as: UTF8.self).lowercased() == "quit"
        {
            quitting = true
        }
        owed += 1
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if unflushed > 0 {
            unflushed = 0
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let replies = unwrapOutboundIn(data)
        owed -= replies.commands
        context.write(wrapOutboundOut(replies.buffer), promise: promise)
    }
}
