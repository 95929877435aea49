import KVCore

/// Picks one value for a row that concurrent writes left with several (siblings), or
/// `nil` to treat the row as absent. ``ClusterClient/newestValue`` is the default.
public typealias SiblingResolver = @Sendable ([Sibling]) -> RowValue?

/// kvlayer's table API in Swift terms: namespaces of tables with typed tuple keys;
/// `put`, `get` and `delete` of many rows; ordered, inclusive, prefix-aware scans that
/// page by themselves.
///
/// Keys are the table's key parts (`[.string("a"), .int64(1)]`). Many-row calls split
/// their rows by the replica that should coordinate each and send one batch per node,
/// side by side.
extension ClusterClient {
    /// The value of the sibling written last (by its timestamp), which is what a
    /// last-writer-wins table keeps; it drops the others' values, so use a resolver of
    /// your own where concurrent writes must be merged.
    public static let newestValue: SiblingResolver = { siblings in
        siblings.max { $0.timestampMilliseconds < $1.timestampMilliseconds }?.value
    }

    /// Creates each table of `namespace` that does not exist yet, with its key schema;
    /// a table that exists with the same schema is kept as it is (kvlayer's
    /// `setup_namespace`). A table that exists with another schema is `table.exists`.
    @discardableResult
    public func setUpNamespace(
        _ namespace: String, tables: [String: KeySchema],
        defaults: ReplicationDefaults = ReplicationDefaults()
    ) async throws(KVError) -> [TableDescriptor] {
        var created: [TableDescriptor] = []
        for (name, schema) in tables.sorted(by: { $0.key < $1.key }) {
            let table = try TableName(namespace: namespace, table: name)
            created.append(
                try await createTable(TableDescriptor(name: table, schema: schema, defaults: defaults)))
        }
        return created
    }

    /// Deletes a namespace and every table in it.
    public func deleteNamespace(_ namespace: String) async throws(KVError) {
        try await dropNamespace(namespace)
    }

    /// Writes `rows` (blind writes unless `options` carries a context or condition);
    /// throws the first row's failure, if any, after every row was tried.
    public func put(
        _ table: TableName, _ rows: [(key: [KeyPart], value: RowValue)],
        options: WriteOptions = WriteOptions()
    ) async throws(KVError) {
        let results = try await routedBatch(
            rows.map { .put(RowKey(table: table, parts: $0.key), $0.value, options) })
        if let failure = results.lazy.compactMap(Self.failure).first { throw failure }
    }

    /// Reads `keys` and answers in request order, `nil` for a row that is absent. Each
    /// result carries the row's siblings and the context to write it back with.
    public func get(_ table: TableName, keys: [[KeyPart]], options: ReadOptions = ReadOptions())
        async throws(KVError) -> [ReadResult?]
    {
        // Batches read with the table's quorum; other options take one request per key.
        let results =
            options == ReadOptions()
            ? try await routedBatch(keys.map { .get(RowKey(table: table, parts: $0)) })
            : try await separately(keys.map { RowKey(table: table, parts: $0) }, options)
        var reads: [ReadResult?] = []
        for result in results {
            switch result {
            case .read(let read): reads.append(read.isAbsent ? nil : read)
            case .failed(let error): throw error
            case .written: throw KVError(.internalError, "a read in a batch answered as a write")
            }
        }
        return reads
    }

    /// The values of `keys` in request order, `nil` for an absent row, siblings resolved
    /// by `resolve`.
    public func values(
        _ table: TableName, keys: [[KeyPart]], options: ReadOptions = ReadOptions(),
        resolve: SiblingResolver = ClusterClient.newestValue
    ) async throws(KVError) -> [RowValue?] {
        try await get(table, keys: keys, options: options).map { read in
            guard let read else { return nil }
            return read.siblings.count == 1 ? read.siblings[0].value : resolve(read.siblings)
        }
    }

    /// Deletes `keys` (deleting an absent row does nothing).
    public func delete(_ table: TableName, keys: [[KeyPart]], options: WriteOptions = WriteOptions())
        async throws(KVError)
    {
        let results = try await routedBatch(keys.map { .delete(RowKey(table: table, parts: $0), options) })
        if let failure = results.lazy.compactMap(Self.failure).first { throw failure }
    }

    /// The rows of `table` in `range` (both ends inclusive; a bound shorter than the key
    /// covers every key it prefixes), in key order (or reverse), fetched page by page as
    /// the sequence is read.
    public func scan(
        _ table: TableName, range: KeyRange = KeyRange(), reverse: Bool = false, pageSize: Int = 1000
    ) -> ScanSequence {
        ScanSequence(
            client: self,
            request: ScanRequest(
                table: table, range: range, limit: max(1, min(pageSize, ScanRequest.maximumLimit)),
                reverse: reverse))
    }

    /// The keys of `table` in `range`, as ``scan(_:range:reverse:pageSize:)`` walks them,
    /// without their values.
    public func scanKeys(
        _ table: TableName, range: KeyRange = KeyRange(), reverse: Bool = false, pageSize: Int = 1000
    ) -> KeySequence {
        var request = ScanRequest(
            table: table, range: range, limit: max(1, min(pageSize, ScanRequest.maximumLimit)),
            reverse: reverse)
        request.keysOnly = true
        return KeySequence(rows: ScanSequence(client: self, request: request))
    }

