import NIOCore

/// The limits a RESP listener enforces on what a client sends.
public struct RESPLimits: Hashable, Sendable {
    /// The longest argument (bulk string), in bytes; Redis's `proto-max-bulk-len`.
    public var maximumBulkBytes: Int
    /// The most arguments in one command.
    public var maximumArguments: Int
    /// The most bytes of all arguments of one command together.
    public var maximumCommandBytes: Int
    /// The longest inline command line (a command typed without RESP framing).
    public var maximumInlineBytes: Int

    /// Creates limits.
    public init(
        maximumBulkBytes: Int = 16 << 20, maximumArguments: Int = 1 << 16,
        maximumCommandBytes: Int = 64 << 20,
        maximumInlineBytes: Int = 64 << 10
    ) {
        self.maximumBulkBytes = maximumBulkBytes
        self.maximumArguments = maximumArguments
        self.maximumCommandBytes = maximumCommandBytes
        self.maximumInlineBytes = maximumInlineBytes
    }
}

/// A protocol error: the client sent something that is not RESP, or past a limit. The
/// listener answers it with Redis's text and closes the connection, as Redis does,
/// because the stream can no longer be framed.
public struct RESPProtocolError: Error, Hashable, Sendable {
    /// Redis's error text, without the leading `-`.
    public var message: String

    init(_ detail: String) { message = "ERR Protocol error: " + detail }
}

/// Cuts client commands out of the bytes a connection receives: RESP arrays of bulk
/// strings (what every client library sends) and inline commands (a line of words, what
/// a person types into telnet). It refuses lengths past ``RESPLimits`` before reading
/// them. A command that arrives in pieces is parsed as it comes: each complete argument
/// is taken out of the buffer and kept, so a large command arriving slowly is never
/// parsed again from its start.
public struct RESPParser: Sendable {
    /// The limits enforced.
    public let limits: RESPLimits
    /// The command being read: how many arguments are still to come, those read so far
    /// and their bytes.
    private var pending: (remaining: Int, arguments: [[UInt8]], bytes: Int)?

    /// Creates a parser.
    public init(limits: RESPLimits = RESPLimits()) { self.limits = limits }

