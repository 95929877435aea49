import NIOCore
import NIOEmbedded
import NIOHTTP1
import PropertyBased
import Testing

@testable import KVClient

/// The load generator's response parser reads what NIO's response decoder reads, for
/// every framing the server uses, however the bytes are split; and it refuses, without
/// trapping, what it cannot frame.
@Suite("load response parser")
struct LoadResponseParserTests {
    typealias Response = LoadResponseParser.Response

    /// One response as bytes, and what the parser must keep of it.
    static func response(
        status: Int, context: String?, body: [UInt8], chunks: [Int]?, headerCase: Int, extraHeaders: Int,
        closes: Bool = false
    ) -> (bytes: [UInt8], expected: Response) {
        var text = "HTTP/1.1 \(status) Whatever\r\n"
        let contentLength = ["content-length", "Content-Length", "CONTENT-LENGTH"][headerCase % 3]
        let contextName = ["x-kv-context", "X-KV-Context", "x-KV-context"][headerCase % 3]
        for index in 0..<extraHeaders { text += "x-other-\(index):  value \(index) \t\r\n" }
        if let context { text += "\(contextName): \(context)\r\n" }
        text += ["Connection", "connection", "CONNECTION"][headerCase % 3] + ": "
        text += closes ? ["close", "Close"][headerCase % 2] : "keep-alive"
        text += "\r\n"
        let noBody = status < 200 || status == 204 || status == 304
        var bytes: [UInt8]
        if noBody {
            bytes = Array((text + "\r\n").utf8)
        } else if let chunks {
            text += "transfer-encoding: chunked\r\n\r\n"
            bytes = Array(text.utf8)
            var rest = body[...]
            for size in chunks where !rest.isEmpty {
                let piece = rest.prefix(max(1, size))
                rest = rest.dropFirst(piece.count)
                bytes +=
                    Array("\(String(piece.count, radix: 16));ext=1\r\n".utf8) + piece + Array("\r\n".utf8)
            }
            if !rest.isEmpty {
                bytes +=
                    Array("\(String(rest.count, radix: 16, uppercase: true))\r\n".utf8) + rest
                    + Array("\r\n".utf8)
            }
            bytes += Array("0\r\ntrailer: t\r\n\r\n".utf8)
        } else {
            text += "\(contentLength): \(body.count)\r\n\r\n"
            bytes = Array(text.utf8) + body
        }
        let kept = status < 400 ? [] : body
        return (bytes, Response(status: status, context: context, errorBody: kept, closes: closes))
    }

    /// Feeds `bytes` in pieces that end at `cuts` (offsets, in any order).
    static func parse(_ bytes: [UInt8], cuts: [Int]) throws -> [Response] {
        var parser = LoadResponseParser()
        var responses: [Response] = []
        var start = 0
        for cut in (Set(cuts.map { min($0, bytes.count) }) + [bytes.count]).sorted() where cut > start {
            var piece = ByteBuffer(bytes: bytes[start..<cut])
            try parser.parse(&piece) { responses.append($0) }
            start = cut
        }
        return responses
    }

