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
    /// Starts a put without suspending the caller (a front end's event loop) and calls
    /// `completion` once, from another thread or before this returns, with what
    /// ``put(_:value:options:)`` would have answered; `false` (and no call) when the put
    /// must go through
    /// ``put(_:value:options:)``. `completion` must return quickly. Puts a caller starts
    /// this way one after another may be applied in any order, as concurrent puts are.
    func startPut(
        _ key: RowKey, value: RowValue, options: WriteOptions,
        completion: @escaping @Sendable (PutOutcome) -> Void
    ) -> Bool
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
    /// By default every put goes through ``put(_:value:options:)``.
    public func startPut(
        _ key: RowKey, value: RowValue, options: WriteOptions,
        completion: @escaping @Sendable (PutOutcome) -> Void
    ) -> Bool { false }
}

/// How a put started by ``KeyValueService/startPut(_:value:options:completion:)``
/// ended. Its ``WriteResult`` is made only when asked for, on the caller's thread:
/// sealing the row's context costs a hash, which the thread that reports the outcome
/// (the write drain's, or the core's event loop) should not spend on callers that only
/// need to know the put is stored.
public struct PutOutcome: Sendable {
    /// Why the put failed, or `nil` when it is stored.
    public let failure: KVError?
    private let makeResult: @Sendable () -> WriteResult

    /// A put that is stored; `result` makes its ``WriteResult``.
    public init(stored result: @escaping @Sendable () -> WriteResult) {
        failure = nil
        makeResult = result
    }

    /// A put that failed with `error`.
    public init(failed error: KVError) {
        failure = error
        makeResult = { WriteResult(context: "", etag: "") }
    }

    /// What ``KeyValueService/put(_:value:options:)`` would have returned or thrown.
    public func result() -> Result<WriteResult, KVError> {
        if let failure { return .failure(failure) }
        return .success(makeResult())
    }
}
