import NIOCore

/// Reads HTTP/1.1 responses out of a connection's bytes, keeping only what a load
/// generator needs of each: the status, the `x-kv-context` header, whether the server
/// closes the connection after it and, for an error, the start of its body (for its
/// code).
///
/// NIO's response decoder builds a head with every header as strings and passes three
/// parts through the pipeline per response; for a generator that must cost less than
/// the server it measures, that was a fifth of its CPU. This parser reads the framing
/// the server uses (a `Content-Length`, or chunked; no body for 1xx, 204 and 304) and
/// refuses anything else with an error, so a response it cannot frame is never
/// mistaken for another. Every size it reads is limited.
struct LoadResponseParser {
    /// The part of a response a load keeps.
    struct Response: Hashable, Sendable {
        /// The status code.
        var status: Int
        /// The `x-kv-context` header, if any.
        var context: String?
        /// The first ``LoadResponseParser/keptBodyLimit`` bytes of the body of an error
        /// (a status of 400 or more); empty otherwise.
        var errorBody: [UInt8]
        /// Whether the server closes the connection after it (`connection: close`).
        var closes = false
    }

    /// Why the bytes are not a response this parser reads.
    struct Malformed: Error, Hashable, Sendable {
        var reason: String
    }

    /// The most a response's status line and headers may take.
    static let headLimit = 64 << 10
    /// The most of an error body that is kept.
    static let keptBodyLimit = 64 << 10
    /// The largest body length or chunk size accepted.
    static let lengthLimit: Int64 = 1 << 40

    private enum State {
        case head
        case body(remaining: Int64)
        case chunkSize
        case chunkData(remaining: Int64)
        case chunkEnd
        case trailers
    }

    private var state = State.head
    private var bytes = Self.empty
    /// Assigned once all bytes are read, to let go of the read's buffer without
    /// allocating a new one.
    private static let empty = ByteBuffer()
    private var response = Response(status: 0, context: nil, errorBody: [])

    /// Takes the next bytes of the connection and calls `complete` with each response
    /// they finish, in order.
    mutating func parse(_ incoming: inout ByteBuffer, complete: (Response) -> Void) throws(Malformed) {
        if bytes.readableBytes == 0 {
            bytes = incoming
        } else {
            bytes.writeBuffer(&incoming)
        }
        while try step(complete) {}
        if bytes.readableBytes == 0 { bytes = Self.empty }
    }

    /// Makes one step of progress; false when it needs more bytes.
    private mutating func step(_ complete: (Response) -> Void) throws(Malformed) -> Bool {
        switch state {
        case .head:
            guard let end = headEnd() else {
                if bytes.readableBytes > Self.headLimit { throw Malformed(reason: "the head is too large") }
                return false
            }
            let headLength = end - bytes.readerIndex
            let head = bytes.withUnsafeReadableBytes { raw in
                Result { () throws(Malformed) in try Self.readHead(raw[..<headLength]) }
            }
            let (status, context, closes, framing) = try head.get()
            bytes.moveReaderIndex(to: end + 4)
            if status >= 200 {
                response.status = status
                response.context = context
                response.closes = closes
            }
            switch framing {
            case .informational: break
            case .length(0):
                finish(complete)
            case .length(let length): state = .body(remaining: length)
            case .chunked: state = .chunkSize
            }
            return true
        case .body(let remaining):
            guard bytes.readableBytes > 0 else { return false }
            let taken = Int(min(Int64(bytes.readableBytes), remaining))
            keep(taken)
            if remaining == Int64(taken) {
                finish(complete)
            } else {
                state = .body(remaining: remaining - Int64(taken))
            }
            return true
        case .chunkSize:
            guard let line = try readLine() else { return false }
            let size = try Self.chunkSize(line)
            state = size == 0 ? .trailers : .chunkData(remaining: size)
            return true
        case .chunkData(let remaining):
            guard bytes.readableBytes > 0 else { return false }
            let taken = Int(min(Int64(bytes.readableBytes), remaining))
            keep(taken)
            state = remaining == Int64(taken) ? .chunkEnd : .chunkData(remaining: remaining - Int64(taken))
            return true
        case .chunkEnd:
            guard let line = try readLine() else { return false }
            guard line.isEmpty else { throw Malformed(reason: "a chunk is longer than its size") }
            state = .chunkSize
            return true
        case .trailers:
            guard let line = try readLine() else { return false }
            if line.isEmpty { finish(complete) }
            return true
        }
    }

    private mutating func finish(_ complete: (Response) -> Void) {
        complete(response)
        response = Response(status: 0, context: nil, errorBody: [])
        state = .head
    }

    /// Consumes `count` body bytes, keeping them when the response is an error.
    private mutating func keep(_ count: Int) {
        let room = Self.keptBodyLimit - response.errorBody.count
        if response.status >= 400, room > 0 {
            response.errorBody += bytes.readableBytesView.prefix(min(room, count))
        }
        bytes.moveReaderIndex(forwardBy: count)
    }

    /// The index of the CRLF CRLF that ends the head, if it has arrived.
    private func headEnd() -> Int? {
        let offset = bytes.withUnsafeReadableBytes { raw -> Int? in
            var index = 0
            while index + 3 < raw.count {
                if raw[index + 3] != UInt8(ascii: "\n") {
                    index += 1
                } else if raw[index] == UInt8(ascii: "\r"), raw[index + 1] == UInt8(ascii: "\n"),
                    raw[index + 2] == UInt8(ascii: "\r")
                {
                    return index
                } else {
                    index += 1
                }
            }
            return nil
        }
        return offset.map { bytes.readerIndex + $0 }
    }

