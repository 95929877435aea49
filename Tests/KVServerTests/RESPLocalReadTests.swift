import KVCore
import KVNode
import KVRESP
import NIOCore
import NIOEmbedded
import Testing

@testable import KVServer

/// A `GET` answered outside the session (``RESPSession/immediateReply(to:)``) must
/// answer exactly what the session's own `GET` answers, and must decline whatever the
/// session would answer otherwise: a table not made yet, a connection not
/// authenticated or not allowed to read, a read the store coordinates.
@Suite("RESP reads answered where they arrive")
struct RESPLocalReadTests {
    static func command(_ words: String...) -> [[UInt8]] { words.map { Array($0.utf8) } }

    /// Runs `words` through the session, as the listener's ordinary path does.
    @discardableResult
    static func run(_ session: RESPSession, _ words: [[UInt8]]) async -> RESPValue? {
        await session.execute(words)?.value
    }

    /// A front end of `service` whose passwords are the keys of `tokens`.
    static func frontEnd(of service: any KeyValueService, tokens: [String: AccessGrants]) throws
        -> RESPFrontEnd
    {
        RESPFrontEnd(
            service: service,
            authenticate: { token throws(KVError) in
                guard let grants = tokens[token] else { throw KVError(.invalidToken, "unknown token") }
                return grants
            })
    }

    /// The fast reply to `GET key` equals the session's own, in value and protocol.
    static func expectSameAnswer(_ session: RESPSession, _ key: [UInt8], name: String = "GET") async {
        let fast = session.immediateReply(to: [Array(name.utf8), key])
        #expect(fast != nil, "GET \(String(decoding: key, as: UTF8.self)) is answered at once")
        let slow = await session.execute([Array(name.utf8), key])
        #expect(fast?.value == slow?.value)
        #expect(fast?.protocolVersion == slow?.protocolVersion)
        #expect(fast?.closesConnection == false)
    }

