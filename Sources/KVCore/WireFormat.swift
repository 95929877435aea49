// The JSON bodies of the HTTP API (docs/http-api.md), shared by the server and the
// client so both sides read and write one definition. Only Codable conformances live
// here; the JSON encoder and decoder belong to the front ends.

/// A key part as it appears in JSON: a string, or an integer. Which one a part must be
/// is decided by the table's schema (`bytes` parts are base64url strings).
/// A key part in JSON: a string or an integer; the table schema decides which part type it is (`bytes` parts are base64url strings).
public enum WireKeyPart: Codable, Sendable, Hashable {
    case string(String)
    case integer(Int64)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int64.self) {
            self = .integer(number)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let text): try container.encode(text)
        case .integer(let number): try container.encode(number)
        }
    }

    public init(_ part: KeyPart) {
        switch part {
        case .string(let text): self = .string(text)
        case .bytes(let data): self = .string(Base64URL.encode(data))
        case .int64(let number): self = .integer(number)
        case .uuid(let id): self = .string(id.description)
        }
    }

    /// The typed part for a schema position. JSON types are strict, as the schema's: an
    /// `int64` part is a JSON integer, every other part a JSON string.
    public func keyPart(as type: KeyPartType) throws(KVError) -> KeyPart {
        switch (self, type) {
        case (.integer(let number), .int64): return .int64(number)
        case (.integer(let number), _):
            throw KVError(
                .invalidKeyPart, "a \(type.rawValue) key part must be a JSON string, not the number \(number)"
            )
        case (.string(let text), .int64):
            throw KVError(
                .invalidKeyPart, "an int64 key part must be a JSON integer, not the string \"\(text)\"")
        case (.string(let text), .bytes):
            guard let data = Base64URL.decode(text) else {
                throw KVError(.invalidKeyPart, "a bytes key part in JSON must be base64url text")
            }
            return .bytes(data)
        case (.string(let text), _): return try KeyPart.parse(text, as: type)
        }
    }
}

extension KeySchema {
    /// Parses JSON key parts against this schema, as a full key or as a prefix.
    public func keyParts(_ json: [WireKeyPart], prefix: Bool) throws(KVError) -> [KeyPart] {
        guard json.count <= parts.count else {
            throw KVError(.keyArity, "the key has \(json.count) parts; the table's schema has \(parts.count)")
        }
        var result: [KeyPart] = []
        for (index, part) in json.enumerated() { result.append(try part.keyPart(as: parts[index])) }
        if prefix { try validatePrefix(result) } else { try validate(result) }
        return result
    }
}

/// The body of every error response: a stable code and a message.
public struct WireError: Codable, Sendable {
    public var code: String
    public var message: String

    /// Creates a value.
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// Replication defaults in JSON; absent fields take the defaults of ``ReplicationDefaults``.
public struct WireDefaults: Codable, Sendable {
    public var n: Int?
    public var r: Int?
    public var w: Int?
    public var dw: Int?
    public var pr: Int?
    public var pw: Int?

    public init(_ defaults: ReplicationDefaults) {
        (n, r, w, dw, pr, pw) = (defaults.n, defaults.r, defaults.w, defaults.dw, defaults.pr, defaults.pw)
    }

    public var defaults: ReplicationDefaults {
        let base = ReplicationDefaults()
        return ReplicationDefaults(
            n: n ?? base.n, r: r ?? base.r, w: w ?? base.w, dw: dw ?? base.dw, pr: pr ?? base.pr,
            pw: pw ?? base.pw)
    }
}

/// The body of a create-table request.
public struct WireCreateTable: Codable, Sendable {
    public var key: [String]
    public var partitionKeyLength: Int?
    public var defaults: WireDefaults?
    /// `siblings` (the default) or `last-writer-wins` (see ``ConflictPolicy``).
    public var conflicts: String?

    /// Creates a value.
    public init(
        key: [String], partitionKeyLength: Int? = nil, defaults: WireDefaults? = nil, conflicts: String? = nil
    ) {
        self.key = key
        self.partitionKeyLength = partitionKeyLength
        self.defaults = defaults
        self.conflicts = conflicts
    }

    public enum CodingKeys: String, CodingKey {
        case key
        case partitionKeyLength = "partition_key_length"
        case defaults, conflicts
    }

