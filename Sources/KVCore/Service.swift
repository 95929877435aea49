/// A namespace and a table within it.
///
/// Names are 1 to 64 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit:
/// they appear in URL paths and file names, so they need no escaping anywhere.
public struct TableName: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The longest name accepted.
    public static let maximumLength = 64

    /// The namespace.
    public let namespace: String
    /// The table.
    public let table: String

    /// Creates a table name, checking both parts.
    public init(namespace: String, table: String) throws(KVError) {
        try Self.validate(namespace, what: "namespace")
        try Self.validate(table, what: "table")
        self.namespace = namespace
        self.table = table
    }

    /// Checks one namespace or table name.
    public static func validate(_ name: String, what: String) throws(KVError) {
        let bytes = Array(name.utf8)
        guard (1...maximumLength).contains(bytes.count) else {
            throw KVError(
                .invalidName, "a \(what) name has 1 to \(maximumLength) characters, not \(bytes.count)")
        }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
        }
        guard isAlphanumeric(bytes[0]),
            bytes.allSatisfy({
                isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
                    || $0 == UInt8(ascii: "-")
            })
        else {
            throw KVError(
                .invalidName,
                "the \(what) name '\(name)' may use only A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit"
            )
        }
    }

    public var description: String { "\(namespace)/\(table)" }

    public static func < (lhs: TableName, rhs: TableName) -> Bool {
        (lhs.namespace, lhs.table) < (rhs.namespace, rhs.table)
    }
}

/// A table's default replication and quorum settings, overridable per request.
///
/// `n` replicas hold each key; a read waits for `r` of them (`pr` of which must be
/// primaries), a write for `w` acknowledgements (`dw` durable, `pw` from primaries).
/// On a single node every value is effectively 1; the settings are kept so a table's
/// definition does not change when the node joins a cluster.
public struct ReplicationDefaults: Hashable, Sendable, Codable {
    /// Replicas per key.
    public var n: Int
    /// Replies a read waits for.
    public var r: Int
    /// Acknowledgements a write waits for.
    public var w: Int
    /// Acknowledgements that must be durable (fsynced).
    public var dw: Int
    /// Read replies that must come from primary replicas.
    public var pr: Int
    /// Write acknowledgements that must come from primary replicas.
    public var pw: Int

    /// Creates settings; the defaults are Dynamo's classic N=3, R=W=2.
    public init(n: Int = 3, r: Int = 2, w: Int = 2, dw: Int = 2, pr: Int = 0, pw: Int = 0) {
        self.n = n
        self.r = r
        self.w = w
        self.dw = dw
        self.pr = pr
        self.pw = pw
    }

    /// The largest replica count accepted.
    public static let maximumReplicas = 16

    /// Every problem with these settings, one sentence each.
    public func problems() -> [String] {
        var problems: [String] = []
        if !(1...Self.maximumReplicas).contains(n) {
            problems.append("n must be 1 to \(Self.maximumReplicas), not \(n)")
        }
        if !(1...max(1, n)).contains(r) { problems.append("r must be 1 to n (\(n)), not \(r)") }
        if !(1...max(1, n)).contains(w) { problems.append("w must be 1 to n (\(n)), not \(w)") }
        if !(0...max(0, w)).contains(dw) { problems.append("dw must be 0 to w (\(w)), not \(dw)") }
        if !(0...max(0, r)).contains(pr) { problems.append("pr must be 0 to r (\(r)), not \(pr)") }
        if !(0...max(0, w)).contains(pw) { problems.append("pw must be 0 to w (\(w)), not \(pw)") }
        return problems
    }

    /// Throws `request.invalid_quorum` listing every problem.
    public func validate() throws(KVError) {
        let problems = problems()
        guard problems.isEmpty else { throw KVError(.invalidQuorum, problems.joined(separator: "; ")) }
    }
}

/// A table's definition: its name, key schema and defaults, as stored in the catalog.
public struct TableDescriptor: Hashable, Sendable {
    /// The table's name.
    public var name: TableName
    /// The key schema.
    public var schema: KeySchema
    /// Default replication and quorum settings.
    public var defaults: ReplicationDefaults
    /// Changes whenever the table is created or cleared. Causal contexts and ETags are
    /// bound to it: a row's causal history starts over when its table is cleared or
    /// recreated, so a context from before must not be able to supersede new writes.
    public var generation: UInt64

