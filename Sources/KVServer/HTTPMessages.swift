import KVCore
import NIOCore
import NIOHTTP1

/// A complete request as the router sees it.
public struct HTTPRequest: Sendable {
    /// The method.
    public var method: HTTPMethod
    /// The path segments, percent-decoded to bytes (`/v1/a%2Fb` → `["v1", "a/b"]`).
    public var pathSegments: [[UInt8]]
    /// The request target as received.
    public var uri: String
    /// The whole path, percent-decoded (`/a%2Fb/` → `/a/b/`), as the minikeyvalue
    /// dialect takes keys. Decoded when asked for: the other routes never need it.
    public var path: [UInt8] {
        let target = Array(uri.utf8)
        let end = target.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex
        // The initializer has decoded it once, so it decodes.
        return Self.percentDecode(target[..<end], plusIsSpace: false) ?? []
    }
    /// Query parameters in order, names and values percent-decoded (`+` is a space).
    public var query: [(name: String, value: [UInt8])]
    /// The headers.
    public var headers: HTTPHeaders
    /// The body.
    public var body: [UInt8]
    /// The body as it arrives, for a request the router streams (``Router/streamsBody(_:)``);
    /// ``body`` is then empty.
    public var bodyStream: (any ValueBody)?

    /// The text of the first query parameter called `name`.
    public func queryValue(_ name: String) -> String? {
        query.first { $0.name == name }.map { String(decoding: $0.value, as: UTF8.self) }
    }

    /// Whether the request overrides a quorum setting (query parameter or header), so
    /// that the event loop's shortcut, which reads one local copy, must not answer it.
    var hasQuorumOverrides: Bool {
        (!query.isEmpty && QuorumOverrides.names.contains { queryValue($0) != nil })
            || Self.quorumHeaderNames.contains { headers.contains(name: $0) }
    }

    /// The headers that override a quorum setting, spelled once rather than per request.
    static let quorumHeaderNames = QuorumOverrides.names.map { "x-kv-" + $0 }

    /// Every value of the query parameter `name`, in order.
    public func queryValues(_ name: String) -> [[UInt8]] {
        query.filter { $0.name == name }.map(\.value)
    }

    /// Parses the request target into path segments and query parameters, or returns
    /// `nil` when its percent-encoding is malformed.
    public init?(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: [UInt8]) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        var uri = uri
        guard let (segments, query) = uri.withUTF8(Self.parse) else { return nil }
        pathSegments = segments
        self.query = query
    }

    /// The path segments and query parameters of a request target, or `nil` when its
    /// percent-encoding is malformed. Works on the target's bytes in place: this runs for
    /// every request.
    private static func parse(_ target: UnsafeBufferPointer<UInt8>)
        -> (segments: [[UInt8]], query: [(name: String, value: [UInt8])])?
    {
        let slash = UInt8(ascii: "/")
        let queryStart = target.firstIndex(of: UInt8(ascii: "?"))
        let pathEnd = queryStart ?? target.endIndex
        var segments: [[UInt8]] = []
        // Each segment follows a slash; what precedes the first slash is not one, but
        // it is checked like the rest of the path.
        let firstSlash = target[..<pathEnd].firstIndex(of: slash)
        let beforeSegments = target[..<(firstSlash ?? pathEnd)]
        guard beforeSegments.isEmpty || percentDecode(beforeSegments, plusIsSpace: false) != nil else {
            return nil
        }
        if var start = firstSlash {
            segments.reserveCapacity(6)
            start += 1
            while true {
                let end = target[start..<pathEnd].firstIndex(of: slash) ?? pathEnd
                guard let decoded = percentDecode(target[start..<end], plusIsSpace: false) else { return nil }
                segments.append(decoded)
                if end == pathEnd { break }
                start = end + 1
            }
        }
        // A trailing slash adds an empty segment: "/v1/ns/" is the same as "/v1/ns".
        if segments.count > 1, segments.last?.isEmpty == true { segments.removeLast() }
        var query: [(name: String, value: [UInt8])] = []
        if let queryStart {
            for pair in target[(queryStart + 1)...].split(separator: UInt8(ascii: "&")) {
                let parts = pair.split(
                    separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = percentDecode(parts[0], plusIsSpace: true),
                    let value = parts.count > 1 ? percentDecode(parts[1], plusIsSpace: true) : []
                else { return nil }
                query.append((String(decoding: name, as: UTF8.self), value))
            }
        }
        return (segments, query)
    }

    static func percentDecode<Text: Collection<UInt8>>(_ text: Text, plusIsSpace: Bool) -> [UInt8]?
    where Text.Index == Int {
        var result: [UInt8] = []
        result.reserveCapacity(text.count)
        var index = text.startIndex
        while index < text.endIndex {
            let byte = text[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < text.endIndex,
                    let high = hexValue(text[index + 1]), let low = hexValue(text[index + 2])
                else { return nil }
                result.append(high << 4 | low)
                index += 3
            } else {
                result.append(plusIsSpace && byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
                index += 1
            }
        }
        return result
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Writes the chunks of a streamed response body, waiting for each to be handed to the
/// socket: a slow client slows the producer down instead of growing a buffer.
public struct ResponseBodyWriter: Sendable {
    let channel: any Channel

    /// Writes one chunk and waits until the connection has taken it.
    public func write(_ bytes: ArraySlice<UInt8>) async throws {
        guard !bytes.isEmpty else { return }
        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes))))
            .get()
    }

    /// Writes one chunk and waits until the connection has taken it.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes))))
            .get()
    }
}