    /// A line ending in CRLF, without it, consumed; `nil` until it has arrived.
    private mutating func readLine() throws(Malformed) -> ByteBufferView? {
        let view = bytes.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > Self.headLimit { throw Malformed(reason: "a chunk line is too long") }
            return nil
        }
        guard newline > view.startIndex, view[newline - 1] == UInt8(ascii: "\r") else {
            throw Malformed(reason: "a line does not end in CRLF")
        }
        let line = view[view.startIndex..<(newline - 1)]
        bytes.moveReaderIndex(to: newline + 1)
        return line
    }

    private enum Framing {
        case informational
        case length(Int64)
        case chunked
    }

    /// Bytes of a head, read in place.
    private typealias HeadBytes = Slice<UnsafeRawBufferPointer>

    /// Reads the status line and headers (without the final blank line): the status,
    /// the context and how the body is framed.
    private static func readHead(_ head: HeadBytes) throws(Malformed) -> (
        status: Int, context: String?, closes: Bool, framing: Framing
    ) {
        var position = head.startIndex
        guard let statusLine = line(of: head, from: &position), statusLine.count >= 12,
            statusLine.starts(with: "HTTP/1.".utf8),
            statusLine[statusLine.startIndex + 8] == UInt8(ascii: " ")
        else { throw Malformed(reason: "the status line is not HTTP/1.x") }
        var status = 0
        for digit in statusLine[(statusLine.startIndex + 9)..<(statusLine.startIndex + 12)] {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else {
                throw Malformed(reason: "the status is not three digits")
            }
            status = status * 10 + Int(digit - UInt8(ascii: "0"))
        }
        guard status >= 100 else { throw Malformed(reason: "the status is below 100") }
        var length: Int64?
        var chunked = false
        var context: String?
        var closes = false
        while let line = line(of: head, from: &position) {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                throw Malformed(reason: "a header line has no name")
            }
            let name = line[line.startIndex..<colon]
            let value = trimmed(line[(colon + 1)...])
            if equalsIgnoringCase(name, "content-length") {
                guard let parsed = decimal(value), length == nil || length == parsed else {
                    throw Malformed(reason: "the content length is not one number")
                }
                length = parsed
            } else if equalsIgnoringCase(name, "transfer-encoding") {
                // Only chunked, the one coding a client must read, is taken.
                guard equalsIgnoringCase(value, "chunked") else {
                    throw Malformed(reason: "a transfer coding other than chunked")
                }
                chunked = true
            } else if equalsIgnoringCase(name, "x-kv-context") {
                context = String(decoding: value, as: UTF8.self)
            } else if equalsIgnoringCase(name, "connection") {
                closes = equalsIgnoringCase(value, "close")
            }
        }
        if status < 200 { return (status, context, closes, .informational) }
        if status == 204 || status == 304 { return (status, context, closes, .length(0)) }
        if chunked {
            guard length == nil else { throw Malformed(reason: "both a length and chunked") }
            return (status, context, closes, .chunked)
        }
        guard let length else { throw Malformed(reason: "a body without a length") }
        return (status, context, closes, .length(length))
    }

    /// The line of `head` that starts at `position`, up to the next CRLF or the end;
    /// `position` moves past it. `nil` once the head is read.
    private static func line(of head: HeadBytes, from position: inout Int) -> HeadBytes? {
        guard position <= head.endIndex else { return nil }
        var end = position
        while end + 1 < head.endIndex,
            !(head[end] == UInt8(ascii: "\r") && head[end + 1] == UInt8(ascii: "\n"))
        {
            end += 1
        }
        if end + 1 >= head.endIndex { end = head.endIndex }
        let line = head[position..<end]
        position = end + 2
        return line
    }

    private static func trimmed(_ value: HeadBytes) -> HeadBytes {
        var start = value.startIndex
        var end = value.endIndex
        while start < end, value[start] == UInt8(ascii: " ") || value[start] == UInt8(ascii: "\t") {
            start += 1
        }
        while end > start, value[end - 1] == UInt8(ascii: " ") || value[end - 1] == UInt8(ascii: "\t") {
            end -= 1
        }
        return value[start..<end]
    }

    /// Whether `bytes` spell `lowercase` in any case (`lowercase` is lower-case ASCII).
    private static func equalsIgnoringCase(_ bytes: HeadBytes, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        var offset = 0
        for byte in bytes {
            let folded = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
            guard folded == expected[offset] else { return false }
            offset += 1
        }
        return true
    }

    private static func decimal(_ digits: HeadBytes) -> Int64? {
        guard !digits.isEmpty, digits.count <= 13 else { return nil }
        var value: Int64 = 0
        for digit in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
            value = value * 10 + Int64(digit - UInt8(ascii: "0"))
        }
        return value <= lengthLimit ? value : nil
    }

    /// A chunk-size line's size: hexadecimal digits, then optional extensions.
    private static func chunkSize(_ line: ByteBufferView) throws(Malformed) -> Int64 {
        var size: Int64 = 0
        var digits = 0
        for byte in line {
            let value: Int64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int64(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int64(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int64(byte - UInt8(ascii: "A") + 10)
            case UInt8(ascii: ";"), UInt8(ascii: " "), UInt8(ascii: "\t"):
                guard digits > 0 else { throw Malformed(reason: "a chunk size has no digits") }
                return size
            default: throw Malformed(reason: "a chunk size is not hexadecimal")
            }
            digits += 1
            size = size * 16 + value
            guard size <= lengthLimit else { throw Malformed(reason: "a chunk is too large") }
        }
        guard digits > 0 else { throw Malformed(reason: "a chunk size has no digits") }
        return size
    }
}