    /// Creates a descriptor.
    public init(
        name: TableName, schema: KeySchema, defaults: ReplicationDefaults = ReplicationDefaults(),
        generation: UInt64 = 0
    ) {
        self.name = name
        self.schema = schema
        self.defaults = defaults
        self.generation = generation
    }
}

/// A row's full key: its table and typed key parts.
public struct RowKey: Hashable, Sendable, CustomStringConvertible {
    /// The table.
    public var table: TableName
    /// The key parts, one per schema part.
    public var parts: [KeyPart]

    /// Creates a row key.
    public init(table: TableName, parts: [KeyPart]) {
        self.table = table
        self.parts = parts
    }

    public var description: String { "\(table)/(" + parts.map(\.description).joined(separator: ", ") + ")" }
}

/// What a read returns: every live value and one context that covers them.
public struct ReadResult: Hashable, Sendable {
    /// The live values (no tombstones). Empty means the row is absent; more than one
    /// means concurrent writes left siblings for the client to resolve.
    public var siblings: [Sibling]
    /// The sealed causal context: send it back with the next write of this row.
    public var context: String
    /// A short, stable tag of the row's version (the HTTP `ETag`).
    public var etag: String

    /// Creates a result.
    public init(siblings: [Sibling], context: String, etag: String) {
        self.siblings = siblings
        self.context = context
        self.etag = etag
    }

    /// Whether the row has no live value.
    public var isAbsent: Bool { siblings.isEmpty }
}

/// A precondition on a write.
public enum WriteCondition: Hashable, Sendable {
    /// Write unconditionally.
    case none
    /// Write only if the row is absent (HTTP `If-None-Match: *`).
    case ifAbsent
    /// Write only if the row's current version matches this ETag or causal context
    /// (HTTP `If-Match`).
    case ifMatch(String)
}

/// How a write is applied.
public struct WriteOptions: Hashable, Sendable {
    /// The context of the client's last read of the row, or `nil` for a blind write.
    public var context: String?
    /// A precondition checked against the row's current version.
    public var condition: WriteCondition

    /// Creates options.
    public init(context: String? = nil, condition: WriteCondition = .none) {
        self.context = context
        self.condition = condition
    }
}

/// What a write returns.
public struct WriteResult: Hashable, Sendable {
    /// The row's context after the write: it covers the new version.
    public var context: String
    /// The row's ETag after the write.
    public var etag: String

    /// Creates a result.
    public init(context: String, etag: String) {
        self.context = context
        self.etag = etag
    }
}

/// A range scan over one table.
public struct ScanRequest: Hashable, Sendable {
    /// The largest page a scan returns.
    public static let maximumLimit = 10_000

    /// The table.
    public var table: TableName
    /// Inclusive, prefix-aware bounds.
    public var range: KeyRange
    /// The most rows in this page (1 to ``maximumLimit``).
    public var limit: Int
    /// Whether to walk in descending key order.
    public var reverse: Bool
    /// Whether to leave values out.
    public var keysOnly: Bool
    /// Where the previous page stopped, as returned in ``ScanPage/continuation``.
    public var continuation: String?

    /// Creates a request.
    public init(
        table: TableName, range: KeyRange = KeyRange(), limit: Int = 1000, reverse: Bool = false,
        keysOnly: Bool = false, continuation: String? = nil
    ) {
        self.table = table
        self.range = range
        self.limit = limit
        self.reverse = reverse
        self.keysOnly = keysOnly
        self.continuation = continuation
    }
}

/// One row of a scan.
public struct ScanRow: Hashable, Sendable {
    /// The row's key parts.
    public var key: [KeyPart]
    /// The live values (empty when the request was keys-only).
    public var siblings: [Sibling]
    /// The row's causal context.
    public var context: String

    /// Creates a row.
    public init(key: [KeyPart], siblings: [Sibling], context: String) {
        self.key = key
        self.siblings = siblings
        self.context = context
    }
}