    /// The requested conflict policy; `schema.invalid` names the accepted ones.
    public func conflictPolicy() throws(KVError) -> ConflictPolicy {
        guard let conflicts else { return .siblings }
        guard let policy = ConflictPolicy(rawValue: conflicts) else {
            throw KVError(
                .invalidSchema, "unknown conflict policy '\(conflicts)'; use siblings or last-writer-wins")
        }
        return policy
    }
}

/// A table definition in JSON.
public struct WireTable: Codable, Sendable {
    public var namespace: String
    public var table: String
    public var key: [String]
    public var partitionKeyLength: Int
    public var defaults: WireDefaults
    /// `siblings` or `last-writer-wins`.
    public var conflicts: String?

    public enum CodingKeys: String, CodingKey {
        case namespace, table, key, defaults, conflicts
        case partitionKeyLength = "partition_key_length"
    }

    public init(_ descriptor: TableDescriptor) {
        namespace = descriptor.name.namespace
        table = descriptor.name.table
        key = descriptor.schema.parts.map(\.rawValue)
        partitionKeyLength = descriptor.schema.partitionKeyLength
        defaults = WireDefaults(descriptor.defaults)
        conflicts = descriptor.conflictPolicy.rawValue
    }
}

/// One sibling in JSON: its content type, its value (as text when it is valid UTF-8,
/// otherwise as base64url; never both, to keep large answers small), and when it was
/// written.
public struct WireSibling: Codable, Sendable {
    public var contentType: String
    /// The value as text, present when it is valid UTF-8.
    public var value: String?
    /// The value as base64url, present when it is not valid UTF-8.
    public var valueBase64: String?
    public var modifiedMilliseconds: Int64
    /// A large value's id, instead of its bytes: fetch it with `?value_id=`.
    public var valueID: String?
    /// A large value's length in bytes.
    public var length: Int64?
    /// A large value's MD5, hexadecimal.
    public var md5: String?
    /// When the version expires (milliseconds since the Unix epoch), if it does.
    public var expiresMilliseconds: Int64?

    public enum CodingKeys: String, CodingKey {
        case contentType = "content_type"
        case value
        case valueBase64 = "value_base64"
        case modifiedMilliseconds = "modified_ms"
        case valueID = "value_id"
        case length
        case md5
        case expiresMilliseconds = "expires_ms"
    }

    public init(_ sibling: Sibling) {
        let value = sibling.value ?? RowValue(bytes: [])
        contentType = value.contentType
        modifiedMilliseconds = sibling.timestampMilliseconds
        expiresMilliseconds = sibling.expiresAtMilliseconds
        if let large = value.largeValue {
            valueID = large.id.description
            length = large.length
            md5 = large.md5Hex
            return
        }
        self.value = String(validating: value.bytes, as: UTF8.self)
        valueBase64 = self.value == nil ? Base64URL.encode(value.bytes) : nil
    }

    /// The value's bytes, from whichever field carries them.
    public var bytes: [UInt8]? {
        if let value { return Array(value.utf8) }
        return valueBase64.flatMap(Base64URL.decode)
    }
}

/// The body of a `300 Multiple Choices` read.
public struct WireSiblings: Codable, Sendable {
    public var siblings: [WireSibling]
    public var context: String
    public var etag: String

    /// Creates a value.
    public init(siblings: [WireSibling], context: String, etag: String) {
        self.siblings = siblings
        self.context = context
        self.etag = etag
    }
}

/// One row of a scan in JSON.
public struct WireScanRow: Codable, Sendable {
    public var key: [WireKeyPart]
    public var siblings: [WireSibling]?
    public var context: String

    /// Creates a value.
    public init(key: [WireKeyPart], siblings: [WireSibling]? = nil, context: String) {
        self.key = key
        self.siblings = siblings
        self.context = context
    }
}

/// One page of a scan in JSON.
public struct WireScanPage: Codable, Sendable {
    public var rows: [WireScanRow]
    public var continuation: String?

    /// Creates a value.
    public init(rows: [WireScanRow], continuation: String? = nil) {
        self.rows = rows
        self.continuation = continuation
    }
}

/// One operation of a batch request.
public struct WireBatchOperation: Codable, Sendable {
    public var op: String
    public var namespace: String
    public var table: String
    public var key: [WireKeyPart]
    public var value: String?
    public var valueBase64: String?
    public var contentType: String?
    public var context: String?
    public var ifNoneMatch: String?
    public var ifMatch: String?
    public var requestID: String?

    /// Creates a value.
    public init(
        op: String, namespace: String, table: String, key: [WireKeyPart], value: String? = nil,
        valueBase64: String? = nil, contentType: String? = nil, context: String? = nil,
        ifNoneMatch: String? = nil, ifMatch: String? = nil, requestID: String? = nil
    ) {
        self.requestID = requestID
        self.op = op
        self.namespace = namespace
        self.table = table
        self.key = key
        self.value = value
        self.valueBase64 = valueBase64
        self.contentType = contentType
        self.context = context
        self.ifNoneMatch = ifNoneMatch
        self.ifMatch = ifMatch
    }