    /// What NIO's decoder reads from the same bytes: status, context and body.
    static func nioParse(_ bytes: [UInt8], count: Int) throws -> [Response] {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHTTPClientHandlers()
        for _ in 0..<count {
            try channel.writeOutbound(
                HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        }
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        var responses: [Response] = []
        var current: Response?
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head(let head):
                current = Response(
                    status: Int(head.status.code), context: head.headers.first(name: "x-kv-context"),
                    errorBody: [], closes: !head.isKeepAlive)
            case .body(let body):
                if let status = current?.status, status >= 400 {
                    current?.errorBody += body.readableBytesView
                }
            case .end:
                if let current { responses.append(current) }
                current = nil
            }
        }
        _ = try channel.finish()
        return responses
    }

    static let statuses = [200, 204, 300, 304, 400, 404, 409, 500, 503]

    @Test("any stream of responses, split anywhere, reads as NIO reads it")
    func streamsReadAsNIOReadsThem() async {
        await propertyCheck(
            count: 300,
            input: Gen.int(in: 0..<Self.statuses.count).array(of: 1...4),
            Gen.int(in: 0...2000).array(of: 0...8),
            Gen.int(in: 0...700), Gen.int(in: 0...5), Gen.int(in: 0...3)
        ) { statusIndices, cuts, bodySize, chunkSize, extraHeaders in
            var stream: [UInt8] = []
            var expected: [Response] = []
            for (index, statusIndex) in statusIndices.enumerated() {
                let body = (0..<(bodySize + index * 37)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
                let chunks: [Int]? = (chunkSize + index) % 3 == 0 ? nil : [chunkSize * 50 + 1, 3, 200]
                let context: String? = index % 2 == 0 ? "AQ\(index)-ctx_\(bodySize)" : nil
                let (bytes, response) = Self.response(
                    status: Self.statuses[statusIndex], context: context, body: body, chunks: chunks,
                    headerCase: index + chunkSize, extraHeaders: extraHeaders,
                    closes: (index + bodySize) % 4 == 1)
                stream += bytes
                expected.append(response)
            }
            let ours = try Self.parse(stream, cuts: cuts)
            #expect(ours == expected)
            #expect(try Self.nioParse(stream, count: statusIndices.count) == expected)
        }
    }

    @Test("an informational response is skipped, and the answer after it read")
    func informationalIsSkipped() throws {
        let bytes = Array(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nx-kv-context: c\r\n\r\n".utf8)
        #expect(try Self.parse(bytes, cuts: [5, 30]) == [Response(status: 204, context: "c", errorBody: [])])
    }

    @Test("an error body is kept only up to its limit")
    func errorBodyIsBounded() throws {
        let body = [UInt8](repeating: 65, count: LoadResponseParser.keptBodyLimit + 1000)
        let (bytes, _) = Self.response(
            status: 500, context: nil, body: body, chunks: nil, headerCase: 0, extraHeaders: 0)
        let responses = try Self.parse(bytes, cuts: [100, 40_000])
        #expect(responses.map(\.errorBody.count) == [LoadResponseParser.keptBodyLimit])
    }

    @Test(
        "what it cannot frame is refused",
        arguments: [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
            "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\nx",
        ])
    func malformedIsRefused(_ text: String) {
        var parser = LoadResponseParser()
        var buffer = ByteBuffer(string: text)
        #expect(throws: LoadResponseParser.Malformed.self) {
            try parser.parse(&buffer) { _ in }
        }
    }

    @Test("a head that never ends is refused once it passes the limit")
    func endlessHeadIsRefused() {
        var parser = LoadResponseParser()
        #expect(throws: LoadResponseParser.Malformed.self) {
            for _ in 0..<100 {
                var piece = ByteBuffer(string: "x-header: " + String(repeating: "v", count: 1000) + "\r\n")
                try parser.parse(&piece) { _ in }
            }
        }
    }

    @Test("damaged responses and arbitrary bytes never trap it or make it loop", .timeLimit(.minutes(1)))
    func damagedInput() async {
        await propertyCheck(
            count: 500,
            input: Gen.int(in: 0..<Self.statuses.count), Gen.int(in: 0...300),
            Gen.int(in: 0...4000).array(of: 0...6), Gen.int(in: 0...255).array(of: 0...6),
            Gen.int(in: 0...2000).array(of: 0...4), Gen.int(in: 0...255).array(of: 0...200)
        ) { statusIndex, bodySize, positions, replacements, cuts, tail in
            // A valid chunked and a valid sized response, with bytes replaced here and
            // there (in the heads as often as in the bodies), then arbitrary bytes.
            let chunked = Self.response(
                status: Self.statuses[statusIndex], context: "c", body: Array(repeating: 7, count: bodySize),
                chunks: [3, 17], headerCase: 0, extraHeaders: 1
            ).bytes
            let sized = Self.response(
                status: 404, context: nil, body: Array(repeating: 9, count: bodySize), chunks: nil,
                headerCase: 1, extraHeaders: 0
            ).bytes
            var stream = chunked + sized
            for (position, replacement) in zip(positions, replacements) {
                stream[position % stream.count] = UInt8(replacement)
            }
            stream += tail.map { UInt8($0) }
            _ = try? Self.parse(stream, cuts: cuts)
        }
    }
}