/// One page of a scan.
public struct ScanPage: Hashable, Sendable {
    /// The rows, in the requested order.
    public var rows: [ScanRow]
    /// Pass this back to get the next page; `nil` when the range is exhausted.
    public var continuation: String?

    /// Creates a page.
    public init(rows: [ScanRow], continuation: String?) {
        self.rows = rows
        self.continuation = continuation
    }
}

/// One operation of a batch request.
public enum BatchOperation: Hashable, Sendable {
    /// Read a row.
    case get(RowKey)
    /// Write a row.
    case put(RowKey, RowValue, WriteOptions)
    /// Delete a row.
    case delete(RowKey, WriteOptions)
}

/// The outcome of one batch operation: batches are not atomic, each item succeeds or
/// fails on its own.
public enum BatchItemResult: Sendable {
    /// A read's result.
    case read(ReadResult)
    /// A write's or delete's result.
    case written(WriteResult)
    /// Why the item failed.
    case failed(KVError)
}

/// What a node says about itself.
public struct NodeInfo: Hashable, Sendable {
    /// The node's permanent id.
    public var nodeID: NodeID
    /// Its current incarnation.
    public var incarnation: UInt32
    /// The storage engine's name.
    public var engine: String
    /// The number of partitions of the key space.
    public var partitionCount: Int
    /// The software version.
    public var version: String

    /// Creates node info.
    public init(nodeID: NodeID, incarnation: UInt32, engine: String, partitionCount: Int, version: String) {
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.engine = engine
        self.partitionCount = partitionCount
        self.version = version
    }
}

/// The store's operations, whoever performs them: an in-process node, a cluster
/// coordinator, or a client talking to a server over HTTP. Every front end translates
/// its wire format into these calls and nothing else; every implementation passes the
/// same conformance suite.
public protocol KeyValueService: Sendable {
    /// Creates a table, or returns the existing one if it has the same schema (so
    /// re-running setup keeps data); a different schema is `table.exists`.
    func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor
    /// A table's descriptor, or `table.not_found`.
    func table(_ name: TableName) async throws(KVError) -> TableDescriptor
    /// Every table of `namespace`, sorted by name (empty for an unknown namespace).
    func tables(in namespace: String) async throws(KVError) -> [TableDescriptor]
    /// Every namespace that has a table, sorted.
    func namespaces() async throws(KVError) -> [String]
    /// Removes every row of a table, keeping its definition.
    func clearTable(_ name: TableName) async throws(KVError)
    /// Removes a table and its rows.
    func dropTable(_ name: TableName) async throws(KVError)
    /// Removes every table of a namespace and their rows.
    func dropNamespace(_ namespace: String) async throws(KVError)

    /// Reads a row.
    func get(_ key: RowKey) async throws(KVError) -> ReadResult
    /// Writes a row.
    func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError) -> WriteResult
    /// Deletes a row (writes a tombstone). Deleting an absent row is not an error.
    func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult
    /// Reads one page of a range scan.
    func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage
    /// Adds `delta` to the counter in a row and returns the new value. A missing row
    /// counts as 0; a counter that returns to 0 still exists. Concurrent increments
    /// through different nodes merge (see ``CounterState``).
    func increment(_ key: RowKey, by delta: Int64) async throws(KVError) -> Int64
    /// The value of the counter in a row, or `nil` when the row is absent.
    func counter(_ key: RowKey) async throws(KVError) -> Int64?
    /// Runs several operations, with one result per operation, in order.
    func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult]

    /// What the node says about itself.
    func nodeInfo() async throws(KVError) -> NodeInfo

    /// A table's descriptor if it is at hand without waiting, else `nil`.
    ///
    /// With ``immediateGet(_:)`` this is the fast path of a front end's event loop: a
    /// read answered from memory skips two thread hops. Services that cannot answer
    /// immediately return `nil` and are called through the async methods.
    func immediateTable(_ name: TableName) -> TableDescriptor?
    /// A read answered without waiting for I/O, or `nil` when it would have to wait.
    func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult?
}

extension KeyValueService {
    /// By default nothing is at hand.
    public func immediateTable(_ name: TableName) -> TableDescriptor? { nil }
    /// By default every read waits.
    public func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult? { nil }
}
