import KVStorage

/// A database server's address as an operator writes it:
/// `scheme://user:password@host:port/database?name=value&…`.
///
/// Each engine reads the parts its client library needs; the query parameters carry the
/// store's own settings (`table`, `pool`), which are removed before the rest reaches the
/// database's client.
public struct DatabaseURL: Sendable, Hashable, CustomStringConvertible {
    /// The scheme (`postgres`, `mariadb`, `redis`…), lowercased.
    public var scheme: String
    /// The user, percent-decoded; empty when absent.
    public var user: String
    /// The password, percent-decoded, or `nil` when absent.
    public var password: String?
    /// The host name or address (brackets removed from IPv6 literals).
    public var host: String
    /// The port, or `nil` for the database's default.
    public var port: Int?
    /// The path after the host without its leading slash (the database name), decoded.
    public var database: String
    /// The query parameters in order, decoded.
    public var parameters: [(name: String, value: String)]

    /// Parses `text`; the error names what is wrong.
    public init(_ text: String) throws(StorageError) {
        guard let schemeEnd = text.range(of: "://") else {
            throw StorageError(
                .invalidArgument, "'\(Self.redacted(text))' is not a URL like scheme://host:port/database")
        }
        scheme = text[..<schemeEnd.lowerBound].lowercased()
        var rest = Substring(text[schemeEnd.upperBound...])
        var query = Substring("")
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        user = ""
        password = nil
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = try Self.decode(credentials[..<colon])
                password = try Self.decode(credentials[credentials.index(after: colon)...])
            } else {
                user = try Self.decode(credentials)
            }
        }
        var hostPart = rest
        port = nil
        if hostPart.hasPrefix("["), let close = hostPart.firstIndex(of: "]") {
            let after = hostPart[hostPart.index(after: close)...]
            host = String(hostPart[hostPart.index(after: hostPart.startIndex)..<close])
            hostPart = after
            if hostPart.hasPrefix(":") { port = Int(hostPart.dropFirst()) ?? -1 }
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = String(hostPart[..<colon])
            port = Int(hostPart[hostPart.index(after: colon)...]) ?? -1
        } else {
            host = String(hostPart)
        }
        if let port, !(1...65535).contains(port) {
            throw StorageError(.invalidArgument, "'\(Self.redacted(text))' has no valid port")
        }
        database = try Self.decode(path)
        parameters = []
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            parameters.append(
                (try Self.decode(parts[0]), parts.count > 1 ? try Self.decode(parts[1]) : ""))
        }
    }

    /// The value of parameter `name`, or `nil`.
    public func parameter(_ name: String) -> String? {
        parameters.last { $0.name == name }?.value
    }

    /// `host:port`, for messages.
    public var endpoint: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return port.map { "\(shownHost):\($0)" } ?? shownHost
    }

    /// The URL without its password, for logs and errors.
    public var description: String {
        let credentials = user.isEmpty ? "" : user + (password == nil ? "" : ":***") + "@"
        return "\(scheme)://\(credentials)\(endpoint)/\(database)"
    }

    public static func == (left: DatabaseURL, right: DatabaseURL) -> Bool {
        left.scheme == right.scheme && left.user == right.user && left.password == right.password
            && left.host == right.host && left.port == right.port && left.database == right.database
            && left.parameters.map(\.name) == right.parameters.map(\.name)
            && left.parameters.map(\.value) == right.parameters.map(\.value)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(description)
    }

    private static func redacted(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://"), let at = text.lastIndex(of: "@"),
            at > schemeEnd.upperBound
        else { return text }
        return text[..<schemeEnd.upperBound] + "***" + text[at...]
    }

    private static func decode(_ text: Substring) throws(StorageError) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                let first = utf8.index(after: index)
                guard first < utf8.endIndex, utf8.index(after: first) < utf8.endIndex,
                    let high = hexValue(utf8[first]), let low = hexValue(utf8[utf8.index(after: first)])
                else {
                    throw StorageError(.invalidArgument, "bad percent escape in a database URL")
                }
                bytes.append(high << 4 | low)
                index = utf8.index(index, offsetBy: 3)
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Whether `name` can name a table (or key prefix) of the store without quoting: letters,
/// digits and `_`, not starting with a digit, at most 48 characters.
public func isPlainDatabaseName(_ name: String) -> Bool {
    guard let first = name.utf8.first, name.utf8.count <= 48 else { return false }
    func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A }
    func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
    return !isDigit(first) && name.utf8.allSatisfy { isLetter($0) || isDigit($0) || $0 == 0x5F }
}
