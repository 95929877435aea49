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

    /// A name taken as it is, for the store's own tables (``LargeValue/chunkTable``).
    init(uncheckedNamespace namespace: String, table: String) {
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

/// Per-request overrides of a table's ``ReplicationDefaults``: each setting left `nil`
/// keeps the table's default.
public struct QuorumOverrides: Hashable, Sendable {
    /// Replicas per key.
    public var n: Int?
    /// Replies a read waits for.
    public var r: Int?
    /// Acknowledgements a write waits for.
    public var w: Int?
    /// Acknowledgements that must be durable.
    public var dw: Int?
    /// Read replies that must come from primaries.
    public var pr: Int?
    /// Write acknowledgements that must come from primaries.
    public var pw: Int?

    /// Creates overrides; by default none.
    public init(n: Int? = nil, r: Int? = nil, w: Int? = nil, dw: Int? = nil, pr: Int? = nil, pw: Int? = nil) {
        self.n = n
        self.r = r
        self.w = w
        self.dw = dw
        self.pr = pr
        self.pw = pw
    }

    /// Whether nothing is overridden.
    public var isEmpty: Bool { self == QuorumOverrides() }

    /// The setting names, as HTTP query parameters and CLI flags spell them.
    public static let names = ["n", "r", "w", "dw", "pr", "pw"]

    /// Each overridden setting with its name, in ``names`` order.
    public var named: [(name: String, value: Int)] {
        zip(Self.names, [n, r, w, dw, pr, pw]).compactMap { name, value in value.map { (name, $0) } }
    }

    /// Reads overrides from named texts (query parameters or headers): `lookup` returns
    /// the text given for a name, or `nil`. Each must be a whole number from 0 to
    /// ``ReplicationDefaults/maximumReplicas``.
    public static func parse(_ lookup: (String) -> String?) throws(KVError) -> QuorumOverrides {
        var values: [Int?] = []
        for name in names {
            guard let text = lookup(name) else {
                values.append(nil)
                continue
            }
            guard let value = Int(text), (0...ReplicationDefaults.maximumReplicas).contains(value) else {
                throw KVError(
                    .invalidQuorum,
                    "\(name) must be a whole number from 0 to \(ReplicationDefaults.maximumReplicas), not '\(text.prefix(20))'"
                )
            }
            values.append(value)
        }
        return QuorumOverrides(
            n: values[0], r: values[1], w: values[2], dw: values[3], pr: values[4], pw: values[5])
    }

    /// The settings a request runs with: the overrides applied to `defaults`.
    ///
    /// A table's defaults may ask for more replicas than the cluster has nodes (a table
    /// created with the usual N=3 on a single node): then the defaults shrink to
    /// `availableReplicas`, keeping their proportions, because every copy the cluster
    /// can make is made. An explicit override is never shrunk, so a request that asks
    /// for n=3 on two nodes fails with `quorum.unavailable` instead of silently getting
    /// less than it asked for.
    public func applied(to defaults: ReplicationDefaults, availableReplicas: Int) -> ReplicationDefaults {
        var base = defaults
        if availableReplicas >= 1, base.n > availableReplicas {
            base.n = availableReplicas
            base.r = min(base.r, availableReplicas)
            base.w = min(base.w, availableReplicas)
            base.dw = min(base.dw, base.w)
            base.pr = min(base.pr, base.r)
            base.pw = min(base.pw, base.w)
        }
        var result = ReplicationDefaults(
            n: n ?? base.n, r: r ?? base.r, w: w ?? base.w, dw: dw ?? base.dw, pr: pr ?? base.pr,
            pw: pw ?? base.pw)
        // A lower w or r than the durable/primary counts it implies lowers those too,
        // unless they were given explicitly.
        if dw == nil { result.dw = min(result.dw, result.w) }
        if pr == nil { result.pr = min(result.pr, result.r) }
        if pw == nil { result.pw = min(result.pw, result.w) }
        if r == nil, n != nil { result.r = min(result.r, result.n) }
        if w == nil, n != nil {
            result.w = min(result.w, result.n)
            if dw == nil { result.dw = min(result.dw, result.w) }
            if pw == nil { result.pw = min(result.pw, result.w) }
        }
        return result
    }
}

/// How a read is performed.
public struct ReadOptions: Hashable, Sendable {
    /// Overrides of the table's quorum settings (`n`, `r`, `pr`).
    public var quorum: QuorumOverrides

    /// Creates options.
    public init(quorum: QuorumOverrides = QuorumOverrides()) {
        self.quorum = quorum
    }
}

/// How a table resolves versions written concurrently (Riak's `allow_mult`).
public enum ConflictPolicy: String, Hashable, Sendable, CaseIterable {
    /// Concurrent versions are kept as siblings and returned together until a writer
    /// resolves them with the context of its read: no write is lost. The default.
    case siblings
    /// Concurrent versions resolve to the one with the highest hybrid logical timestamp,
    /// the same on every replica. A writer whose concurrent write loses is not told.
    case lastWriterWins = "last-writer-wins"
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
    /// How concurrent versions of a row resolve; fixed when the table is created.
    public var conflictPolicy: ConflictPolicy

    /// Creates a descriptor.
    public init(
        name: TableName, schema: KeySchema, defaults: ReplicationDefaults = ReplicationDefaults(),
        generation: UInt64 = 0, conflictPolicy: ConflictPolicy = .siblings
    ) {
        self.name = name
        self.schema = schema
        self.defaults = defaults
        self.generation = generation
        self.conflictPolicy = conflictPolicy
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
    /// Overrides of the table's quorum settings (`n`, `w`, `dw`, `pw`).
    public var quorum: QuorumOverrides
    /// The client's id for this write (1 to 128 bytes of visible ASCII). A retry with
    /// the same id, after an indeterminate outcome, is not applied twice.
    public var requestID: String?
    /// When the written version expires (wall clock, milliseconds since the Unix epoch),
    /// or `nil` for a version that does not. Ignored by deletes.
    public var expiresAtMilliseconds: Int64?

    /// Creates options.
    public init(
        context: String? = nil, condition: WriteCondition = .none,
        quorum: QuorumOverrides = QuorumOverrides(),
        requestID: String? = nil, expiresAtMilliseconds: Int64? = nil
    ) {
        self.context = context
        self.condition = condition
        self.quorum = quorum
        self.requestID = requestID
        self.expiresAtMilliseconds = expiresAtMilliseconds
    }

    /// Throws `request.invalid` when the request id is not 1 to 128 bytes of visible ASCII.
    public func validateRequestID() throws(KVError) {
        guard let requestID else { return }
        let bytes = requestID.utf8
        guard (1...Sibling.maximumRequestIDBytes).contains(bytes.count),
            bytes.allSatisfy({ (0x21...0x7E).contains($0) })
        else {
            throw KVError(
                .invalidRequest,
                "a request id is 1 to \(Sibling.maximumRequestIDBytes) bytes of visible ASCII")
        }
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
    /// How many replicas of each partition a cluster scan reads and merges per row
    /// (default 1: one covering replica per partition; at most the table's n).
    public var r: Int?

    /// Creates a request.
    public init(
        table: TableName, range: KeyRange = KeyRange(), limit: Int = 1000, reverse: Bool = false,
        keysOnly: Bool = false, continuation: String? = nil, r: Int? = nil
    ) {
        self.table = table
        self.range = range
        self.limit = limit
        self.reverse = reverse
        self.keysOnly = keysOnly
        self.continuation = continuation
        self.r = r
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
/// A backup a node took of itself (`POST /v1/_node/backup`).
public struct BackupReport: Hashable, Sendable {
    /// The node.
    public var nodeID: NodeID
    /// Where the backup is, on the node's machine.
    public var path: String
    /// When it was taken (milliseconds since 1970).
    public var takenAtMilliseconds: Int64
    /// The layout version the node had then.
    public var layoutVersion: UInt64

    /// Creates a report.
    public init(nodeID: NodeID, path: String, takenAtMilliseconds: Int64, layoutVersion: UInt64) {
        self.nodeID = nodeID
        self.path = path
        self.takenAtMilliseconds = takenAtMilliseconds
        self.layoutVersion = layoutVersion
    }
}

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
    /// Where the node's node-to-node protocol listens (`host:port`), when it has one:
    /// what a node that joins through this one connects to.
    public var peerAddress: String?

    /// Creates node info.
    public init(
        nodeID: NodeID, incarnation: UInt32, engine: String, partitionCount: Int, version: String,
        peerAddress: String? = nil
    ) {
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.engine = engine
        self.partitionCount = partitionCount
        self.version = version
        self.peerAddress = peerAddress
    }
}

/// What a node knows about its cluster: the members, the layout version and how the
/// partitions are spread.
public struct ClusterStatus: Hashable, Sendable {
    /// One member as the answering node sees it.
    public struct Member: Hashable, Sendable {
        /// The member's node id.
        public var nodeID: NodeID
        /// Where its HTTP API listens.
        public var httpAddress: String
        /// Where its node-to-node protocol listens.
        public var peerAddress: String
        /// Its zone.
        public var zone: String
        /// Its capacity weight.
        public var capacity: Int
        /// Partition replicas the layout gives it.
        public var replicas: Int
        /// Partitions whose first replica it is.
        public var primaries: Int
        /// `joining` for a member the layout does not place yet, else `self` for the
        /// answering node, `up` (connected and alive), `suspect` (connected but missing
        /// its SWIM probes, as a paused process does) or `down` (unreachable or declared
        /// dead).
        public var state: String
        /// The member's SWIM incarnation as the answering node knows it (0 if unknown).
        public var incarnation: UInt64

        /// Creates a member entry.
        public init(
            nodeID: NodeID, httpAddress: String, peerAddress: String, zone: String, capacity: Int,
            replicas: Int,
            primaries: Int, state: String, incarnation: UInt64 = 0
        ) {
            self.incarnation = incarnation
            self.nodeID = nodeID
            self.httpAddress = httpAddress
            self.peerAddress = peerAddress
            self.zone = zone
            self.capacity = capacity
            self.replicas = replicas
            self.primaries = primaries
            self.state = state
        }
    }

    /// The answering node.
    public var nodeID: NodeID
    /// The cluster's id (hexadecimal), empty while not formed.
    public var clusterID: String
    /// The layout's version (0 while not formed).
    public var layoutVersion: UInt64
    /// Partitions of the key space.
    public var partitionCount: Int
    /// Replicas per partition.
    public var replicationFactor: Int
    /// Every known member, sorted by node id.
    public var members: [Member]
    /// The answering node's failure-handling counters by stable name: hints pending,
    /// stored and delivered, anti-entropy exchanges, divergence and repairs, tombstones
    /// held and reaped (`docs/anti-entropy.md` lists them).
    public var counters: [String: Int64]

    /// Creates a status.
    public init(
        nodeID: NodeID, clusterID: String, layoutVersion: UInt64, partitionCount: Int, replicationFactor: Int,
        members: [Member], counters: [String: Int64] = [:]
    ) {
        self.counters = counters
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.layoutVersion = layoutVersion
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.members = members
    }
}

/// A cluster's layout as served over HTTP: each partition's ordered replicas.
public struct LayoutDescription: Hashable, Sendable {
    /// The layout version.
    public var version: UInt64
    /// Replicas per partition.
    public var replicationFactor: Int
    /// For each partition, its replicas in preference order.
    public var partitions: [[NodeID]]

    /// Creates a description.
    public init(version: UInt64, replicationFactor: Int, partitions: [[NodeID]]) {
        self.version = version
        self.replicationFactor = replicationFactor
        self.partitions = partitions
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
    func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult
    /// Writes a row.
    func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError) -> WriteResult
    /// Deletes a row (writes a tombstone). Deleting an absent row is not an error.
    func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult
    /// Writes a row whose value arrives in pieces and may be far larger than memory
    /// should hold: a value past the inline size is cut into chunks (``LargeValue``) as
    /// it arrives, and the row appears only once every chunk is durable. `length`, when
    /// the sender declared one, is checked before anything is read.
    func putStreamed(
        _ key: RowKey, contentType: String, length: Int64?, body: any ValueBody, options: WriteOptions
    ) async throws(KVError) -> WriteResult
    /// Reads `range` of a large value named by a version a read returned, handing the
    /// bytes to `sink` in order as they arrive from the replicas.
    func readLargeValue(_ value: LargeValue, range: Range<Int64>, into sink: ValueSink) async throws(KVError)
    /// Reads one page of a range scan.
    func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage
    /// Adds `delta` to the counter in a row and returns the new value. A missing row
    /// counts as 0; a counter that returns to 0 still exists. Concurrent increments
    /// through different nodes merge (see ``CounterState``).
    func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError) -> Int64
    /// The value of the counter in a row, or `nil` when the row is absent.
    func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64?
    /// Runs several operations, with one result per operation, in order.
    func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult]

    /// What the node says about itself.
    func nodeInfo() async throws(KVError) -> NodeInfo
    /// The cluster as this node sees it.
    func clusterStatus() async throws(KVError) -> ClusterStatus
    /// The cluster's current layout.
    func clusterLayout() async throws(KVError) -> LayoutDescription
    /// Stages a layout change and returns the plan of every staged change.
    func stageLayoutChange(_ change: LayoutChangeRequest) async throws(KVError) -> LayoutPlanReport
    /// Drops every staged change.
    func clearLayoutChanges() async throws(KVError) -> LayoutPlanReport
    /// What committing the staged changes would do.
    func layoutPlan() async throws(KVError) -> LayoutPlanReport
    /// Commits the plan named `id` as the next layout version; `layout.stale_plan` when
    /// the layout or the staged changes changed since the plan was shown.
    func commitLayoutPlan(_ id: String) async throws(KVError) -> LayoutPlanReport
    /// The transfers of the layout change in progress, with their progress.
    func transfers() async throws(KVError) -> TransfersReport
    /// Pauses, resumes or throttles transfers cluster-wide.
    func controlTransfers(_ request: TransferControlRequest) async throws(KVError) -> TransfersReport

    /// A table's descriptor if it is at hand without waiting, else `nil`.
    ///
    /// With ``immediateGet(_:)`` this is the fast path of a front end's event loop: a
    /// read answered from memory skips two thread hops. Services that cannot answer
    /// immediately return `nil` and are called through the async methods.
    func immediateTable(_ name: TableName) -> TableDescriptor?
    /// A read answered without waiting for I/O, or `nil` when it would have to wait.
    func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult?
    /// Why the service cannot serve data yet (`server.unavailable`), or `nil` when it
    /// can: what a readiness check reports. Answered without waiting.
    func readinessProblem() -> KVError?
    /// Takes a consistent backup of this node while it serves, under `name` (a
    /// timestamped name when `nil`) in the node's backup directory.
    func backup(name: String?) async throws(KVError) -> BackupReport
    /// Creates an access token with the given grants and returns its text, once.
    func createAccessToken(_ request: AccessTokenRequest) async throws(KVError) -> CreatedAccessToken
    /// Every token record of the cluster, revoked ones included, by id.
    func accessTokens() async throws(KVError) -> [AccessTokenRecord]
    /// Revokes the token `id` on every node; returns its record.
    func revokeAccessToken(id: String) async throws(KVError) -> AccessTokenRecord
    /// The record of token `id` as this node knows it, without waiting; `nil` if unknown.
    func immediateAccessToken(id: String) -> AccessTokenRecord?
}

extension KeyValueService {
    /// A service that keeps values whole reads the body into memory, up to the inline
    /// limit ``RowValue/maximumInlineBytes``.
    public func putStreamed(
        _ key: RowKey, contentType: String, length: Int64?, body: any ValueBody, options: WriteOptions
    ) async throws(KVError) -> WriteResult {
        if let length, length > Int64(RowValue.maximumInlineBytes) {
            throw KVError(
                .valueTooLarge,
                "the value has \(length) bytes; this service keeps values whole, up to \(RowValue.maximumInlineBytes)"
            )
        }
        var bytes: [UInt8] = []
        while let piece = try await body.next() {
            bytes += piece
            guard bytes.count <= RowValue.maximumInlineBytes else {
                throw KVError(
                    .valueTooLarge,
                    "the value is larger than \(RowValue.maximumInlineBytes) bytes, which this service keeps whole"
                )
            }
        }
        return try await put(key, value: RowValue(bytes: bytes, contentType: contentType), options: options)
    }

    /// A service that keeps values whole has no large values to read.
    public func readLargeValue(_ value: LargeValue, range: Range<Int64>, into sink: ValueSink)
        async throws(KVError)
    {
        throw KVError(.unsupported, "this service does not keep values in chunks")
    }

    /// A service that needs no cluster is ready once it exists.
    public func readinessProblem() -> KVError? { nil }

    /// A service that keeps no files takes no backups.
    public func backup(name: String?) async throws(KVError) -> BackupReport {
        throw KVError(.invalidRequest, "this service keeps nothing to back up")
    }

    /// Reads a row with the table's quorum settings.
    public func get(_ key: RowKey) async throws(KVError) -> ReadResult {
        try await get(key, options: ReadOptions())
    }

    /// Adds `delta` to a counter with the table's quorum settings.
    public func increment(_ key: RowKey, by delta: Int64) async throws(KVError) -> Int64 {
        try await increment(key, by: delta, options: WriteOptions())
    }

    /// Reads a counter with the table's quorum settings.
    public func counter(_ key: RowKey) async throws(KVError) -> Int64? {
        try await counter(key, options: ReadOptions())
    }

    /// A service that is no cluster member has no cluster to describe.
    public func clusterStatus() async throws(KVError) -> ClusterStatus {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member has no layout.
    public func clusterLayout() async throws(KVError) -> LayoutDescription {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member has no layout to change.
    public func stageLayoutChange(_ change: LayoutChangeRequest) async throws(KVError) -> LayoutPlanReport {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member has no layout to change.
    public func clearLayoutChanges() async throws(KVError) -> LayoutPlanReport {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member has no layout to change.
    public func layoutPlan() async throws(KVError) -> LayoutPlanReport {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member has no layout to change.
    public func commitLayoutPlan(_ id: String) async throws(KVError) -> LayoutPlanReport {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member moves no data.
    public func transfers() async throws(KVError) -> TransfersReport {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member moves no data.
    public func controlTransfers(_ request: TransferControlRequest) async throws(KVError) -> TransfersReport {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member keeps no tokens.
    public func createAccessToken(_ request: AccessTokenRequest) async throws(KVError) -> CreatedAccessToken {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member keeps no tokens.
    public func accessTokens() async throws(KVError) -> [AccessTokenRecord] {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member keeps no tokens.
    public func revokeAccessToken(id: String) async throws(KVError) -> AccessTokenRecord {
        throw KVError(.notFound, "this node is not part of a cluster")
    }

    /// A service that is no cluster member knows no tokens.
    public func immediateAccessToken(id: String) -> AccessTokenRecord? { nil }

    /// By default nothing is at hand.
    public func immediateTable(_ name: TableName) -> TableDescriptor? { nil }
    /// By default every read waits.
    public func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult? { nil }
}