    @Test("one node answers every GET at once, the same as the session")
    func oneNode() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let session = RESPFrontEnd(service: nodes[0]).openSession()
            // The database's table is made by the first command that needs it.
            #expect(session.immediateReply(to: Self.command("GET", "plain")) == nil)
            await Self.run(session, Self.command("SET", "plain", "value"))
            await Self.run(session, [Array("SET".utf8), Array("binary".utf8), [0x0D, 0x0A, 0x00, 0xFF]])
            await Self.run(session, Self.command("INCRBY", "counter", "41"))
            await Self.run(session, Self.command("INCR", "counter"))
            await Self.run(session, Self.command("SET", "expiring", "soon", "EX", "3600"))
            await Self.run(session, Self.command("SET", "gone", "x"))
            await Self.run(session, Self.command("DEL", "gone"))
            for key in ["plain", "binary", "counter", "expiring", "gone", "never"] {
                await Self.expectSameAnswer(session, Array(key.utf8))
            }
            #expect(
                session.immediateReply(to: Self.command("GET", "counter"))?.value == .bulk(Array("42".utf8)))
            #expect(session.immediateReply(to: Self.command("GET", "never"))?.value == .null)
            await Self.expectSameAnswer(session, Array("plain".utf8), name: "get")
            await Self.expectSameAnswer(session, Array("plain".utf8), name: "gEt")

            // Not a GET of one key: the session answers (or refuses) it.
            #expect(session.immediateReply(to: Self.command("SET", "plain", "other")) == nil)
            #expect(session.immediateReply(to: Self.command("GET")) == nil)
            #expect(session.immediateReply(to: Self.command("GET", "plain", "extra")) == nil)
            #expect(session.immediateReply(to: Self.command("GETDEL", "plain")) == nil)
            #expect(session.immediateReply(to: Self.command("GE", "plain")) == nil)

            // The connection's protocol and database, as the commands that run alone set them.
            await Self.run(session, Self.command("HELLO", "3"))
            await Self.expectSameAnswer(session, Array("plain".utf8))
            #expect(session.immediateReply(to: Self.command("GET", "plain"))?.protocolVersion == 3)
            await Self.run(session, Self.command("SELECT", "1"))
            #expect(session.immediateReply(to: Self.command("GET", "plain")) == nil, "db1 has no table yet")
            await Self.run(session, Self.command("SET", "plain", "in db1"))
            #expect(
                session.immediateReply(to: Self.command("GET", "plain"))?.value == .bulk(Array("in db1".utf8))
            )
            await Self.run(session, Self.command("SELECT", "0"))
            #expect(
                session.immediateReply(to: Self.command("GET", "plain"))?.value == .bulk(Array("value".utf8)))
        }
    }

    @Test("a connection that may not read is answered by the session, with its error")
    func access() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let frontEnd = try Self.frontEnd(
                of: nodes[0], tokens: ["admin": .everything, "other": try AccessGrants(["elsewhere": .read])])
            let writer = frontEnd.openSession()
            await Self.run(writer, Self.command("AUTH", "admin"))
            await Self.run(writer, Self.command("SET", "key", "value"))
            await Self.expectSameAnswer(writer, Array("key".utf8))

            let stranger = frontEnd.openSession()
            #expect(stranger.immediateReply(to: Self.command("GET", "key")) == nil)
            let refused = await Self.run(stranger, Self.command("GET", "key"))
            #expect(refused.map { "\($0)" }?.contains("NOAUTH") == true)
            await Self.run(stranger, Self.command("AUTH", "other"))
            #expect(stranger.immediateReply(to: Self.command("GET", "key")) == nil)
            let denied = await Self.run(stranger, Self.command("GET", "key"))
            #expect(denied.map { "\($0)" }?.contains("NOPERM") == true)
            await Self.run(stranger, Self.command("AUTH", "admin"))
            await Self.expectSameAnswer(stranger, Array("key".utf8))
        }
    }

    @Test("in a cluster, reads the coordinator spreads over three replicas take the session's path")
    func cluster() async throws {
        try await LocalReadTests.using(.cluster) { nodes in
            for node in nodes {
                let session = RESPFrontEnd(service: node).openSession()
                await Self.run(session, Self.command("SET", "key", "value"))
                #expect(session.immediateReply(to: Self.command("GET", "key")) == nil)
                #expect(await Self.run(session, Self.command("GET", "key")) == .bulk(Array("value".utf8)))
            }
        }
    }

    /// The event loop's handler answers a GET only when no reply is owed before it, and
    /// counts the pipeline's replies off as they pass.
    @Test("GETs on the event loop never overtake a reply owed before them")
    func eventLoopOrder() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let session = RESPFrontEnd(service: nodes[0]).openSession()
            await Self.run(session, Self.command("SET", "key", "value"))
            let channel = EmbeddedChannel()
            let handler = RESPImmediateReplies()
            try channel.pipeline.syncOperations.addHandler(handler)
            func written() throws -> String? {
                try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }
            }
            func passedOn() throws -> [String]? {
                try channel.readInbound(as: [[UInt8]].self).map {
                    $0.map { String(decoding: $0, as: UTF8.self) }
                }
            }
            let get = Self.command("GET", "key")
            // Before the connection is admitted, everything goes to the pipeline.
            try channel.writeInbound(get)
            #expect(try passedOn() == ["GET", "key"])
            try channel.writeOutbound(RESPReplies(buffer: ByteBuffer(string: "$5\r\nvalue\r\n"), commands: 1))
            #expect(try written() == "$5\r\nvalue\r\n")

            handler.session = session
            try channel.writeInbound(get)
            #expect(try passedOn() == nil)
            #expect(try written() == "$5\r\nvalue\r\n")
            // An INCR is owed a reply: the GET after it waits its turn in the pipeline.
            // (A plain SET would be started on the event loop, see RESPLocalWriteTests.)
            try channel.writeInbound(Self.command("INCR", "other"))
            try channel.writeInbound(get)
            #expect(try passedOn() == ["INCR", "other"])
            #expect(try passedOn() == ["GET", "key"])
            #expect(try written() == nil)
            try channel.writeOutbound(RESPReplies(buffer: ByteBuffer(string: ":1\r\n"), commands: 1))
            #expect(try written() == ":1\r\n")
            #expect(try passedOn() == nil)
            try channel.writeInbound(get)
            #expect(try passedOn() == ["GET", "key"], "one reply is still owed")
            try channel.writeOutbound(
                RESPReplies(buffer: ByteBuffer(string: "$5\r\nvalue\r\n$5\r\nvalue\r\n"), commands: 2))
            #expect(try written() == "$5\r\nvalue\r\n$5\r\nvalue\r\n")
            try channel.writeInbound(get)
            #expect(try written() == "$5\r\nvalue\r\n", "nothing owed: answered at once")

            // A socket that takes no more leaves the GET to the pipeline, which bounds
            // what an unread client costs.
            channel.isWritable = false
            try channel.writeInbound(get)
            #expect(try passedOn() == ["GET", "key"])
            channel.isWritable = true
            try channel.writeOutbound(RESPReplies(buffer: ByteBuffer(string: "$5\r\nvalue\r\n"), commands: 1))
            #expect(try written() == "$5\r\nvalue\r\n")

            // Nothing is answered after QUIT, even once its reply has passed.
            try channel.writeInbound(Self.command("quit"))
            try channel.writeOutbound(RESPReplies(buffer: ByteBuffer(string: "+OK\r\n"), commands: 1))
            #expect(try written() == "+OK\r\n")
            try channel.writeInbound(get)
            #expect(try passedOn() == ["quit"])
            #expect(try passedOn() == ["GET", "key"])
            #expect(try written() == nil)
            _ = try? channel.finish()
        }
    }

    /// A TLS handler keeps what is written until it is flushed, so only flushed replies
    /// count against the socket's limit: one read of many GETs of a large value must not
    /// pile up their replies before the first flush.
    @Test("immediate replies are flushed within a read once enough bytes wait")
    func flushedWithinARead() async throws {
        try await LocalReadTests.using(.inProcess) { nodes in
            let session = RESPFrontEnd(service: nodes[0]).openSession()
            let value = [UInt8](repeating: UInt8(ascii: "v"), count: 40 << 10)
            await Self.run(session, [Array("SET".utf8), Array("big".utf8), value])
            let channel = EmbeddedChannel()
            let handler = RESPImmediateReplies()
            handler.session = session
            try channel.pipeline.syncOperations.addHandler(handler)
            // Reads without their end: nothing flushes but the threshold.
            channel.pipeline.fireChannelRead(Self.command("GET", "big"))
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "40 KiB wait for the read's end")
            channel.pipeline.fireChannelRead(Self.command("GET", "big"))
            var flushed = 0
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                flushed += buffer.readableBytes
            }
            #expect(flushed > RESPImmediateReplies.flushThreshold, "80 KiB are flushed at once")
            channel.pipeline.fireChannelRead(Self.command("GET", "big"))
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
            channel.pipeline.fireChannelReadComplete()
            #expect(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes ?? 0 > 40 << 10)
            _ = try? channel.finish()
        }
    }
}
