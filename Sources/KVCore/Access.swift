/// How much a grant allows, each level including the ones below it.
public enum AccessLevel: UInt8, Sendable, Hashable, Comparable, CaseIterable, CustomStringConvertible {
    /// Read rows, scan, list and describe tables.
    case read = 1
    /// Read, and write or delete rows and counters.
    case write = 2
    /// Write, and create, clear and drop tables (of a namespace), or administer the
    /// cluster (cluster-wide).
    case admin = 3

    public static func < (lhs: AccessLevel, rhs: AccessLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .admin: "admin"
        }
    }

    /// Parses `read`, `write` or `admin`.
    public init?(name: String) {
        guard let level = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = level
    }
}

/// What a token may do: a level per namespace, and optionally a cluster-wide level
/// (``clusterScope``, written `*`) that applies to every namespace and to the cluster
/// itself: `*:read` may read every namespace and the cluster's status, `*:admin` may do
/// anything, including create tokens and change the layout.
public struct AccessGrants: Hashable, Sendable, CustomStringConvertible {
    /// The scope name of cluster-wide grants.
    public static let clusterScope = "*"
    /// The most namespaces one token may name.
    public static let maximumScopes = 64

    /// The level granted per scope: a namespace name, or ``clusterScope``.
    public private(set) var levels: [String: AccessLevel]

    /// Grants of every level on everything: what a request has when access control is off.
    public static let everything = AccessGrants(unchecked: [clusterScope: .admin])

    private init(unchecked levels: [String: AccessLevel]) { self.levels = levels }

    /// Grants `levels`, checking every scope is a valid namespace name or `*`.
    public init(_ levels: [String: AccessLevel]) throws(KVError) {
        guard !levels.isEmpty else { throw KVError(.invalidRequest, "a token needs at least one grant") }
        guard levels.count <= Self.maximumScopes else {
            throw KVError(.invalidRequest, "a token may name at most \(Self.maximumScopes) namespaces")
        }
        for scope in levels.keys where scope != Self.clusterScope {
            try TableName.validate(scope, what: "namespace")
        }
        self.levels = levels
    }

    /// Parses grants written `SCOPE:LEVEL[,SCOPE:LEVEL…]`, such as `orders:write,*:read`.
    public init(parsing text: String) throws(KVError) {
        var levels: [String: AccessLevel] = [:]
        for item in text.split(separator: ",") {
            let pieces = item.split(separator: ":", omittingEmptySubsequences: false)
            guard pieces.count == 2, let level = AccessLevel(name: String(pieces[1])) else {
                throw KVError(
                    .invalidRequest,
                    "'\(item.prefix(80))' is not a grant; write NAMESPACE:LEVEL or *:LEVEL, LEVEL being read, write or admin"
                )
            }
            let scope = String(pieces[0])
            levels[scope] = max(levels[scope] ?? level, level)
        }
        try self.init(levels)
    }

    /// Whether these grants allow `level` on `namespace`, or on the cluster when `nil`.
    public func allows(_ level: AccessLevel, on namespace: String?) -> Bool {
        if let cluster = levels[Self.clusterScope], cluster >= level { return true }
        guard let namespace, let granted = levels[namespace] else { return false }
        return granted >= level
    }

    /// Whether these grants allow anything at all on `namespace`.
    public func seesNamespace(_ namespace: String) -> Bool { allows(.read, on: namespace) }

    /// `SCOPE:LEVEL` items, sorted, comma-separated.
    public var description: String {
        levels.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
    }
}

/// An access token as the cluster stores it: never the token itself, only a hash of it.
///
/// A token reads `kvt_ID_SECRET`: `ID` (16 hex digits) names the record, `SECRET` is 32
/// random bytes (base64url). Tokens are random and long, so a plain SHA-256 of the whole
/// text is enough to keep them from anyone who reads the metadata; a slow password hash
/// would only slow every request.
public struct AccessTokenRecord: Hashable, Sendable {
    /// The token's public id (16 hex digits).
    public var id: String
    /// A label for people (who or what holds it).
    public var name: String
    /// SHA-256 of the token's text.
    public var hash: [UInt8]
    /// What it may do.
    public var grants: AccessGrants
    /// When it was created (milliseconds since 1970).
    public var createdAtMilliseconds: Int64
    /// When it stops working (milliseconds since 1970), or `nil` for never.
    public var expiresAtMilliseconds: Int64?
    /// Whether it was revoked. Revoked records are kept, so that a node that missed the
    /// revocation cannot bring the token back.
    public var revoked: Bool

    /// Creates a record.
    public init(
        id: String, name: String, hash: [UInt8], grants: AccessGrants, createdAtMilliseconds: Int64,
        expiresAtMilliseconds: Int64?, revoked: Bool = false
    ) {
        self.id = id
        self.name = name
        self.hash = hash
        self.grants = grants
        self.createdAtMilliseconds = createdAtMilliseconds
        self.expiresAtMilliseconds = expiresAtMilliseconds
        self.revoked = revoked
    }

    /// The prefix every token starts with.
    public static let prefix = "kvt_"
    /// The longest token name.
    public static let maximumNameBytes = 128

    /// The id of a token's text, or `nil` when the text is no token.
    public static func id(ofToken token: String) -> String? {
        let bytes = Array(token.utf8)
        let prefixBytes = Array(prefix.utf8)
        guard bytes.count == prefixBytes.count + 16 + 1 + 43, bytes.starts(with: prefixBytes),
            bytes[prefixBytes.count + 16] == UInt8(ascii: "_")
        else { return nil }
        let id = bytes[prefixBytes.count..<(prefixBytes.count + 16)]
        guard id.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        return String(decoding: id, as: UTF8.self)
    }
}

/// A token's properties as an administrator asks for them.
public struct AccessTokenRequest: Hashable, Sendable {
    /// A label for people.
    public var name: String
    /// What it may do.
    public var grants: AccessGrants
    /// Seconds until it expires, or `nil` for never.
    public var expiresInSeconds: Int64?

    /// Creates a request.
    public init(name: String, grants: AccessGrants, expiresInSeconds: Int64? = nil) {
        self.name = name
        self.grants = grants
        self.expiresInSeconds = expiresInSeconds
    }
}

/// A newly created token: the only time its text exists outside the holder's hands.
public struct CreatedAccessToken: Hashable, Sendable {
    /// The token's text, to give to its holder.
    public var token: String
    /// Its stored record.
    public var record: AccessTokenRecord

    /// Creates the pair.
    public init(token: String, record: AccessTokenRecord) {
        self.token = token
        self.record = record
    }
}
