import NIOCore
import NIOHTTP1

/// What the connection handler hands the encoder: a part of a response, as the paths
/// that answer from a task write them through the channel, or a whole response with its
/// complete body, as the event loop's fast path writes it: one traversal of the
/// pipeline and one buffer for head, body and end.
enum ResponseOutput {
    case part(HTTPServerResponsePart)
    case whole(HTTPResponseHead, body: ByteBuffer)
}

/// A response head that could not be sent: a header name that is not a token, or a value
/// or reason phrase with a control character (which could split the response). The
/// response is dropped; the connection handler answers with an error below the HTTP
/// handlers and closes.
struct ResponseHeadRefused: Error {}

/// Encodes responses as HTTP/1.1 bytes, in place of NIO's `HTTPResponseEncoder` and
/// `NIOHTTPResponseHeadersValidator`, with the same framing and the same validation.
///
/// It exists for speed: a small response (head, a body of at most
/// ``coalescedBodyLimit`` bytes, end) leaves as one buffer in one write, where NIO's pair
/// of handlers traverses the pipeline three times per response, validates the headers in
/// a pass of its own and hands the socket two or three buffers. That was about a tenth of
/// a node's CPU time per cached GET (docs/benchmarks.md).
///
/// Framing follows NIO's encoder: a status without a body (1xx, 204, 304) sends neither
/// `content-length` nor `transfer-encoding`; otherwise a `content-length` wins over
/// `transfer-encoding`, and an HTTP/1.1 response with neither is sent chunked. Responses
/// to `HEAD` carry no body: the handler sees each request head go by, as NIO's decoder
/// tells its encoder, and a body written for a `HEAD` response is refused.
final class ResponseEncoder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = ResponseOutput
    typealias OutboundOut = IOData

    /// Bodies up to this size are copied behind their head, so that the response is one
    /// buffer; larger ones go to the socket as they are.
    static let coalescedBodyLimit = 16 * 1024

    /// The methods of requests whose final response has not begun, oldest first.
    private var requestMethods = CircularBuffer<HTTPMethod>(initialCapacity: 4)
    /// The head (and any small body after it) not yet handed to the socket.
    private var pending: ByteBuffer?
    /// Completed when `pending` has been written.
    private var pendingPromise: EventLoopPromise<Void>?
    private var isChunked = false
    private var suppressesBody = false
    /// The current response's head was refused: its body and end are dropped.
    private var refusing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            requestMethods.append(head.method)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .part(let part):
            write(part, context: context, promise: promise)
        case .whole(let head, let body):
            write(.head(head), context: context, promise: nil)
            if body.readableBytes > 0 { write(.body(.byteBuffer(body)), context: context, promise: nil) }
            write(.end(nil), context: context, promise: promise)
        }
    }

    private func write(
        _ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?
    ) {
        switch part {
        case .head(let head):
            writePending(context: context)
            let code = head.status.code
            let informational = (100..<200).contains(code) && code != 101
            var method = HTTPMethod.GET
            if !informational, let first = requestMethods.popFirst() { method = first }
            var buffer = context.channel.allocator.buffer(capacity: 256)
            guard let chunked = Self.encode(head, into: &buffer) else {
                refusing = !informational
                promise?.fail(ResponseHeadRefused())
                context.fireErrorCaught(ResponseHeadRefused())
                return
            }
            refusing = false
            if !informational {
                suppressesBody = method == .HEAD || method == .CONNECT
                isChunked = chunked && !suppressesBody
            }
            pending = buffer
            pendingPromise = promise
        case .body(let part):
            if refusing {
                promise?.fail(ResponseHeadRefused())
            } else if suppressesBody {
                promise?.fail(NIOHTTPResponseEncoderError.responseBodyNotAllowed)
            } else if isChunked {
                writeChunk(part, context: context, promise: promise)
            } else if case .byteBuffer(var bytes) = part, pending != nil,
                bytes.readableBytes <= Self.coalescedBodyLimit
            {
                pending!.writeBuffer(&bytes)
                attach(promise)
            } else {
                writePending(context: context)
                context.write(wrapOutboundOut(part), promise: promise)
            }
        case .end(let trailers):
            if refusing {
                refusing = false
                promise?.fail(ResponseHeadRefused())
                return
            }
            if isChunked {
                isChunked = false
                var tail = pending ?? context.channel.allocator.buffer(capacity: 8)
                if let trailers, !trailers.isEmpty {
                    tail.writeStaticString("0\r\n")
                    guard Self.append(trailers, to: &tail, framing: nil) else {
                        pending = nil
                        let earlier = pendingPromise
                        pendingPromise = nil
                        earlier?.fail(ResponseHeadRefused())
                        promise?.fail(ResponseHeadRefused())
                        context.fireErrorCaught(ResponseHeadRefused())
                        return
                    }
                    tail.writeStaticString("\r\n")
                } else {
                    tail.writeStaticString("0\r\n\r\n")
                }
                pending = tail
            }
            attach(promise)
            if pending == nil, let promise = pendingPromise {
                // Nothing is left to write, but the promise must complete after what was
                // written before it, so an empty write carries it.
                pendingPromise = nil
                context.write(
                    wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0))),
                    promise: promise)
            }
            writePending(context: context)
        }
    }

    func flush(context: ChannelHandlerContext) {
        writePending(context: context)
        context.flush()
    }

    /// Completes `promise` with the pending buffer's write.
    private func attach(_ promise: EventLoopPromise<Void>?) {
        guard let promise else { return }
        if let existing = pendingPromise {
            existing.futureResult.cascade(to: promise)
        } else {
            pendingPromise = promise
        }
    }

    private func writePending(context: ChannelHandlerContext) {
        guard let buffer = pending else { return }
        let promise = pendingPromise
        pending = nil
        pendingPromise = nil
        context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
    }

    /// One chunk of a chunked body: its size line, its bytes and the line's end, in one
    /// buffer with whatever is pending when the chunk is small. An empty part writes
    /// nothing (it would end the body) but keeps its promise's place.
    private func writeChunk(_ part: IOData, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?)
    {
        let size = part.readableBytes
        guard size > 0 else {
            writePending(context: context)
            context.write(wrapOutboundOut(part), promise: promise)
            return
        }
        var framed = pending ?? context.channel.allocator.buffer(capacity: 24)
        framed.writeString(String(size, radix: 16))
        framed.writeStaticString("\r\n")
        pending = framed
        if case .byteBuffer(var bytes) = part, size <= Self.coalescedBodyLimit {
            pending!.writeBuffer(&bytes)
            pending!.writeStaticString("\r\n")
            attach(promise)
            writePending(context: context)
            return
        }
        writePending(context: context)
        context.write(wrapOutboundOut(part), promise: nil)
        var lineEnd = context.channel.allocator.buffer(capacity: 2)
        lineEnd.writeStaticString("\r\n")
        context.write(wrapOutboundOut(.byteBuffer(lineEnd)), promise: promise)
    }

    // MARK: Encoding

    /// Which framing header a response keeps.
    private enum Framing {
        /// No body: neither `content-length` nor `transfer-encoding`.
        case bodiless
        /// `content-length`, and no `transfer-encoding`.
        case contentLength
        /// `transfer-encoding: chunked` in place of whatever transfer coding it named.
        case chunked
        /// As given: an HTTP/1.0 body without a length ends with the connection.
        case asGiven
    }

    /// Writes the status line and headers; `nil` when something in them cannot be sent,
    /// otherwise whether the body is chunked.
    static func encode(_ head: HTTPResponseHead, into buffer: inout ByteBuffer) -> Bool? {
        switch (head.version.major, head.version.minor) {
        case (1, 1): buffer.writeStaticString("HTTP/1.1 ")
        case (1, 0): buffer.writeStaticString("HTTP/1.0 ")
        default: buffer.writeString("HTTP/\(head.version.major).\(head.version.minor) ")
        }
        let code = head.status.code
        guard (100...999).contains(code) else { return nil }
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 100))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 10 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code % 10))
        buffer.writeInteger(UInt8(ascii: " "))
        // The phrases of known statuses are NIO's literals; only a custom one needs checking.
        if case .custom(_, let reason) = head.status, !reason.utf8.allSatisfy(isReasonPhraseByte) {
            return nil
        }
        buffer.writeString(head.status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        let framing: Framing
        if !head.status.mayHaveResponseBody {
            framing = .bodiless
        } else if head.headers.contains(name: "content-length") {
            framing = .contentLength
        } else if head.version.major == 1 && head.version.minor >= 1 {
            framing = .chunked
        } else {
            framing = .asGiven
        }
        guard append(head.headers, to: &buffer, framing: framing) else { return nil }
        if framing == .chunked { buffer.writeStaticString("transfer-encoding: chunked\r\n") }
        buffer.writeStaticString("\r\n")
        return framing == .chunked
    }

    /// Writes `headers` as lines, leaving out the framing headers `framing` replaces;
    /// `false` if a name or value cannot be sent.
    private static func append(_ headers: HTTPHeaders, to buffer: inout ByteBuffer, framing: Framing?) -> Bool
    {
        for (name, value) in headers {
            switch framing {
            case .bodiless where isNamed(name, "content-length") || isNamed(name, "transfer-encoding"),
                .contentLength where isNamed(name, "transfer-encoding"),
                .chunked where isNamed(name, "transfer-encoding"):
                // Left out, but checked all the same, as NIO's validator checks every header.
                guard name.utf8.allSatisfy(isTokenByte), value.utf8.allSatisfy(isFieldValueByte) else {
                    return false
                }
            default:
                guard writeLine(name: name, value: value, to: &buffer) else { return false }
            }
        }
        return true
    }

    /// Copies `name: value` and a line break into `buffer`, checking each byte as it is
    /// copied (one pass, no per-piece capacity checks: this runs for every header of every
    /// response); `false` if a byte cannot be sent, and the buffer is then to be dropped.
    private static func writeLine(name: String, value: String, to buffer: inout ByteBuffer) -> Bool {
        var name = name
        var value = value
        return name.withUTF8 { name in
            value.withUTF8 { value in
                var valid = true
                let length = name.count + value.count + 4
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
                    var offset = 0
                    for byte in name {
                        valid = valid && isTokenByte(byte)
                        out[offset] = byte
                        offset += 1
                    }
                    out[offset] = UInt8(ascii: ":")
                    out[offset + 1] = UInt8(ascii: " ")
                    offset += 2
                    for byte in value {
                        valid = valid && isFieldValueByte(byte)
                        out[offset] = byte
                        offset += 1
                    }
                    out[offset] = UInt8(ascii: "\r")
                    out[offset + 1] = UInt8(ascii: "\n")
                    return length
                }
                return valid
            }
        }
    }

    /// Whether `name` is `lowercased`, ignoring ASCII case.
    private static func isNamed(_ name: String, _ lowercased: StaticString) -> Bool {
        guard name.utf8.count == lowercased.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercased.utf8Start, count: lowercased.utf8CodeUnitCount)
        return zip(name.utf8, expected).allSatisfy { byte, lower in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 == lower : byte == lower
        }
    }

    /// RFC 9110's `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"),
            UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
            UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// A field value's byte: anything but control characters other than tab.
    private static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    /// A reason phrase's byte: tab, space, visible characters and obs-text.
    private static func isReasonPhraseByte(_ byte: UInt8) -> Bool {
        byte == 9 || (byte >= 32 && byte != 127)
    }
}
