import KVCore

/// ``KeyValueService`` through the cluster: row requests go to a replica of their key,
/// everything else to any node.
extension ClusterClient {
    // MARK: Tables

    public func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor {
        // Creating the same table again answers the table: safe to repeat.
        try await perform(candidates(preferred: []), .read) { connection async throws(KVError) in
            try await connection.createTable(descriptor)
        }
    }

    public func table(_ name: TableName) async throws(KVError) -> TableDescriptor {
        try await perform(candidates(preferred: []), .read) { connection async throws(KVError) in
            try await connection.table(name)
        }
    }

    public func tables(in namespace: String) async throws(KVError) -> [TableDescriptor] {
        try await perform(candidates(preferred: []), .read) { connection async throws(KVError) in
            try await connection.tables(in: namespace)
        }
    }

    public func namespaces() async throws(KVError) -> [String] {
        try await perform(candidates(preferred: []), .read) { connection async throws(KVError) in
            try await connection.namespaces()
        }
    }

    public func clearTable(_ name: TableName) async throws(KVError) {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.clearTable(name)
        }
    }

    public func dropTable(_ name: TableName) async throws(KVError) {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.dropTable(name)
        }
        forgetSchema(of: name)
    }

    public func dropNamespace(_ namespace: String) async throws(KVError) {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.dropNamespace(namespace)
        }
        forgetSchemas(in: namespace)
    }

    // MARK: Rows

    public func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult {
        try await perform(candidates(for: key, write: false), .read) { connection async throws(KVError) in
            try await connection.get(key, options: options)
        }
    }

    public func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError)
        -> WriteResult
    {
        let options = Self.identified(options)
        return try await perform(candidates(for: key, write: true), .write) {
            connection async throws(KVError) in
            try await connection.put(key, value: value, options: options)
        }
    }

    public func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult {
        let options = Self.identified(options)
        return try await perform(candidates(for: key, write: true), .write) {
            connection async throws(KVError) in
            try await connection.delete(key, options: options)
        }
    }

    /// Streams a value of any size to a replica of its key. The body is read once, so a
    /// failure after the upload started is not retried.
    public func putStreamed(
        _ key: RowKey, contentType: String, length: Int64?, body: any ValueBody, options: WriteOptions
    ) async throws(KVError) -> WriteResult {
        let options = Self.identified(options)
        return try await perform(candidates(for: key, write: true), .onlyIfNotSent) {
            connection async throws(KVError) in
            try await connection.putStreamed(
                key, contentType: contentType, length: length, body: body, options: options)
        }
    }

    /// Reads a row's value (or the byte `range` of it) from a replica of its key into
    /// `sink` as it arrives (see ``HTTPKeyValueService/download(_:options:range:into:)``).
    public func download(
        _ key: RowKey, options: ReadOptions, range: Range<Int64>? = nil, into sink: @escaping ResponseSink
    ) async throws(KVError) -> ClientResponse {
        try await perform(candidates(for: key, write: false), .onlyIfNotSent) {
            connection async throws(KVError) in
            try await connection.download(key, options: options, range: range, into: sink)
        }
    }

    public func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage {
        try await perform(candidates(preferred: []), .read) { connection async throws(KVError) in
            try await connection.scan(request)
        }
    }

    public func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError)
        -> Int64
    {
        let options = Self.identified(options)
        return try await perform(candidates(for: key, write: true), .write) {
            connection async throws(KVError) in
            try await connection.increment(key, by: delta, options: options)
        }
    }

    public func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? {
        try await perform(candidates(for: key, write: false), .read) { connection async throws(KVError) in
            try await connection.counter(key, options: options)
        }
    }

    /// A batch is split by the node that should coordinate each item; each part goes
    /// to its node, side by side.
    public func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] {
        try await routedBatch(operations)
    }

    // MARK: The cluster

    public func nodeInfo() async throws(KVError) -> NodeInfo {
        try await anyNode { connection async throws(KVError) in try await connection.nodeInfo() }
    }

    public func clusterStatus() async throws(KVError) -> ClusterStatus {
        try await anyNode { connection async throws(KVError) in try await connection.clusterStatus() }
    }

    public func clusterLayout() async throws(KVError) -> LayoutDescription {
        try await anyNode { connection async throws(KVError) in try await connection.clusterLayout() }
    }

    public func stageLayoutChange(_ change: LayoutChangeRequest) async throws(KVError) -> LayoutPlanReport {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.stageLayoutChange(change)
        }
    }

    public func clearLayoutChanges() async throws(KVError) -> LayoutPlanReport {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.clearLayoutChanges()
        }
    }

    public func layoutPlan() async throws(KVError) -> LayoutPlanReport {
        try await anyNode { connection async throws(KVError) in try await connection.layoutPlan() }
    }

    public func commitLayoutPlan(_ id: String) async throws(KVError) -> LayoutPlanReport {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.commitLayoutPlan(id)
        }
    }

    public func transfers() async throws(KVError) -> TransfersReport {
        try await anyNode { connection async throws(KVError) in try await connection.transfers() }
    }

    public func controlTransfers(_ request: TransferControlRequest) async throws(KVError) -> TransfersReport {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.controlTransfers(request)
        }
    }

    public func createAccessToken(_ request: AccessTokenRequest) async throws(KVError) -> CreatedAccessToken {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.createAccessToken(request)
        }
    }

    public func accessTokens() async throws(KVError) -> [AccessTokenRecord] {
        try await anyNode { connection async throws(KVError) in try await connection.accessTokens() }
    }

    public func revokeAccessToken(id: String) async throws(KVError) -> AccessTokenRecord {
        try await perform(candidates(preferred: []), .onlyIfNotSent) { connection async throws(KVError) in
            try await connection.revokeAccessToken(id: id)
        }
    }

    private func anyNode<Result: Sendable>(
        _ body: (HTTPKeyValueService) async throws(KVError) -> Result
    ) async throws(KVError) -> Result {
        try await perform(candidates(preferred: []), .read, body)
    }
}
