import KVCore
import KVNode
import KVStorageMemory
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import KVServer

/// The connection handler in the server's own pipeline on an `EmbeddedChannel`, so the
/// order in which bytes arrive is exact rather than up to the socket.
@Suite("HTTP connection handler")
struct ConnectionHandlerTests {
    /// Runs `body` with a channel whose router serves a one-node cluster, then stops it.
    static func withChannel(_ body: (EmbeddedChannel) throws -> Void) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let node = try await ServiceFixture.startCluster(
            of: 1, settings: NodeSettings(partitionCount: 1), logger: logger)[0]
        do {
            let connection = HTTPConnectionHandler(
                router: Router(service: node, logger: logger), settings: HTTPServerSettings(), logger: logger)
            let channel = EmbeddedChannel()
            try HTTPServer.addHTTPHandlers(for: connection, to: channel.pipeline.syncOperations)
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
            try body(channel)
        } catch {
            await node.shutdown()
            throw error
        }
        await node.shutdown()
    }

    static func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            text += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        return text
    }

    /// A request pipelined behind one that gets a closing error answer is not run.
    @Test func nothingRunsAfterAClosingErrorAnswer() async throws {
        try await Self.withChannel { channel in
            let oversized =
                "GET /health HTTP/1.1\r\nhost: x\r\nx-big: \(String(repeating: "h", count: 20_000))\r\n\r\n"
            try channel.writeInbound(
                ByteBuffer(string: oversized + "GET /health HTTP/1.1\r\nhost: x\r\n\r\n"))
            channel.embeddedEventLoop.run()
            let answer = try Self.written(channel)
            #expect(answer.hasPrefix("HTTP/1.1 431"), "\(answer.prefix(200))")
            #expect(answer.components(separatedBy: "HTTP/1.1 ").count == 2, "more than one answer: \(answer)")
            #expect(!answer.contains(#"{"status":"ok"}"#))
        }
    }

    /// Pipelined requests answered immediately come back in order on one connection.
    @Test func pipelinedImmediateRequestsAreAnsweredInOrder() async throws {
        try await Self.withChannel { channel in
            try channel.writeInbound(
                ByteBuffer(
                    string: "GET /health HTTP/1.1\r\nhost: x\r\n\r\nHEAD /health HTTP/1.1\r\nhost: x\r\n\r\n")
            )
            channel.embeddedEventLoop.run()
            let answer = try Self.written(channel)
            #expect(answer.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "\(answer)")
            #expect(channel.isActive)
        }
    }
}
