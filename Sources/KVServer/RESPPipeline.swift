import KVRESP
import NIOCore
import Synchronization

/// One RESP connection's commands, from its bytes to its replies: a reader starts each
/// command as soon as it may run, and a writer sends the replies in the order of the
/// commands, as many as are ready in one write.
///
/// A command that touches only its keys (``RESPSession/keys(of:)``) starts once no
/// earlier command still running touches one of them; any other command (`SELECT`,
/// `HELLO`, scans, flushes) once every earlier one has finished, and nothing starts
/// until it has. Commands on one key therefore run in the order sent, as in Redis, while
/// pipelined commands on different keys share the store's round trips and group
/// commits. A `GET` the store can answer at once from this node's replica
/// (``RESPSession/immediateReply(to:)``) is answered when it would start, without a
/// task; when nothing is owed before it, ``RESPImmediateReplies`` has usually answered it
/// on the event loop already (not before the connection is admitted, nor while the
/// socket takes no more). At most ``maximumCommandsInFlight`` commands are running or waiting for
/// their reply to be sent: a client that stops reading its replies stops being read, so
/// it cannot make the node hold more than that many replies. After `QUIT` nothing more
/// is read.
struct RESPPipeline: Sendable {
    /// The most commands of one connection that run at once.
    static let maximumCommandsInFlight = 32

    let session: RESPSession
    let allocator: ByteBufferAllocator

    /// What the writer sends next, in the order of the commands.
    enum Outgoing: Sendable {
        case reply(Task<RESPSession.Reply?, Never>)
        /// A reply made at once (``RESPSession/immediateReply(to:)``).
        case ready(RESPSession.Reply)
        case protocolError(String)
    }

    /// Runs until the client leaves, sends `QUIT` or breaks the protocol.
    func run(
        _ inbound: NIOAsyncChannelInboundStream<[[UInt8]]>,
        _ outbound: NIOAsyncChannelOutboundWriter<RESPReplies>
    ) async throws {
        let queue = ReplyQueue()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                // However the writer ends, a reader waiting for room must not wait forever.
                defer { queue.closeForWriting() }
                try await write(from: queue, to: outbound)
                return true
            }
            group.addTask {
                defer { queue.finish() }
                try await schedule(inbound, into: queue)
                return false
            }
            // A reader that is done leaves the writer to send what is still due; a writer
            // that is done (QUIT, a protocol error, the peer gone) ends the reader.
            while let writerEnded = try await group.next() {
                if writerEnded {
                    group.cancelAll()
                    break
                }
            }
        }
    }

    private func schedule(_ inbound: NIOAsyncChannelInboundStream<[[UInt8]]>, into queue: ReplyQueue)
        async throws
    {
        var running: [(keys: [[UInt8]]?, task: Task<RESPSession.Reply?, Never>)] = []
        do {
            for try await command in inbound {
                // Until the replies the client has not read yet fall below the limit.
                guard await queue.waitForRoom(below: Self.maximumCommandsInFlight) else { return }
                let keys = RESPSession.keys(of: command)
                // Forget what has finished, oldest first, so the list stays short.
                while let first = running.first, running.count >= Self.maximumCommandsInFlight || keys == nil
                {
                    _ = await first.task.value
                    running.removeFirst()
                }
                if let keys {
                    for earlier in running where earlier.keys.map({ Self.overlap($0, keys) }) ?? true {
                        _ = await earlier.task.value
                    }
                    // Now is when the command would start: a read the store answers at
                    // once needs no task.
                    if let reply = session.immediateReply(to: command) {
                        queue.push(.ready(reply))
                        continue
                    }
                }
                let session = self.session
                let task = Task { await session.execute(command) }
                running.append((keys, task))
                queue.push(.reply(task))
                // Redis reads nothing after QUIT.
                if keys == nil, let reply = await task.value, reply.closesConnection { return }
            }
        } catch let error as RESPProtocolError {
            queue.push(.protocolError(error.message))
        }
    }

    /// Whether two commands share a key. Commands name few keys, so comparing them
    /// pairwise costs less than hashing them.
    private static func overlap(_ first: [[UInt8]], _ second: [[UInt8]]) -> Bool {
        first.contains { key in second.contains(key) }
    }

    private func write(from queue: ReplyQueue, to outbound: NIOAsyncChannelOutboundWriter<RESPReplies>)
        async throws
    {
        while true {
            let items = await queue.takeAll()
            guard !items.isEmpty else { return }
            var buffer = allocator.buffer(capacity: 256)
            // The commands whose replies are in `buffer` (an empty inline line has none),
            // which the connection's ``RESPImmediateReplies`` counts off.
            var commands = 0
            for item in items {
                switch item {
                case .reply(let task):
                    commands += 1
                    guard let reply = await task.value else { continue }
                    reply.value.write(to: &buffer, protocolVersion: reply.protocolVersion)
                    if reply.closesConnection {
                        try await outbound.write(RESPReplies(buffer: buffer, commands: commands))
                        return
                    }
                case .ready(let reply):
                    commands += 1
                    reply.value.write(to: &buffer, protocolVersion: reply.protocolVersion)
                case .protocolError(let message):
                    RESPValue.error(message).write(to: &buffer, protocolVersion: 2)
                    try await outbound.write(RESPReplies(buffer: buffer, commands: commands))
                    return
                }
                // Large replies go out as they come rather than piling up.
                if buffer.readableBytes >= 64 << 10 {
                    try await outbound.write(RESPReplies(buffer: buffer, commands: commands))
                    buffer.clear()
                    commands = 0
                }
            }
            if buffer.readableBytes > 0 || commands > 0 {
                try await outbound.write(RESPReplies(buffer: buffer, commands: commands))
            }
            queue.sent(items.count)
        }
    }
}