    /// The next complete command in `buffer`, consuming its bytes; `nil` when the buffer
    /// holds only part of one (whose complete arguments are consumed and kept). An empty
    /// inline line yields an empty command, which the caller skips.
    public mutating func next(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> [[UInt8]]? {
        if pending != nil { return try arguments(&buffer) }
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        if first == UInt8(ascii: "*") { return try multibulk(&buffer) }
        return try inline(&buffer)
    }

    /// The index just past the `\r\n` ending the line that starts at `start`, and the
    /// line without it; `nil` when the line is incomplete.
    private func line(in buffer: ByteBuffer, from start: Int, maximum: Int) throws(RESPProtocolError)
        -> (line: ByteBufferView, next: Int)?
    {
        let view = buffer.readableBytesView
        let offset = start - buffer.readerIndex
        let searched = view.dropFirst(offset).prefix(maximum + 2)
        guard let newline = searched.firstIndex(of: UInt8(ascii: "\n")) else {
            if searched.count >= maximum + 2 { throw RESPProtocolError("too big inline request") }
            return nil
        }
        var end = newline
        if end > searched.startIndex, view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return (view[searched.startIndex..<end], newline + 1 - view.startIndex + buffer.readerIndex)
    }

    /// A decimal integer of at most 18 digits (so it cannot overflow), maybe negative.
    private func number(_ line: ByteBufferView) -> Int? {
        var digits = line[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value = 0
        for byte in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return negative ? -value : value
    }

    private mutating func multibulk(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> [[UInt8]]? {
        guard let header = try line(in: buffer, from: buffer.readerIndex, maximum: 32) else { return nil }
        guard let count = number(header.line.dropFirst()), count <= limits.maximumArguments else {
            throw RESPProtocolError("invalid multibulk length")
        }
        buffer.moveReaderIndex(to: header.next)
        pending = (max(0, count), [], 0)
        return try arguments(&buffer)
    }

    /// Reads the pending command's arguments that have arrived; the command once the last
    /// one has. A protocol error ends the command (the connection closes after it).
    private mutating func arguments(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> [[UInt8]]? {
        guard var current = pending else { return nil }
        pending = nil
        while current.remaining > 0 {
            guard let lengthLine = try line(in: buffer, from: buffer.readerIndex, maximum: 32) else {
                pending = current
                return nil
            }
            guard lengthLine.line.first == UInt8(ascii: "$") else {
                let got = lengthLine.line.first.map { String(decoding: [$0], as: UTF8.self) } ?? ""
                throw RESPProtocolError("expected '$', got '\(got)'")
            }
            guard let length = number(lengthLine.line.dropFirst()), length >= 0,
                length <= limits.maximumBulkBytes
            else { throw RESPProtocolError("invalid bulk length") }
            guard current.bytes + length <= limits.maximumCommandBytes else {
                throw RESPProtocolError("the command is larger than \(limits.maximumCommandBytes) bytes")
            }
            let start = lengthLine.next
            guard buffer.writerIndex - start >= length + 2,
                let bytes = buffer.getBytes(at: start, length: length)
            else {
                pending = current
                return nil
            }
            current.arguments.append(bytes)
            current.bytes += length
            current.remaining -= 1
            buffer.moveReaderIndex(to: start + length + 2)
        }
        return current.arguments
    }

    /// An inline command: words separated by spaces, with Redis's quoting (`"a b"`,
    /// `'a b'`, and `\n`, `\xHH` escapes inside double quotes).
    private mutating func inline(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> [[UInt8]]? {
        guard let found = try line(in: buffer, from: buffer.readerIndex, maximum: limits.maximumInlineBytes)
        else { return nil }
        let words = try Self.splitArguments(Array(found.line))
        buffer.moveReaderIndex(to: found.next)
        guard words.count <= limits.maximumArguments else {
            throw RESPProtocolError("invalid multibulk length")
        }
        return words
    }

    /// Splits a line into words as Redis's `sdssplitargs` does.
    static func splitArguments(_ line: [UInt8]) throws(RESPProtocolError) -> [[UInt8]] {
        var words: [[UInt8]] = []
        var index = 0
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while true {
            while index < line.count, isSpace(line[index]) { index += 1 }
            guard index < line.count else { return words }
            var word: [UInt8] = []
            var quote: UInt8? = nil
            while index < line.count {
                let byte = line[index]
                if let open = quote {
                    if open == UInt8(ascii: "\"") && byte == UInt8(ascii: "\\") && index + 3 < line.count
                        && line[index + 1] == UInt8(ascii: "x"), let high = hex(line[index + 2]),
                        let low = hex(line[index + 3])
                    {
                        word.append(high << 4 | low)
                        index += 4
                        continue
                    }
                    if byte == UInt8(ascii: "\\") && index + 1 < line.count {
                        let escaped = line[index + 1]
                        switch escaped {
                        case UInt8(ascii: "n") where open == UInt8(ascii: "\""): word.append(0x0A)
                        case UInt8(ascii: "r") where open == UInt8(ascii: "\""): word.append(0x0D)
                        case UInt8(ascii: "t") where open == UInt8(ascii: "\""): word.append(0x09)
                        case UInt8(ascii: "b") where open == UInt8(ascii: "\""): word.append(0x08)
                        case UInt8(ascii: "a") where open == UInt8(ascii: "\""): word.append(0x07)
                        case open, UInt8(ascii: "\\"): word.append(escaped)
                        default:
                            word.append(byte)
                            index += 1
                            continue
                        }
                        index += 2
                        continue
                    }
                    if byte == open {
                        // A closing quote must be followed by a space or the end.
                        if index + 1 < line.count, !isSpace(line[index + 1]) {
                            throw RESPProtocolError("unbalanced quotes in request")
                        }
                        index += 1
                        quote = nil
                        break
                    }
                    word.append(byte)
                    index += 1
                } else {
                    if isSpace(byte) { break }
                    if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                        quote = byte
                    } else {
                        word.append(byte)
                    }
                    index += 1
                }
            }
            if quote != nil { throw RESPProtocolError("unbalanced quotes in request") }
            words.append(word)
        }
    }
}
