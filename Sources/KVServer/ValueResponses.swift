import Crypto
import FoundationEssentials
import KVCore
import NIOHTTP1

/// Values in HTTP: which uploads are streamed to the service, and how a read becomes a
/// response: one value (whole, or the byte range a `Range` header asks for; a large value
/// streamed from its chunks), or the siblings of a conflict, where large values are named
/// rather than inlined and each can be fetched with `?value_id=`.
extension Router {
    /// Bodies up to this declared size are read whole before the request is routed.
    static let streamingThreshold: Int64 = 64 << 10

    /// Whether the body of the request with `head` goes to the service as it arrives: a
    /// row PUT (in the minikeyvalue dialect also a POST) whose body is larger than
    /// ``streamingThreshold`` or of unknown length.
    public func streamsBody(_ head: HTTPRequestHead) -> Bool {
        let isMinikeyvalue = dialect != .kv
        guard head.method == .PUT || (isMinikeyvalue && head.method == .POST) else { return false }
        if let declared = head.headers.first(name: "content-length"), let length = Int64(declared),
            length <= Self.streamingThreshold
        {
            return false
        }
        if isMinikeyvalue { return !head.uri.contains("?") }
        let path = head.uri.utf8.split(separator: UInt8(ascii: "?"), maxSplits: 1).first ?? []
        let parts = path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        return parts.count >= 5 && parts[1].elementsEqual("v1".utf8) && parts[2].first != UInt8(ascii: "_")
    }

    /// The response to a row read.
    func read(_ result: ReadResult, request: HTTPRequest) -> HTTPResponse {
        var headers = versionHeaders(context: result.context, etag: result.etag)
        headers.add(name: Self.siblingsHeader, value: String(result.siblings.count))
        var siblings = result.siblings
        if let wanted = request.queryValue("value_id") {
            siblings = siblings.filter { $0.value?.largeValue?.id.description == wanted.lowercased() }
            guard !siblings.isEmpty else {
                var response = Self.errorResponse(
                    KVError(.rowNotFound, "no version of the row has the large value \(wanted.prefix(40))"))
                response.headers.add(contentsOf: headers)
                return response
            }
        }
        switch siblings.count {
        case 0:
            var response = Self.errorResponse(KVError(.rowNotFound, "the row has no value"))
            response.headers.add(contentsOf: headers)
            return response
        case 1:
            return valueResponse(siblings[0], request: request, headers: headers)
        default:
            let accept = request.headers.first(name: "accept") ?? ""
            if accept.contains("multipart/mixed") {
                let (boundary, body) = Self.multipart(siblings, etag: result.etag)
                headers.add(name: "content-type", value: "multipart/mixed; boundary=\(boundary)")
                return HTTPResponse(status: .multipleChoices, headers: headers, body: .bytes(body))
            }
            headers.add(name: "content-type", value: "application/json")
            let body = WireSiblings(
                siblings: siblings.map(WireSibling.init), context: result.context, etag: result.etag)
            return HTTPResponse(status: .multipleChoices, headers: headers, body: .bytes(JSON.encode(body)))
        }
    }

    /// One value: `200` whole or `206` for a satisfiable `Range`, with its length,
    /// `Accept-Ranges` and `Content-MD5` (for an inline value only on `HEAD`, where it
    /// costs nothing to send; a large value carries its MD5 with it).
    func valueResponse(_ sibling: Sibling, request: HTTPRequest, headers base: HTTPHeaders) -> HTTPResponse {
        let value = sibling.value ?? RowValue(bytes: [])
        var headers = base
        headers.add(name: "content-type", value: value.contentType)
        headers.add(name: "x-kv-modified-ms", value: String(sibling.timestampMilliseconds))
        if let expiry = sibling.expiresAtMilliseconds {
            headers.add(name: "x-kv-expires-ms", value: String(expiry))
        }
        headers.add(name: "accept-ranges", value: "bytes")
        let length = value.length
        if let large = value.largeValue {
            headers.add(name: "content-md5", value: Data(large.md5).base64EncodedString())
        } else if request.method == .HEAD {
            headers.add(
                name: "content-md5", value: Data(Insecure.MD5.hash(data: value.bytes)).base64EncodedString())
        }
        var range: Range<Int64> = 0..<length
        var status = HTTPResponseStatus.ok
        if let header = request.headers.first(name: "range") {
            do {
                if let asked = try ByteRange.parse(header, length: length) {
                    range = asked
                    status = .partialContent
                    headers.add(
                        name: "content-range",
                        value: "bytes \(asked.lowerBound)-\(asked.upperBound - 1)/\(length)")
                }
            } catch {
                var response = Self.errorResponse(error)
                if error.code == .rangeNotSatisfiable {
                    response.headers.add(name: "content-range", value: "bytes */\(length)")
                }
                return response
            }
        }
        guard let large = value.largeValue else {
            let bytes =
                status == .ok
                ? value.bytes : Array(value.bytes[Int(range.lowerBound)..<Int(range.upperBound)])
            return HTTPResponse(status: status, headers: headers, body: .bytes(bytes))
        }
        let service = service
        let wanted = range
        return HTTPResponse(
            status: status, headers: headers,
            body: .sizedStream(length: Int64(wanted.count)) { writer in
                try await service.readLargeValue(large, range: wanted) { (bytes) throws(KVError) in
                    do {
                        try await writer.write(bytes)
                    } catch {
                        throw KVError(.incompleteBody, "the client stopped reading", underlying: error)
                    }
                }
            })
    }