/// The replies a connection owes, in order: the reader adds, the writer takes all that
/// have queued up at once, so replies of a pipeline leave in one write. It counts the
/// replies added but not yet sent, which the reader waits on.
final class ReplyQueue: Sendable {
    private struct State {
        var items: [RESPPipeline.Outgoing] = []
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
        /// Added and not yet sent.
        var outstanding = 0
        var roomWaiter: (limit: Int, continuation: CheckedContinuation<Bool, Never>)?
        var writerGone = false
    }

    private let state = Mutex(State())

    func push(_ item: RESPPipeline.Outgoing) {
        let waiter = state.withLock { state in
            state.items.append(item)
            state.outstanding += 1
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// No more items come.
    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Every item queued, waiting for one if there is none; empty once finished and
    /// drained.
    func takeAll() async -> [RESPPipeline.Outgoing] {
        while true {
            let taken: [RESPPipeline.Outgoing]? = state.withLock { state in
                if !state.items.isEmpty {
                    defer { state.items.removeAll(keepingCapacity: true) }
                    return state.items
                }
                return state.finished ? [] : nil
            }
            if let taken { return taken }
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if !state.items.isEmpty || state.finished { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// The writer sent `count` replies.
    func sent(_ count: Int) {
        let resumed = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.outstanding -= count
            guard let waiting = state.roomWaiter, state.outstanding < waiting.limit else { return nil }
            state.roomWaiter = nil
            return waiting.continuation
        }
        resumed?.resume(returning: true)
    }

    /// The writer is gone: nothing more will be sent.
    func closeForWriting() {
        let resumed = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.writerGone = true
            defer { state.roomWaiter = nil }
            return state.roomWaiter?.continuation
        }
        resumed?.resume(returning: false)
    }

    /// Waits until fewer than `limit` replies are outstanding; `false` when the writer is
    /// gone (the connection is ending).
    func waitForRoom(below limit: Int) async -> Bool {
        await withCheckedContinuation { continuation in
            let answer: Bool? = state.withLock { state in
                if state.writerGone { return false }
                if state.outstanding < limit { return true }
                state.roomWaiter = (limit, continuation)
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }
}