/// A response: status, headers and either a complete body or a streamed one.
public struct HTTPResponse: Sendable {
    /// The body.
    public enum Body: Sendable {
        /// A complete body, sent with a Content-Length.
        case bytes([UInt8])
        /// A body produced chunk by chunk (chunked transfer encoding).
        case stream(@Sendable (ResponseBodyWriter) async throws -> Void)
        /// A body of known length produced chunk by chunk (sent with a Content-Length; a
        /// producer that fails midway closes the connection, so the client sees a short
        /// body, never a wrong one).
        case sizedStream(length: Int64, @Sendable (ResponseBodyWriter) async throws -> Void)
    }

    /// The status.
    public var status: HTTPResponseStatus
    /// The headers.
    public var headers: HTTPHeaders
    /// The body.
    public var body: Body

    /// Creates a response.
    public init(status: HTTPResponseStatus, headers: HTTPHeaders = HTTPHeaders(), body: Body = .bytes([])) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// The one table from error codes to HTTP statuses.
public enum HTTPErrorStatus {
    /// The status for `code`; unknown codes are 500.
    public static func status(for code: KVError.Code) -> HTTPResponseStatus {
        switch code {
        case .invalidSchema, .keyArity, .keyPartType, .invalidKeyPart, .invalidName, .invalidQuorum,
            .invalidRequest,
            .invalidContext, .invalidContinuation, .keyTooLarge, .incompleteBody, .unsupported,
            .functionInvalid:
            .badRequest
        case .functionFailed, .functionLimitExceeded, .functionRefused: .unprocessableEntity
        case .rangeNotSatisfiable: .rangeNotSatisfiable
        case .notFound, .tableNotFound, .rowNotFound, .functionNotFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .requestTimeout: .requestTimeout
        case .tableExists, .tableChanged, .tooManySiblings, .rowTooLarge, .notACounter, .staleLayoutPlan,
            .backupExists, .functionSiblings:
            .conflict
        case .preconditionFailed: .preconditionFailed
        case .tokenRequired, .invalidToken, .revokedToken, .expiredToken: .unauthorized
        case .forbidden: .forbidden
        case .valueTooLarge, .bodyTooLarge, .responseTooLarge: .payloadTooLarge
        case .headersTooLarge: .requestHeaderFieldsTooLarge
        case .tooManyConnections, .unavailable, .quorumUnavailable, .functionBusy: .serviceUnavailable
        case .writeIndeterminate: .gatewayTimeout
        default: .internalServerError
        }
    }
}