    public enum CodingKeys: String, CodingKey {
        case op, namespace, table, key, value, context
        case valueBase64 = "value_base64"
        case contentType = "content_type"
        case ifNoneMatch = "if_none_match"
        case ifMatch = "if_match"
        case requestID = "request_id"
    }
}

/// The body of a batch request.
public struct WireBatch: Codable, Sendable {
    public var operations: [WireBatchOperation]

    /// Creates a value.
    public init(operations: [WireBatchOperation]) {
        self.operations = operations
    }
}

/// The result of one batch operation: its status and either values, a new context, or an error.
public struct WireBatchResult: Codable, Sendable {
    public var status: Int
    public var siblings: [WireSibling]?
    public var context: String?
    public var etag: String?
    public var code: String?
    public var message: String?

    /// Creates a value.
    public init(
        status: Int, siblings: [WireSibling]? = nil, context: String? = nil, etag: String? = nil,
        code: String? = nil, message: String? = nil
    ) {
        self.status = status
        self.siblings = siblings
        self.context = context
        self.etag = etag
        self.code = code
        self.message = message
    }
}

/// The body of a batch response.
public struct WireBatchResponse: Codable, Sendable {
    public var results: [WireBatchResult]

    /// Creates a value.
    public init(results: [WireBatchResult]) {
        self.results = results
    }
}

/// What `GET /v1/_node` returns.
public struct WireNodeInfo: Codable, Sendable {
    public var nodeID: String
    public var incarnation: UInt32
    public var engine: String
    public var partitions: Int
    public var version: String
    public var peerAddress: String?

    /// Creates a value.
    public init(
        nodeID: String, incarnation: UInt32, engine: String, partitions: Int, version: String,
        peerAddress: String? = nil
    ) {
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.engine = engine
        self.partitions = partitions
        self.version = version
        self.peerAddress = peerAddress
    }

    public enum CodingKeys: String, CodingKey {
        case nodeID = "node_id"
        case peerAddress = "peer_address"
        case incarnation, engine, partitions, version
    }
}

/// The body of `POST /v1/_node/backup` (every field optional) and what it answers.
public struct WireBackup: Codable, Sendable {
    public var name: String?
    public var nodeID: String?
    public var path: String?
    public var takenAtMilliseconds: Int64?
    public var layoutVersion: UInt64?

    /// Creates a value.
    public init(
        name: String? = nil, nodeID: String? = nil, path: String? = nil, takenAtMilliseconds: Int64? = nil,
        layoutVersion: UInt64? = nil
    ) {
        self.name = name
        self.nodeID = nodeID
        self.path = path
        self.takenAtMilliseconds = takenAtMilliseconds
        self.layoutVersion = layoutVersion
    }

    public enum CodingKeys: String, CodingKey {
        case name, path
        case nodeID = "node_id"
        case takenAtMilliseconds = "taken_at_ms"
        case layoutVersion = "layout_version"
    }
}

/// One member in `GET /v1/_cluster`.
public struct WireClusterMember: Codable, Sendable {
    public var nodeID: String
    public var httpAddress: String
    public var peerAddress: String
    public var zone: String
    public var capacity: Int
    public var replicas: Int
    public var primaries: Int
    public var state: String
    public var incarnation: UInt64?

    /// Creates a value.
    public init(_ member: ClusterStatus.Member) {
        incarnation = member.incarnation
        nodeID = member.nodeID.description
        httpAddress = member.httpAddress
        peerAddress = member.peerAddress
        zone = member.zone
        capacity = member.capacity
        replicas = member.replicas
        primaries = member.primaries
        state = member.state
    }

    public enum CodingKeys: String, CodingKey {
        case nodeID = "node_id"
        case httpAddress = "http_address"
        case peerAddress = "peer_address"
        case zone, capacity, replicas, primaries, state, incarnation
    }
}

/// What `GET /v1/_cluster` returns.
public struct WireClusterStatus: Codable, Sendable {
    public var nodeID: String
    public var clusterID: String
    public var layoutVersion: UInt64
    public var partitions: Int
    public var replicationFactor: Int
    public var members: [WireClusterMember]
    public var counters: [String: Int64]?

