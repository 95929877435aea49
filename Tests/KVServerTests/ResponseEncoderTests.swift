import NIOCore
import NIOEmbedded
import NIOHTTP1
import PropertyBased
import Testing

@testable import KVServer

/// kv's response encoder against NIO's `HTTPResponseEncoder`, which it replaces: the same
/// bytes for any response, in fewer writes.
@Suite("HTTP response encoder")
struct ResponseEncoderTests {
    static let statuses: [HTTPResponseStatus] = [
        .ok, .created, .noContent, .partialContent, .multipleChoices, .notModified, .badRequest, .notFound,
        .internalServerError, .custom(code: 299, reasonPhrase: "Quite Fine"),
    ]
    static let headerChoices: [(String, String)] = [
        ("content-type", "application/octet-stream"), ("x-kv-context", "AQIDBA"), ("ETag", "\"0f\""),
        ("content-length", "5"), ("Content-Length", "0"), ("transfer-encoding", "chunked"),
        ("Transfer-Encoding", "gzip"), ("connection", "keep-alive"), ("x-empty", ""), ("x-tab", "a\tb"),
    ]
    /// Body part sizes: empty, small, just over the coalescing limit.
    static let bodySizes = [
        0, 1, 37, ResponseEncoder.coalescedBodyLimit, ResponseEncoder.coalescedBodyLimit + 1,
    ]

    /// What a handler writes for `parts` (written without flushing, then flushed once, as
    /// the connection handler does), and in how many buffers.
    /// Hands response parts to the encoder as the connection handler does with the parts
    /// written through the channel.
    final class PartsAsOutput: ChannelOutboundHandler {
        typealias OutboundIn = HTTPServerResponsePart
        typealias OutboundOut = ResponseOutput

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            context.write(wrapOutboundOut(.part(unwrapOutboundIn(data))), promise: promise)
        }
    }

    /// A channel with kv's encoder, taking response parts.
    static func encoderChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ResponseEncoder())
        try channel.pipeline.syncOperations.addHandler(PartsAsOutput())
        return channel
    }

    static func encode(
        _ parts: [HTTPServerResponsePart], ours: Bool, flushEach: Bool = false
    ) throws -> (bytes: [UInt8], buffers: Int) {
        let channel = ours ? try encoderChannel() : EmbeddedChannel(handler: HTTPResponseEncoder())
        for part in parts {
            if flushEach {
                channel.writeAndFlush(part, promise: nil)
            } else {
                channel.write(part, promise: nil)
            }
        }
        channel.flush()
        var bytes: [UInt8] = []
        var buffers = 0
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
            buffers += 1
        }
        _ = try channel.finish()
        return (bytes, buffers)
    }

    static func response(
        status: HTTPResponseStatus, http10: Bool, headers: [(String, String)], bodies: [Int]
    ) -> [HTTPServerResponsePart] {
        let version: HTTPVersion = http10 ? .http1_0 : .http1_1
        var parts: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(headers)))
        ]
        for (index, size) in bodies.enumerated() {
            parts.append(
                .body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "a") + UInt8(index), count: size))))
        }
        parts.append(.end(nil))
        return parts
    }

    @Test func anyResponseEncodesAsNIOEncodesIt() async {
        await propertyCheck(
            count: 400,
            input: Gen.int(in: 0..<Self.statuses.count), Gen.int(in: 0...1),
            Gen.int(in: 0..<Self.headerChoices.count).array(of: 0...6),
            Gen.int(in: 0..<Self.bodySizes.count).array(of: 0...3), Gen.int(in: 0...1)
        ) { status, http10, headerIndices, bodyIndices, flushEach in
            let parts = Self.response(
                status: Self.statuses[status], http10: http10 == 1,
                headers: headerIndices.map { Self.headerChoices[$0] },
                bodies: bodyIndices.map { Self.bodySizes[$0] })
            let ours = try Self.encode(parts, ours: true, flushEach: flushEach == 1)
            let nios = try Self.encode(parts, ours: false, flushEach: flushEach == 1)
            #expect(ours.bytes == nios.bytes, "\(String(decoding: ours.bytes.prefix(400), as: UTF8.self))")
            #expect(ours.buffers <= nios.buffers)
        }
    }

    /// The case it exists for: a small answer with a length is one buffer.
    @Test func aSmallResponseIsOneBuffer() throws {
        let parts = Self.response(
            status: .ok, http10: false, headers: [("content-length", "100"), ("x-kv-context", "AQA")],
            bodies: [100])
        let (bytes, buffers) = try Self.encode(parts, ours: true)
        #expect(buffers == 1)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-kv-context: AQA\r\n\r\naaaa"))
        #expect(bytes.count == 59 + 100)
        // Written whole, as the event loop's fast path writes it: the same bytes.
        let channel = EmbeddedChannel(handler: ResponseEncoder())
        guard case .head(let head) = parts[0], case .body(.byteBuffer(let body)) = parts[1] else {
            Issue.record("unexpected parts")
            return
        }
        try channel.writeOutbound(ResponseOutput.whole(head, body: body))
        var whole = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(whole.readBytes(length: whole.readableBytes) == bytes)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try channel.finish()
    }

    /// A response to HEAD keeps its length but sends no body, not even a chunked one's end.
    @Test func headResponsesHaveNoBody() throws {
        let channel = try Self.encoderChannel()
        for method in [HTTPMethod.HEAD, .HEAD, .GET] {
            try channel.writeInbound(
                HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
            _ = try channel.readInbound(as: HTTPServerRequestPart.self)
        }
        let bodyRefused = channel.eventLoop.makePromise(of: Void.self)
        channel.write(
            HTTPServerResponsePart.head(
                HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "3"])),
            promise: nil)
        channel.write(
            HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "abc"))), promise: bodyRefused)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        // A stream's head: chunked, but no terminating chunk for HEAD.
        channel.write(
            HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.write(
            HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "xyz"))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        #expect(throws: NIOHTTPResponseEncoderError.responseBodyNotAllowed) {
            try bodyRefused.futureResult.wait()
        }
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            text += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        #expect(
            text == "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"
                + "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                + "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n")
        _ = try channel.finish()
    }

    /// A header that could split the response is never sent: the write fails, the
    /// connection hears of it, and the rest of that response is dropped.
    @Test func unsendableHeadersAreRefused() throws {
        for (name, value) in [
            ("content-type", "text/plain\r\nx-injected: 1"), ("bad name", "v"), ("x", "nul\u{0}"),
        ] {
            let channel = try Self.encoderChannel()
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.write(
                HTTPServerResponsePart.head(
                    HTTPResponseHead(version: .http1_1, status: .ok, headers: [name: value])),
                promise: written)
            channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "abc"))), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
            #expect(throws: ResponseHeadRefused.self) { try written.futureResult.wait() }
            #expect(throws: ResponseHeadRefused.self) { try channel.throwIfErrorCaught() }
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
            // The next response goes out whole.
            channel.write(
                HTTPServerResponsePart.head(
                    HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "0"])),
                promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
            var buffer = try #require(try channel.readOutbound(as: ByteBuffer.self))
            #expect(
                buffer.readString(length: buffer.readableBytes)
                    == "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            _ = try channel.finish()
        }
    }
}
