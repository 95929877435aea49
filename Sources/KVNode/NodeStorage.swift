import Glibc
import KVCluster
import KVCore
import KVReplica
import KVStorage
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A node's own storage: its engine, the thread pool that runs the engine's blocking
/// calls, the node's identity and its table catalog.
///
/// It is not a service: every request, on a cluster of one node as on a larger one, goes
/// through ``ClusterNode``, whose storage commands ``ReplicaStore`` runs over this
/// engine. What stays here is what those paths share: resolving a row key against the
/// catalog, sealing answers, reading pages of a local scan, and changing the catalog.
///
/// Engine calls block (a synced write waits for fsync), so they run on the thread pool.
/// The write drain holds every one of the 64 row locks while it applies a batch, and so
/// does a catalog change, which orders the two. Reads and scans take no lock: a point
/// read is atomic in the engine and a scan reads one snapshot.
public final class NodeStorage: Sendable {
    /// Who this node is.
    public let identity: NodeIdentity
    /// Its settings.
    public let settings: NodeSettings

    let engine: any StorageEngine
    let engineName: String
    /// Seals contexts with the node's own secret, or with the cluster's once the node
    /// is part of one (every node of a cluster must accept every other's contexts).
    let sealerBox: Locked<ContextSealer>
    var sealer: ContextSealer { sealerBox.withLockedValue { $0 } }
    let threadPool: NIOThreadPool
    let logger: Logger
    let catalog: Locked<[TableName: TableDescriptor]>
    let rowLocks: [NIOLock]

    /// Opens a node's storage on `engine`: loads (or on first start creates) its identity
    /// and its table catalog, and starts the storage thread pool. It owns the engine from
    /// now on and closes it in ``shutdown()``.
    public init(engine: any StorageEngine, engineName: String, settings: NodeSettings, logger: Logger)
        throws(KVError)
    {
        let problems = settings.problems()
        guard problems.isEmpty else { throw KVError(.invalidRequest, problems.joined(separator: "; ")) }
        var random = SystemRandomNumberGenerator()
        identity = try NodeIdentity.loadOrCreate(
            from: engine, partitionCount: settings.partitionCount, nodeName: settings.nodeName,
            clockMilliseconds: Self.wallClockMilliseconds, random: &random)
        self.engine = engine
        self.engineName = engineName
        self.settings = settings
        self.logger = logger
        sealerBox = Locked(ContextSealer(secret: identity.contextSecret))
        rowLocks = (0..<64).map { _ in NIOLock() }
        catalog = Locked(try Self.loadCatalog(from: engine))
        threadPool = NIOThreadPool(numberOfThreads: settings.storageThreads)
        threadPool.start()
        logger.info(
            "node opened",
            metadata: [
                "node": "\(identity.nodeID)", "incarnation": "\(identity.incarnation)",
                "engine": "\(engineName)",
                "partitions": "\(identity.partitionCount)",
                "tables": "\(catalog.withLockedValue { $0.count })",
            ])
    }

