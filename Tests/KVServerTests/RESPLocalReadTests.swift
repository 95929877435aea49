import KVCore
import KVNode
import KVRESP
import Testing

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
            let frontEnd = RESPFrontEnd(
                service: nodes[0],
                authenticate: { token throws(KVError) in
                    switch token {
                    case "admin": return .everything
                    case "other": return try AccessGrants(["elsewhere": .read])
                    default: throw KVError(.invalidToken, "unknown token")
                    }
                })
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
}
