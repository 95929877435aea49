import NIOCore

/// Follows where requests begin and end in a connection's raw bytes, so the connection
/// knows whether bytes of an unfinished request wait in the HTTP decoder, which does not
/// say. A partial request pipelined behind another, even in the same packet, then gets
/// the request timeout instead of the idle timeout.
///
/// It frames requests the way HTTP/1.1 does (a head up to an empty line, then a
/// `content-length` body or chunks), without validating them: the decoder does that and
/// refuses what is malformed, which closes the connection anyway. A head line longer
/// than ``maximumLineBytes`` is not inspected further (the decoder refuses such heads).
struct RequestBoundaries {
    /// The longest head line inspected for framing headers.
    static let maximumLineBytes = 256

    private enum State: Equatable {
        /// In a head (or between requests).
        case head
        /// In a body of known length.
        case body(remaining: UInt64)
        /// In a chunk-size line.
        case chunkSize
        /// In chunk data, then its line break.
        case chunkData(remaining: UInt64)
        /// In the trailer after the last chunk.
        case trailer
    }

    private var state = State.head
    /// The bytes of the current line (up to ``maximumLineBytes``, and its carriage return).
    private var line: [UInt8] = []
    private var lineTooLong = false
    private var contentLength: UInt64 = 0
    private var chunked = false
    /// Whether bytes of a request that has not ended yet have arrived.
    private(set) var isWithinRequest = false

    /// Follows `bytes` as they arrive.
    mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        var index = 0
        while index < bytes.count {
            switch state {
            case .body(let remaining):
                let taken = Int(min(UInt64(bytes.count - index), remaining))
                index += taken
                if remaining - UInt64(taken) == 0 {
                    endRequest()
                } else {
                    state = .body(remaining: remaining - UInt64(taken))
                }
            case .chunkData(let remaining):
                // The data, then its CRLF (counted as two more bytes).
                let taken = Int(min(UInt64(bytes.count - index), remaining))
                index += taken
                let left = remaining - UInt64(taken)
                state = left == 0 ? .chunkSize : .chunkData(remaining: left)
            case .head, .chunkSize, .trailer:
                isWithinRequest = true
                // The rest of the line is taken in one piece: a byte at a time, appending
                // each, cost a few per cent of a small request's time.
                var end = index
                while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
                let room = Self.maximumLineBytes + 1 - line.count
                if end - index > room { lineTooLong = true }
                line.append(
                    contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<min(end, index + room)]))
                if end < bytes.count {
                    index = end + 1
                    lineEnded()
                } else {
                    index = end
                }
            }
        }
    }

    private mutating func lineEnded() {
        defer {
            line.removeAll(keepingCapacity: true)
            lineTooLong = false
        }
        // The line's carriage return (the decoder refuses one anywhere else), kept with
        // the line because it may arrive in a read of its own. Room was left for it.
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        if line.count > Self.maximumLineBytes { lineTooLong = true }
        switch state {
        case .head:
            if line.isEmpty && !lineTooLong {
                if chunked {
                    state = .chunkSize
                } else if contentLength > 0 {
                    state = .body(remaining: contentLength)
                } else {
                    endRequest()
                }
            } else if !lineTooLong {
                inspectHeader()
            }
        case .chunkSize:
            // A chunk's data ends with a line break, whose bytes this line also skips;
            // the empty line left after the data is not a size.
            if line.isEmpty { return }
            let digits = line.prefix { $0 != UInt8(ascii: ";") && $0 != UInt8(ascii: " ") }
            let size = UInt64(String(decoding: digits, as: UTF8.self), radix: 16) ?? 0
            state = size == 0 ? .trailer : .chunkData(remaining: size)
        case .trailer:
            if line.isEmpty { endRequest() }
        case .body, .chunkData:
            break
        }
    }

    private static let contentLengthName = Array("content-length:".utf8)
    private static let transferEncodingName = Array("transfer-encoding:".utf8)
    private static let chunkedValue = Array("chunked".utf8)

    /// Looks at the two framing headers, comparing bytes: this runs for every header
    /// line of every request, so it allocates nothing.
    private mutating func inspectHeader() {
        if Self.startsCaseInsensitively(line, with: Self.contentLengthName) {
            var length: UInt64 = 0
            for byte in line.dropFirst(Self.contentLengthName.count) where byte != 32 && byte != 9 {
                guard (48...57).contains(byte) else { return }
                // A length beyond 64 bits is left alone (the decoder refuses it); the
                // addition overflows too, for 18446744073709551616 to ...619.
                let (product, overflow) = length.multipliedReportingOverflow(by: 10)
                let (sum, carry) = product.addingReportingOverflow(UInt64(byte - 48))
                guard !overflow, !carry else { return }
                length = sum
            }
            contentLength = length
        } else if Self.startsCaseInsensitively(line, with: Self.transferEncodingName) {
            var end = line.endIndex
            while end > line.startIndex, line[end - 1] == 32 || line[end - 1] == 9 { end -= 1 }
            let value = line[..<end]
            chunked =
                value.count >= Self.chunkedValue.count
                && Self.startsCaseInsensitively(
                    value.suffix(Self.chunkedValue.count), with: Self.chunkedValue)
        }
    }

    private static func startsCaseInsensitively(_ bytes: some Collection<UInt8>, with prefix: [UInt8]) -> Bool
    {
        guard bytes.count >= prefix.count else { return false }
        return zip(bytes, prefix).allSatisfy { ($0 | 0x20) == $1 || $0 == $1 }
    }

    private mutating func endRequest() {
        state = .head
        contentLength = 0
        chunked = false
        isWithinRequest = false
    }
}
