import KVCore
import KVNode
import KVRESP
import NIOCore
import NIOEmbedded
import Testing

@testable import KVServer

/// A `SET` started outside the session (``RESPSession/immediateWrite(_:completion:)``)
/// must store and answer exactly what the session's own `SET` does, must decline
/// whatever the session would answer otherwise, and the event loop's handler must let
/// nothing overtake it or its reply, nor start two SETs of one key together.
@Suite("RESP writes applied where they arrive")
struct RESPLocalWriteTests {
    static func command(_ words: String...) -> [[UInt8]] { words.map { Array($0.utf8) } }

    /// The reply to an immediate write, or `nil` when it was declined.
    static func immediate(_ session: RESPSession, _ words: [[UInt8]]) async -> RESPSession.Reply? {
        await withCheckedContinuation { continuation in
            let started = session.immediateWrite(words) { reply in continuation.resume(returning: reply) }
            if !started { continuation.resume(returning: nil) }
        }
    }

    /// An immediate `SET key value` answers what the session's `SET` of another key
    /// answers, and both keys then read the same.
    static func expectSameAnswer(_ session: RESPSession, _ value: [UInt8], name: String = "SET") async {
        let fast = await Self.immediate(session, [Array(name.utf8), Array("fast".utf8), value])
        let slow = await session.execute([Array(name.utf8), Array("slow".utf8), value])
        #expect(fast?.value == slow?.value)
        #expect(fast?.value == .ok)
        #expect(fast?.protocolVersion == slow?.protocolVersion)
        #expect(fast?.closesConnection == false)
        for command in ["GET", "TTL", "TYPE", "STRLEN"] {
            let fastRead = await RESPLocalReadTests.run(session, Self.command(command, "fast"))
            let slowRead = await RESPLocalReadTests.run(session, Self.command(command, "slow"))
            #expect(fastRead == slowRead, "\(command)")
        }
    }

    @Test("one node applies a plain SET at once, the same as the session")
    func oneNode() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let frontEnd = RESPFrontEnd(service: nodes[0], limits: RESPLimits(maximumBulkBytes: 1 << 10))
            let session = frontEnd.openSession()
            // The database's table is made by the first command that needs it.
            #expect(await Self.immediate(session, Self.command("SET", "fast", "v")) == nil)
            await RESPLocalReadTests.run(session, Self.command("SET", "made", "x"))
            await Self.expectSameAnswer(session, Array("value".utf8))
            await Self.expectSameAnswer(session, [0x0D, 0x0A, 0x00, 0xFF])
            await Self.expectSameAnswer(session, Array("again".utf8), name: "set")
            // A SET clears an expiry and replaces a counter, as the session's does.
            for key in ["fast", "slow"] {
                await RESPLocalReadTests.run(session, Self.command("EXPIRE", key, "3600"))
            }
            await Self.expectSameAnswer(session, Array("kept".utf8))
            for key in ["fast", "slow"] {
                await RESPLocalReadTests.run(session, Self.command("DEL", key))
                await RESPLocalReadTests.run(session, Self.command("INCRBY", key, "41"))
            }
            await Self.expectSameAnswer(session, Array("7".utf8))
            #expect(await RESPLocalReadTests.run(session, Self.command("INCR", "fast")) == .integer(8))

            // Not a plain SET, or over the size limit: the session answers (or refuses) it.
            for words in [
                Self.command("SET", "fast", "v", "NX"), Self.command("SET", "fast"),
                Self.command("SET", "fast", "v", "EX", "10"), Self.command("SETNX", "fast", "v"),
                Self.command("GET", "fast"),
                [Array("SET".utf8), Array("fast".utf8), [UInt8](repeating: 1, count: 1025)],
            ] {
                #expect(await Self.immediate(session, words) == nil)
            }
            let tooLarge = await RESPLocalReadTests.run(
                session, [Array("SET".utf8), Array("fast".utf8), [UInt8](repeating: 1, count: 1025)])
            #expect(tooLarge.map { "\($0)" }?.contains("proto-max-bulk-len") == true)

