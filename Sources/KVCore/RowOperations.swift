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
