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
/// Plain `SET`s of different keys that make up the rest of a read, with nothing owed
/// before them, are started here together (``RESPSession/immediateWrite(_:completion:)``),
/// at most as many as the pipeline runs at once, and answered together, in order, once
/// the store has acknowledged them all. Until then the connection is not read, and
/// whatever else arrives (commands, a protocol error, the end of the input) is held, so
/// nothing overtakes the writes or their replies. A command that follows such `SET`s in
/// their read and is not a `SET` of yet another key sends them, and itself, on to the
/// pipeline, which orders commands of one key.
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

    /// Something that arrived while writes started here were in flight.
    private enum Held {
        case command([[UInt8]])
        case error(any Error)
        case event(Any)
    }

    /// Set once the connection is admitted.
    var session: RESPSession?
    /// Commands passed on whose replies have not passed yet.
    private var owed = 0
    private var quitting = false
    /// Bytes of immediate replies written and not yet flushed.
    private var unflushed = 0
    /// Flush once this many bytes of immediate replies wait.
    static let flushThreshold = 64 << 10
    /// The `SET`s (each of its own key) that ended the read so far, with nothing owed
    /// before them: started at the end of the read unless another command follows them
    /// in it.
    private var candidates: [[[UInt8]]] = [] {
        didSet { if candidates.isEmpty { candidateKeys.removeAll(keepingCapacity: true) } }
    }
    /// The keys of ``candidates``.
    private var candidateKeys: Set<[UInt8]> = []
    /// The replies of the writes started here, in their order, while any is in flight.
    private var inFlight: [RESPSession.Reply?] = []
    private var unanswered = 0
    private var writing: Bool { !inFlight.isEmpty }
    /// What arrived while ``writing``, in order.
    private var held: [Held] = []
    /// Whether the channel asked for a read while ``writing``.
    private var readDeferred = false
    /// Whether commands were passed on since the pipeline last saw the end of a read
    /// (it takes what it was passed at the end of each read).
    private var passedUnannounced = false
    private var isActive = true

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let command = unwrapInboundIn(data)
        if writing {
            held.append(.command(command))
        } else {
            take(command, context: context)
        }
    }

    /// Answers `command` here, adds it to the read's candidate writes, or passes it on.
    private func take(_ command: [[UInt8]], context: ChannelHandlerContext) {
        if owed == 0, !quitting, context.channel.isWritable, let session {
            if RESPSession.mayWriteImmediately(command),
                candidates.count < RESPPipeline.maximumCommandsInFlight,
                !candidateKeys.contains(command[1])
            {
                candidates.append(command)
                candidateKeys.insert(command[1])
                return
            }
            if candidates.isEmpty, let reply = session.immediateReply(to: command) {
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
        }
        passCandidates(context: context)
        pass(command, context: context)
    }

    /// Sends `command` on to the pipeline.
    private func pass(_ command: [[UInt8]], context: ChannelHandlerContext) {
        if let name = command.first, name.count == 4,
            String(decoding: name, as: UTF8.self).lowercased() == "quit"
        {
            quitting = true
        }
        owed += 1
        passedUnannounced = true
        context.fireChannelRead(wrapInboundOut(command))
    }

    /// Sends the read's candidate writes on to the pipeline: something else follows them.
    private func passCandidates(context: ChannelHandlerContext) {
        let waiting = candidates
        candidates = []
        for command in waiting { pass(command, context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        startCandidates(context: context)
        if unflushed > 0 {
            unflushed = 0
            context.flush()
        }
        passedUnannounced = false
        context.fireChannelReadComplete()
    }

    /// Starts the read's candidate writes. Those from the first the session declines on
    /// wait for the started ones, then are taken again.
    private func startCandidates(context: ChannelHandlerContext) {
        guard !candidates.isEmpty else { return }
        let commands = candidates
        candidates = []
        guard let session else {
            for command in commands { pass(command, context: context) }
            return
        }
        let finish = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        for (index, command) in commands.enumerated() {
            let started = session.immediateWrite(command) { reply in
                eventLoop.execute {
                    let (handler, context) = finish.value
                    handler.answered(index, reply, context: context)
                }
            }
            guard started else {
                if index == 0 {
                    for command in commands { pass(command, context: context) }
                } else {
                    held.insert(contentsOf: commands[index...].map { .command($0) }, at: 0)
                }
                return
            }
            inFlight.append(nil)
            unanswered += 1
        }
    }

    /// The write at `index` of those started here has its reply.
    private func answered(_ index: Int, _ reply: RESPSession.Reply, context: ChannelHandlerContext) {
        inFlight[index] = reply
        unanswered -= 1
        guard unanswered == 0 else { return }
        let replies = inFlight.compactMap { $0 }
        inFlight = []
        guard isActive else { return }
        var buffer = context.channel.allocator.buffer(capacity: 8 * replies.count)
        for reply in replies { reply.value.write(to: &buffer, protocolVersion: reply.protocolVersion) }
        context.write(wrapOutboundOut(buffer), promise: nil)
        // What arrived meanwhile is taken as one read (which starts no write before
        // its end).
        let waiting = held
        held = []
        for item in waiting {
            switch item {
            case .command(let command):
                take(command, context: context)
            case .error(let error):
                passCandidates(context: context)
                context.fireErrorCaught(error)
            case .event(let event):
                passCandidates(context: context)
                context.fireUserInboundEventTriggered(event)
            }
        }
        startCandidates(context: context)
        unflushed = 0
        context.flush()
        if passedUnannounced {
            passedUnannounced = false
            context.fireChannelReadComplete()
        }
        if readDeferred, !writing {
            readDeferred = false
            // From the pipeline's tail: the handlers there decide again whether to read.
            context.pipeline.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if writing {
            held.append(.error(error))
        } else {
            passCandidates(context: context)
            context.fireErrorCaught(error)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if writing {
            held.append(.event(event))
        } else {
            passCandidates(context: context)
            context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        if writing {
            readDeferred = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // SETs waiting for the end of their read go on to the pipeline, as they did
        // before this handler started any.
        passCandidates(context: context)
        isActive = false
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        isActive = false
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let replies = unwrapOutboundIn(data)
        owed -= replies.commands
        context.write(wrapOutboundOut(replies.buffer), promise: promise)
    }
}
