import KVCore
import NIOCore
import NIOHTTP1

/// Writing a response: through the channel from the task that made it (whole, chunked,
/// or streamed with a length), or as raw bytes below the HTTP handlers.
extension HTTPConnectionHandler {
    /// Writes a response through the channel. Complete bodies go out with a
    /// Content-Length; streams use chunked encoding and wait on each chunk (HTTP/1.0 has
    /// no chunked encoding: its streams end by closing the connection). Returns whether
    /// the connection can be reused.
    static func write(
        _ response: HTTPResponse, version: HTTPVersion, keepAlive requested: Bool, isHead: Bool,
        to channel: any Channel
    ) async throws -> Bool {
        var keepAlive = requested
        if case .stream = response.body, version.major == 1 && version.minor == 0 { keepAlive = false }
        var headers = response.headers
        headers.set("connection", keepAlive ? "keep-alive" : "close")
        switch response.body {
        case .bytes(let bytes):
            headers.set("content-length", String(bytes.count))
            let head = HTTPResponseHead(version: version, status: response.status, headers: headers)
            channel.write(HTTPServerResponsePart.head(head), promise: nil)
            if !bytes.isEmpty && !isHead {
                channel.write(
                    HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil)
            }
            try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
        case .stream(let produce):
            if keepAlive { headers.replaceOrAdd(name: "transfer-encoding", value: "chunked") }
            headers.remove(name: "content-length")
            try await stream(
                produce, head: HTTPResponseHead(version: version, status: response.status, headers: headers))
        case .sizedStream(let length, let produce):
            headers.replaceOrAdd(name: "content-length", value: String(length))
            headers.remove(name: "transfer-encoding")
            try await stream(
                produce, head: HTTPResponseHead(version: version, status: response.status, headers: headers))
        }
        return keepAlive

        /// Writes a streamed body's head, then (unless answering HEAD) its body as
        /// `produce` writes it, then the end.
        func stream(
            _ produce: @Sendable (ResponseBodyWriter) async throws -> Void, head: HTTPResponseHead
        ) async throws {
            try await channel.writeAndFlush(HTTPServerResponsePart.head(head)).get()
            if !isHead {
                try await produce(ResponseBodyWriter(channel: channel))
            }
            try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
        }
    }

    /// A complete HTTP/1.1 error response as bytes, for writing below the HTTP handlers.
    static func rawResponse(for error: KVError) -> ByteBuffer {
        let response = Router.errorResponse(error)
        guard case .bytes(let body) = response.body else { return ByteBuffer() }
        var text = "HTTP/1.1 \(response.status.code) \(response.status.reasonPhrase)\r\n"
        for header in response.headers { text += "\(header.name): \(header.value)\r\n" }
        text += "content-length: \(body.count)\r\nconnection: close\r\n\r\n"
        var buffer = ByteBuffer(string: text)
        buffer.writeBytes(body)
        return buffer
    }
}

extension HTTPHeaders {
    /// Sets `name` to `value`: appended when the headers lack it, as a response's headers
    /// almost always do, replaced otherwise. `replaceOrAdd` rewrites the whole list (a copy
    /// when it is shared) even when there is nothing to replace.
    mutating func set(_ name: String, _ value: String) {
        if contains(name: name) {
            replaceOrAdd(name: name, value: value)
        } else {
            add(name: name, value: value)
        }
    }
}