    /// The MD5 of `bytes`, hexadecimal.
    static func md5Hex(_ bytes: [UInt8]) -> String {
        Hexadecimal.lowercase(Insecure.MD5.hash(data: bytes))
    }

    /// A multipart/mixed body with one part per sibling, and a boundary that occurs in
    /// none of the values. A large value's part is empty and names it instead
    /// (`x-kv-value-id`, `x-kv-value-length`): fetch it with `?value_id=`.
    static func multipart(_ siblings: [Sibling], etag: String) -> (String, [UInt8]) {
        var boundary = "kv-siblings-\(etag)"
        while siblings.contains(where: { ($0.value?.bytes ?? []).firstRange(of: Array(boundary.utf8)) != nil }
        ) {
            boundary += "-x"
        }
        var body: [UInt8] = []
        for sibling in siblings {
            let value = sibling.value ?? RowValue(bytes: [])
            var head =
                "--\(boundary)\r\ncontent-type: \(value.contentType)\r\nx-kv-modified-ms: \(sibling.timestampMilliseconds)\r\n"
            if let large = value.largeValue {
                head += "x-kv-value-id: \(large.id)\r\nx-kv-value-length: \(large.length)\r\n"
            }
            body += Array((head + "\r\n").utf8)
            body += value.bytes
            body += Array("\r\n".utf8)
        }
        body += Array("--\(boundary)--\r\n".utf8)
        return (boundary, body)
    }
}

/// A `Range` request header (RFC 9110 §14): one range of bytes.
enum ByteRange {
    /// The bytes `header` asks for of a value of `length` bytes, or `nil` when the
    /// header is to be ignored (another unit, or several ranges: the whole value is sent,
    /// as the RFC allows). A malformed range is `request.invalid`; one that starts past
    /// the end is `request.range_not_satisfiable`.
    static func parse(_ header: String, length: Int64) throws(KVError) -> Range<Int64>? {
        let text = header.trimmedWhitespace
        guard text.lowercased().hasPrefix("bytes=") else { return nil }
        let spec = text.dropFirst(6)
        guard !spec.contains(",") else { return nil }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw malformed(header) }
        let first = String(parts[0]).trimmedWhitespace
        let last = String(parts[1]).trimmedWhitespace
        if first.isEmpty {
            guard let suffix = Int64(last), suffix >= 0 else { throw malformed(header) }
            guard suffix > 0, length > 0 else { throw unsatisfiable(length) }
            return max(0, length - suffix)..<length
        }
        guard let start = Int64(first), start >= 0 else { throw malformed(header) }
        var end = length - 1
        if !last.isEmpty {
            guard let given = Int64(last), given >= start else { throw malformed(header) }
            end = min(given, length - 1)
        }
        guard start < length else { throw unsatisfiable(length) }
        return start..<(end + 1)
    }

    private static func malformed(_ header: String) -> KVError {
        KVError(
            .invalidRequest,
            "the Range header '\(header.prefix(60))' is not bytes=FIRST-LAST, FIRST- or -SUFFIX")
    }

    private static func unsatisfiable(_ length: Int64) -> KVError {
        KVError(.rangeNotSatisfiable, "the value has \(length) bytes")
    }
}
