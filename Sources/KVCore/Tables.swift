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
        // The string's own bytes, not a copy: every request names a table.
        let bytes = name.utf8
        guard (1...maximumLength).contains(bytes.count) else {
            throw KVError(
                .invalidName, "a \(what) name has 1 to \(maximumLength) characters, not \(bytes.count)")
        }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
        }
        guard let first = bytes.first, isAlphanumeric(first),
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