    // MARK: - Batches by replica

    /// Runs `operations` as batches of at most 1,000, one per node that should
    /// coordinate them, side by side; answers in the order of `operations`.
    func routedBatch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] {
        // Writes carry request ids, so a batch whose answer was lost goes again without
        // applying them twice.
        let operations = operations.map { operation -> BatchOperation in
            switch operation {
            case .get: return operation
            case .put(let key, let value, let options): return .put(key, value, Self.identified(options))
            case .delete(let key, let options): return .delete(key, Self.identified(options))
            }
        }
        var groups: [String: (urls: [String], indices: [Int])] = [:]
        for (index, operation) in operations.enumerated() {
            let urls: [String]
            switch operation {
            case .get(let key): urls = try await candidates(for: key, write: false)
            case .put(let key, _, _), .delete(let key, _): urls = try await candidates(for: key, write: true)
            }
            let first = urls.first ?? ""
            if groups[first] == nil { groups[first] = (urls, []) }
            groups[first]!.indices.append(index)
        }
        var pieces: [(urls: [String], indices: [Int])] = []
        for (_, group) in groups.sorted(by: { $0.key < $1.key }) {
            for start in stride(from: 0, to: group.indices.count, by: 1000) {
                pieces.append(
                    (group.urls, Array(group.indices[start..<min(start + 1000, group.indices.count)])))
            }
        }
        typealias Answer = ([Int], Result<[BatchItemResult], KVError>)
        let answered: [Answer] = await withTaskGroup(of: Answer.self) { group in
            for piece in pieces {
                let batch = piece.indices.map { operations[$0] }
                group.addTask {
                    do throws(KVError) {
                        let items = try await self.perform(piece.urls, .write) {
                            connection async throws(KVError) in
                            try await connection.batch(batch)
                        }
                        return (piece.indices, Result.success(items))
                    } catch {
                        return (piece.indices, Result.failure(error))
                    }
                }
            }
            var all: [Answer] = []
            for await answer in group { all.append(answer) }
            return all
        }
        var results = [BatchItemResult?](repeating: nil, count: operations.count)
        for (indices, outcome) in answered {
            let items = try outcome.get()
            for (index, item) in zip(indices, items) { results[index] = item }
        }
        return results.map {
            $0 ?? .failed(KVError(.internalError, "a batch answered fewer items than sent"))
        }
    }

    /// Reads `keys` one request each, at most 16 at once, in the order of `keys`.
    private func separately(_ keys: [RowKey], _ options: ReadOptions) async throws(KVError)
        -> [BatchItemResult]
    {
        let answered: [(Int, BatchItemResult)] = await withTaskGroup(of: (Int, BatchItemResult).self) {
            group in
            var all: [(Int, BatchItemResult)] = []
            for (index, key) in keys.enumerated() {
                if index >= 16, let answer = await group.next() { all.append(answer) }
                group.addTask {
                    do throws(KVError) {
                        return (index, .read(try await self.get(key, options: options)))
                    } catch {
                        return (index, .failed(error))
                    }
                }
            }
            for await answer in group { all.append(answer) }
            return all
        }
        return answered.sorted { $0.0 < $1.0 }.map(\.1)
    }

    private static func failure(_ result: BatchItemResult) -> KVError? {
        if case .failed(let error) = result { return error }
        return nil
    }
}

/// The rows of a scan, fetched a page at a time as they are read.
public struct ScanSequence: AsyncSequence, Sendable {
    public typealias Element = ScanRow
    public typealias Failure = KVError

    let client: ClusterClient
    let request: ScanRequest

    public func makeAsyncIterator() -> Iterator { Iterator(client: client, request: request) }

    /// Reads the next page when the current one is used up.
    public struct Iterator: AsyncIteratorProtocol {
        public typealias Element = ScanRow
        public typealias Failure = KVError

        let client: ClusterClient
        var request: ScanRequest
        var page: [ScanRow] = []
        var position = 0
        var finished = false

        init(client: ClusterClient, request: ScanRequest) {
            self.client = client
            self.request = request
        }

        public mutating func next() async throws(KVError) -> ScanRow? {
            while position == page.count {
                guard !finished else { return nil }
                let answer = try await client.scan(request)
                page = answer.rows
                position = 0
                if let continuation = answer.continuation {
                    request.continuation = continuation
                } else {
                    finished = true
                }
            }
            position += 1
            return page[position - 1]
        }
    }
}

/// The keys of a scan, fetched a page at a time as they are read.
public struct KeySequence: AsyncSequence, Sendable {
    public typealias Element = [KeyPart]
    public typealias Failure = KVError

    let rows: ScanSequence

    public func makeAsyncIterator() -> Iterator { Iterator(rows: rows.makeAsyncIterator()) }

    /// Takes each row's key.
    public struct Iterator: AsyncIteratorProtocol {
        public typealias Element = [KeyPart]
        public typealias Failure = KVError

        var rows: ScanSequence.Iterator

        public mutating func next() async throws(KVError) -> [KeyPart]? {
            try await rows.next()?.key
        }
    }
}