    /// Waits for running storage work, stops the thread pool, then flushes and closes the
    /// engine. Operations after this fail with `server.unavailable`.
    public func shutdown() async {
        try? await threadPool.shutdownGracefully()
        do {
            try engine.close()
            logger.info("storage closed")
        } catch {
            logger.error("closing storage failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Running storage work

    /// Runs blocking storage work on the thread pool.
    func blocking<Result: Sendable>(_ body: @escaping @Sendable () throws(KVError) -> Result)
        async throws(KVError)
        -> Result
    {
        do {
            return try await threadPool.runIfActive { () throws(KVError) -> Result in try body() }
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.unavailable, "the node is shutting down", underlying: error)
        }
    }

    /// Runs `body` holding every row lock: no write runs concurrently.
    func withAllRowLocks<Result>(_ body: () throws(KVError) -> Result) throws(KVError) -> Result {
        for lock in rowLocks { lock.lock() }
        defer { for lock in rowLocks.reversed() { lock.unlock() } }
        return try body()
    }

    func write(_ batch: WriteBatch) throws(KVError) {
        do { try engine.write(batch) } catch { throw error.asKVError }
    }

    /// The wall clock, in milliseconds since 1970: sibling timestamps.
    static func wallClockMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    // MARK: - Rows

    /// A row key checked against its table and mapped to storage.
    struct ResolvedRow: Sendable {
        var descriptor: TableDescriptor
        var partition: PartitionID
        var dataKey: [UInt8]
        /// What contexts of this row are bound to.
        var identity: [UInt8] {
            RowChecks.identity(generation: descriptor.generation, dataKey: dataKey)
        }
    }

    /// What contexts and ETags of a row are bound to (see ``RowChecks/identity(generation:tableAndKey:)``).
    static func rowIdentity(generation: UInt64, tableAndKey: ArraySlice<UInt8>) -> [UInt8] {
        RowChecks.identity(generation: generation, tableAndKey: tableAndKey)
    }

    func descriptor(_ name: TableName) throws(KVError) -> TableDescriptor {
        guard let descriptor = catalog.withLockedValue({ $0[name] }) else {
            throw KVError(.tableNotFound, "there is no table \(name)")
        }
        return descriptor
    }

    func resolve(_ key: RowKey) throws(KVError) -> ResolvedRow {
        let descriptor = try descriptor(key.table)
        try descriptor.schema.validate(key.parts)
        let encodedKey = KeyEncoding.encode(key.parts)
        guard encodedKey.count <= settings.maximumKeyBytes else {
            throw KVError(
                .keyTooLarge,
                "the key takes \(encodedKey.count) bytes; the limit is \(settings.maximumKeyBytes)")
        }
        let partition = PartitionID.of(
            namespace: key.table.namespace, table: key.table.table,
            encodedPartitionKey: KeyEncoding.encode(
                Array(key.parts.prefix(descriptor.schema.partitionKeyLength))),
            partitionCount: identity.partitionCount)
        let dataKey = StorageLayout.dataKey(
            partition: partition, namespace: key.table.namespace, table: key.table.table, key: encodedKey)
        return ResolvedRow(descriptor: descriptor, partition: partition, dataKey: dataKey)
    }

    /// The sealed context and entity tag of a row's state.
    func version(of object: StoredObject, identity row: [UInt8]) -> (context: String, etag: String) {
        RowChecks.version(of: object, identity: row, sealer: sealer)
    }

    func readResult(_ object: StoredObject, identity row: [UInt8]) -> ReadResult {
        let (context, etag) = version(of: object, identity: row)
        return ReadResult(
            siblings: object.visibleValues(at: Self.wallClockMilliseconds()), context: context, etag: etag)
    }

    func writeResult(_ object: StoredObject, identity row: [UInt8]) -> WriteResult {
        let (context, etag) = version(of: object, identity: row)
        return WriteResult(context: context, etag: etag)
    }

    /// The descriptor of `name`, if the catalog has it; never blocks.
    public func immediateTable(_ name: TableName) -> TableDescriptor? {
        catalog.withLockedValue { $0[name] }
    }

    /// Checks a value's size and content type before anything is stored.
    static func validate(_ value: RowValue, maximumBytes: Int) throws(KVError) {
        guard value.bytes.count <= maximumBytes else {
            throw KVError(
                .valueTooLarge,
                "the value has \(value.bytes.count) bytes; the limit is \(maximumBytes)")
        }
        guard value.contentType.utf8.count <= 256 else {
            throw KVError(.invalidRequest, "the content type is longer than 256 bytes")
        }
        // It is sent back as a header: only visible ASCII, spaces and tabs.
        guard value.contentType.utf8.allSatisfy({ (0x20...0x7E).contains($0) || $0 == 0x09 }) else {
            throw KVError(.invalidRequest, "the content type may contain only printable ASCII")
        }
    }

    // MARK: - Scans

    /// The encoded key range a scan page covers: the request's range, narrowed to what
    /// follows its continuation.
    static func bounds(of request: ScanRequest, schema: KeySchema) throws(KVError) -> EncodedKeyRange {
        var range = try request.range.encoded(for: schema)
        if let token = request.continuation {
            let position = try ScanContinuation.decode(token, reverse: request.reverse)
            if request.reverse {
                if range.upperBound.map({ position.lexicographicallyPrecedes($0) }) ?? true {
                    range.upperBound = position
                }
            } else {
                let next = position + [0]
                if range.lowerBound.lexicographicallyPrecedes(next) { range.lowerBound = next }
            }
        }
        return range
    }

    /// One node's part of a cluster scan: the rows of some partitions in key order, as
    /// stored objects (tombstones included, so the coordinator can merge them). The page
    /// ends once its values reach the answer budget, and before it would exceed
    /// `maximumBytes` (what one peer frame carries); without values when keys-only.
    func partitionScanPage(_ scan: PartitionScan, maximumBytes: Int) throws(KVError) -> PartitionScanPage {
        try storageWork("scan") {
            let snapshot = try engine.snapshot()
            let direction: ScanDirection = scan.reverse ? .reverse : .forward
            var merger = try SortedMerge(reverse: scan.reverse) {
                (index: Int) throws -> (any StorageCursor, Int)? in
                guard index < scan.partitions.count else { return nil }
                let prefix = StorageLayout.partitionPrefix(scan.partitions[index]) + scan.tablePrefix
                let lower = prefix + scan.lowerBound
                let upper = scan.upperBound.map { prefix + $0 } ?? KeyEncoding.prefixSuccessor(prefix)
                let bounds = EncodedKeyRange(lowerBound: lower, upperBound: upper)
                return (try snapshot.cursor(over: bounds, in: .data, direction: direction), prefix.count)
            }
            var rows: [(key: [UInt8], object: StoredObject)] = []
            var pageBytes = 0
            while rows.count < scan.limit, pageBytes < settings.maximumResponseBytes,
                let (rowKey, value) = try merger.next()
            {
                var object = try StoredObjectCodec.decode(value)
                if scan.keysOnly { object = object.withoutValueBytes }
                let size = scan.keysOnly ? rowKey.count + 64 : value.count
                // The row that would overflow the frame is left for the next page: the
                // page is truncated right before it.
                if !rows.isEmpty && pageBytes + size > maximumBytes {
                    return PartitionScanPage(rows: rows, truncated: true)
                }
                pageBytes += size
                rows.append((rowKey, object))
            }
            return PartitionScanPage(rows: rows, truncated: try merger.hasMore())
        }
    }

    /// The partitions a range can touch: one when both bounds pin the whole partition
    /// key to the same value, otherwise all of them.
    func partitions(for range: KeyRange, schema: KeySchema, table: TableName) -> [PartitionID] {
        let length = schema.partitionKeyLength
        if let start = range.start, let end = range.end, start.count >= length, end.count >= length,
            Array(start.prefix(length)) == Array(end.prefix(length))
        {
            return [
                PartitionID.of(
                    namespace: table.namespace, table: table.table,
                    encodedPartitionKey: KeyEncoding.encode(Array(start.prefix(length))),
                    partitionCount: identity.partitionCount)
            ]
        }
        return (0..<identity.partitionCount).map { PartitionID(rawValue: UInt32($0)) }
    }

    /// Reads one record of the metadata keyspace. Blocks.
    func metadataRecord(_ key: [UInt8]) throws(KVError) -> [UInt8]? {
        do { return try engine.get(key, in: .metadata) } catch { throw error.asKVError }
    }

    /// What ``ClusterNode/nodeInfo()`` reports of the storage side.
    func nodeInfo() -> NodeInfo {
        NodeInfo(
            nodeID: identity.nodeID, incarnation: identity.incarnation, engine: engineName,
            partitionCount: identity.partitionCount, version: ClusterNode.version)
    }
}
