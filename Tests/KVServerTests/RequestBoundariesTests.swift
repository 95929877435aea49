import KVCluster
import NIOCore
import Testing

@testable import KVServer

/// The raw-byte framing that tells a connection whether an unfinished request waits in
/// the decoder: fed requests of every framing, split anywhere, it must know after each
/// piece whether it stopped inside a request.
@Suite("Request boundaries")
struct RequestBoundariesTests {
    /// A random request: no body, a `content-length` body, or a chunked one (with a
    /// chunk extension and a trailer now and then), with header case and spacing varied.
    static func request(_ random: inout SeededRandom) -> [UInt8] {
        let body = (0..<Int.random(in: 0...300, using: &random)).map { _ in
            UInt8.random(in: 0...255, using: &random)
        }
        var head = "PUT /v1/app/t/k\(Int.random(in: 0...99, using: &random)) HTTP/1.1\r\nhost: x\r\n"
        switch Int.random(in: 0...2, using: &random) {
        case 0:
            return Array((head + "\r\n").utf8)
        case 1:
            let name = Bool.random(using: &random) ? "Content-Length" : "content-length"
            let space = Bool.random(using: &random) ? " " : ""
            head += "\(name):\(space)\(body.count)\r\n\r\n"
            return Array(head.utf8) + body
        default:
            head += "Transfer-Encoding: chunked\r\n\r\n"
            var bytes = Array(head.utf8)
            var rest = body[...]
            while !rest.isEmpty {
                let size = min(rest.count, Int.random(in: 1...120, using: &random))
                let extensionText = Bool.random(using: &random) ? ";name=value" : ""
                bytes +=
                    Array("\(String(size, radix: 16))\(extensionText)\r\n".utf8) + rest.prefix(size)
                    + Array("\r\n".utf8)
                rest = rest.dropFirst(size)
            }
            bytes += Array("0\r\n".utf8)
            if Bool.random(using: &random) { bytes += Array("x-trailer: 1\r\n".utf8) }
            bytes += Array("\r\n".utf8)
            return bytes
        }
    }

    @Test("after every piece of a pipelined stream, it knows whether it stopped inside a request")
    func splitAnywhere() {
        for seed in 0..<500 {
            var random = SeededRandom(seed: UInt64(seed))
            var stream: [UInt8] = []
            var ends: Set<Int> = [0]
            for _ in 0..<Int.random(in: 1...5, using: &random) {
                stream += Self.request(&random)
                ends.insert(stream.count)
            }
            var boundaries = RequestBoundaries()
            var offset = 0
            while offset < stream.count {
                let size = min(stream.count - offset, Int.random(in: 1...200, using: &random))
                stream[offset..<(offset + size)].withUnsafeBytes { boundaries.consume($0) }
                offset += size
                #expect(
                    boundaries.isWithinRequest == !ends.contains(offset),
                    "seed \(seed): at \(offset) of \(stream.count), ends \(ends.sorted())")
            }
        }
    }

    @Test("a head line too long to inspect does not derail it")
    func longLines() {
        var boundaries = RequestBoundaries()
        let request = "GET / HTTP/1.1\r\nx-long: \(String(repeating: "a", count: 2_000))\r\n\r\n"
        Array(request.utf8).withUnsafeBytes { boundaries.consume($0) }
        #expect(!boundaries.isWithinRequest)
        Array("GET / HT".utf8).withUnsafeBytes { boundaries.consume($0) }
        #expect(boundaries.isWithinRequest)
    }

    @Test(
        "a content-length beyond 64 bits is ignored, not a trap",
        arguments: [
            "18446744073709551615", "18446744073709551616", "18446744073709551619", "99999999999999999999",
        ])
    func contentLengthOverflow(value: String) {
        var boundaries = RequestBoundaries()
        let request = "PUT /v1/app/t/k HTTP/1.1\r\ncontent-length: \(value)\r\n\r\n"
        Array(request.utf8).withUnsafeBytes { boundaries.consume($0) }
        // The largest value that fits is a body still to come; the others are refused by
        // the decoder, so where the framing thinks the request ends does not matter.
        #expect(boundaries.isWithinRequest == (value == "18446744073709551615"))
    }
}