    /// Creates a value.
    public init(_ status: ClusterStatus) {
        counters = status.counters
        nodeID = status.nodeID.description
        clusterID = status.clusterID
        layoutVersion = status.layoutVersion
        partitions = status.partitionCount
        replicationFactor = status.replicationFactor
        members = status.members.map(WireClusterMember.init)
    }

    public enum CodingKeys: String, CodingKey {
        case nodeID = "node_id"
        case clusterID = "cluster_id"
        case layoutVersion = "layout_version"
        case replicationFactor = "replication_factor"
        case partitions, members, counters
    }

    /// The status this describes, or `nil` when a node id is not hexadecimal.
    public var status: ClusterStatus? {
        guard let node = NodeID(nodeID) else { return nil }
        var members: [ClusterStatus.Member] = []
        for member in self.members {
            guard let id = NodeID(member.nodeID) else { return nil }
            members.append(
                ClusterStatus.Member(
                    nodeID: id, httpAddress: member.httpAddress, peerAddress: member.peerAddress,
                    zone: member.zone,
                    capacity: member.capacity, replicas: member.replicas, primaries: member.primaries,
                    state: member.state, incarnation: member.incarnation ?? 0))
        }
        return ClusterStatus(
            nodeID: node, clusterID: clusterID, layoutVersion: layoutVersion, partitionCount: partitions,
            replicationFactor: replicationFactor, members: members, counters: counters ?? [:])
    }
}

/// What `GET /v1/_cluster/layout` returns: each partition's replicas in preference order.
public struct WireLayout: Codable, Sendable {
    public var version: UInt64
    public var replicationFactor: Int
    public var partitions: [[String]]

    /// Creates a value.
    public init(_ layout: LayoutDescription) {
        version = layout.version
        replicationFactor = layout.replicationFactor
        partitions = layout.partitions.map { $0.map(\.description) }
    }

    public enum CodingKeys: String, CodingKey {
        case replicationFactor = "replication_factor"
        case version, partitions
    }
}

/// An access token over HTTP: what `POST /v1/_auth/tokens` takes (name, grants, expiry)
/// and what the token routes answer (the record, and the token's text once, on create).
public struct WireAccessToken: Codable, Sendable {
    public var id: String?
    public var name: String?
    /// Level by scope: a namespace, or `*` for cluster-wide.
    public var grants: [String: String]?
    public var expiresInSeconds: Int64?
    public var createdAtMilliseconds: Int64?
    public var expiresAtMilliseconds: Int64?
    public var revoked: Bool?
    /// The token's text: only in the answer that created it.
    public var token: String?

    /// Creates a value.
    public init(
        id: String? = nil, name: String? = nil, grants: [String: String]? = nil,
        expiresInSeconds: Int64? = nil,
        createdAtMilliseconds: Int64? = nil, expiresAtMilliseconds: Int64? = nil, revoked: Bool? = nil,
        token: String? = nil
    ) {
        self.id = id
        self.name = name
        self.grants = grants
        self.expiresInSeconds = expiresInSeconds
        self.createdAtMilliseconds = createdAtMilliseconds
        self.expiresAtMilliseconds = expiresAtMilliseconds
        self.revoked = revoked
        self.token = token
    }

    /// The wire form of a stored record.
    public init(_ record: AccessTokenRecord, token: String? = nil) {
        self.init(
            id: record.id, name: record.name,
            grants: record.grants.levels.mapValues(\.description),
            createdAtMilliseconds: record.createdAtMilliseconds,
            expiresAtMilliseconds: record.expiresAtMilliseconds, revoked: record.revoked, token: token)
    }

    /// The record it describes (its hash unknown to a client, so empty).
    public func record() throws(KVError) -> AccessTokenRecord {
        AccessTokenRecord(
            id: id ?? "", name: name ?? "", hash: [], grants: try parsedGrants(),
            createdAtMilliseconds: createdAtMilliseconds ?? 0, expiresAtMilliseconds: expiresAtMilliseconds,
            revoked: revoked ?? false)
    }

    /// The grants it names.
    public func parsedGrants() throws(KVError) -> AccessGrants {
        var levels: [String: AccessLevel] = [:]
        for (scope, name) in grants ?? [:] {
            guard let level = AccessLevel(name: name) else {
                throw KVError(
                    .invalidRequest, "'\(name.prefix(20))' is no access level; use read, write or admin")
            }
            levels[scope] = level
        }
        return try AccessGrants(levels)
    }

    public enum CodingKeys: String, CodingKey {
        case id, name, grants, revoked, token
        case expiresInSeconds = "expires_in_seconds"
        case createdAtMilliseconds = "created_at_ms"
        case expiresAtMilliseconds = "expires_at_ms"
    }
}