            // The connection's protocol and database, as the commands that run alone set them.
            await RESPLocalReadTests.run(session, Self.command("HELLO", "3"))
            await Self.expectSameAnswer(session, Array("three".utf8))
            await RESPLocalReadTests.run(session, Self.command("SELECT", "1"))
            #expect(
                await Self.immediate(session, Self.command("SET", "fast", "v")) == nil, "db1 has no table yet"
            )
        }
    }

    @Test("a connection that may not write is answered by the session, with its error")
    func access() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let frontEnd = try RESPLocalReadTests.frontEnd(
                of: nodes[0], tokens: ["admin": .everything, "reader": try AccessGrants(["redis": .read])])
            let admin = frontEnd.openSession()
            await RESPLocalReadTests.run(admin, Self.command("AUTH", "admin"))
            await RESPLocalReadTests.run(admin, Self.command("SET", "made", "x"))
            await Self.expectSameAnswer(admin, Array("value".utf8))

            let stranger = frontEnd.openSession()
            #expect(await Self.immediate(stranger, Self.command("SET", "fast", "v")) == nil)
            let refused = await RESPLocalReadTests.run(stranger, Self.command("SET", "fast", "v"))
            #expect(refused.map { "\($0)" }?.contains("NOAUTH") == true)
            await RESPLocalReadTests.run(stranger, Self.command("AUTH", "reader"))
            #expect(await Self.immediate(stranger, Self.command("SET", "fast", "v")) == nil)
            let denied = await RESPLocalReadTests.run(stranger, Self.command("SET", "fast", "v"))
            #expect(denied.map { "\($0)" }?.contains("NOPERM") == true)
            #expect(
                await RESPLocalReadTests.run(admin, Self.command("GET", "fast")) == .bulk(Array("value".utf8))
            )
        }
    }

    @Test("in a cluster, a plain SET started at once is coordinated, the same as the session's")
    func cluster() async throws {
        try await LocalReadTests.using(.cluster) { nodes in
            for (index, node) in nodes.enumerated() {
                let session = RESPFrontEnd(service: node).openSession()
                await RESPLocalReadTests.run(session, Self.command("SET", "made", "x"))
                await Self.expectSameAnswer(session, Array("value\(index)".utf8))
                let reader = RESPFrontEnd(service: nodes[(index + 1) % nodes.count]).openSession()
                #expect(
                    await RESPLocalReadTests.run(reader, Self.command("GET", "fast"))
                        == .bulk(Array("value\(index)".utf8)))
            }
        }
    }

    /// Counts the reads asked of the channel, to show the handler holds them back.
    final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = ByteBuffer
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    /// Fails the test instead of hanging when `body` does not finish within 10 s.
    static func within<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: .seconds(10))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw KVError(.unavailable, "no answer within 10 s")
            }
            return value
        }
    }

    struct Failure: Error {}

    /// Records, once set to, the commands and errors that reach the pipeline, in order,
    /// and passes the commands on.
    final class ErrorProbe: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = [[UInt8]]
        typealias InboundOut = [[UInt8]]
        var recording = false
        var log: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let command = unwrapInboundIn(data)
            if recording {
                log.append(command.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " "))
            }
            context.fireChannelRead(data)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            log.append("error")
        }
    }

    @Test("SETs started on the event loop are answered once synced, and nothing overtakes them")
    func eventLoopOrder() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let session = RESPFrontEnd(service: nodes[0]).openSession()
            await RESPLocalReadTests.run(session, Self.command("SET", "key", "old"))
            let channel = NIOAsyncTestingChannel()
            let counter = ReadCounter()
            let probe = ErrorProbe()
            try await channel.pipeline.addHandler(counter)
            try await channel.testingEventLoop.executeInContext {
                let handler = RESPImmediateReplies()
                handler.session = session
                try channel.pipeline.syncOperations.addHandler(handler)
                try channel.pipeline.syncOperations.addHandler(probe)
            }
            func written() async throws -> String {
                try await Self.within {
                    String(buffer: try await channel.waitForOutboundWrite(as: ByteBuffer.self))
                }
            }
            func passedOn() async throws -> [String]? {
                try await channel.readInbound(as: [[UInt8]].self).map {
                    $0.map { String(decoding: $0, as: UTF8.self) }
                }
            }
            // Two SETs end their read: both start here. A GET of one's key in the next
            // read, and the channel's next read, wait for their replies.
            let (readsBefore, readsWhileWriting) = try await channel.testingEventLoop.executeInContext {
                let before = counter.reads
                channel.pipeline.fireChannelRead(Self.command("SET", "other", "first"))
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "new"))
                channel.pipeline.fireChannelReadComplete()
                channel.pipeline.read()
                let whileWriting = counter.reads
                channel.pipeline.fireChannelRead(Self.command("GET", "key"))
                channel.pipeline.fireChannelReadComplete()
                return (before, whileWriting)
            }
            #expect(readsWhileWriting == readsBefore, "no read while the writes are in flight")
            #expect(try await written() == "+OK\r\n+OK\r\n")
            #expect(try await written() == "$3\r\nnew\r\n", "the held GET reads the SET's value")
            #expect(try await passedOn() == nil)
            let readsAfter = try await channel.testingEventLoop.executeInContext { counter.reads }
            #expect(readsAfter == readsBefore + 1, "the held read is asked once the replies are written")

            // A SET followed by another command in its read goes to the pipeline with it.
            try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "piped"))
                channel.pipeline.fireChannelRead(Self.command("GET", "key"))
                channel.pipeline.fireChannelReadComplete()
            }
            #expect(try await passedOn() == ["SET", "key", "piped"])
            #expect(try await passedOn() == ["GET", "key"])
            try await channel.writeOutbound(
                RESPReplies(buffer: ByteBuffer(string: "+OK\r\n$5\r\npiped\r\n"), commands: 2))
            #expect(try await written() == "+OK\r\n$5\r\npiped\r\n")

            // Two SETs of one key in a read go to the pipeline, which orders them.
            try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "x"))
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "y"))
                channel.pipeline.fireChannelReadComplete()
            }
            #expect(try await passedOn() == ["SET", "key", "x"])
            #expect(try await passedOn() == ["SET", "key", "y"])
            try await channel.writeOutbound(
                RESPReplies(buffer: ByteBuffer(string: "+OK\r\n+OK\r\n"), commands: 2))
            #expect(try await written() == "+OK\r\n+OK\r\n")

            // With a reply owed, a SET goes to the pipeline too.
            try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "a", "NX"))
                channel.pipeline.fireChannelReadComplete()
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "b"))
                channel.pipeline.fireChannelReadComplete()
            }
            #expect(try await passedOn() == ["SET", "key", "a", "NX"])
            #expect(try await passedOn() == ["SET", "key", "b"])
            try await channel.writeOutbound(
                RESPReplies(buffer: ByteBuffer(string: "$-1\r\n+OK\r\n"), commands: 2))
            #expect(try await written() == "$-1\r\n+OK\r\n")

            // A protocol error in a SET's read follows the SET on to the pipeline; one
            // that arrives while SETs are in flight waits for their replies.
            let atOnce = try await channel.testingEventLoop.executeInContext {
                probe.recording = true
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "c"))
                channel.pipeline.fireErrorCaught(Failure())
                return probe.log
            }
            #expect(atOnce == ["SET key c", "error"])
            try await channel.writeOutbound(RESPReplies(buffer: ByteBuffer(string: "+OK\r\n"), commands: 1))
            #expect(try await written() == "+OK\r\n")
            let whileWriting = try await channel.testingEventLoop.executeInContext {
                channel.pipeline.fireChannelReadComplete()
                channel.pipeline.fireChannelRead(Self.command("SET", "key", "d"))
                channel.pipeline.fireChannelReadComplete()
                channel.pipeline.fireErrorCaught(Failure())
                return probe.log
            }
            #expect(whileWriting == ["SET key c", "error"], "the error waits for the SET's reply")
            #expect(try await written() == "+OK\r\n")
            let after = try await channel.testingEventLoop.executeInContext { probe.log }
            #expect(after == ["SET key c", "error", "error"])

            let applied = try await nodes[0].clusterStatus().counters["writes.applied_locally"]
            #expect(applied == 3, "three SETs were applied by the handler")
            #expect(
                await RESPLocalReadTests.run(session, Self.command("GET", "key")) == .bulk(Array("d".utf8)))
            _ = try? await channel.finish()
        }
    }
}
