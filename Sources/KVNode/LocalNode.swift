import Glibc
import KVCluster
import KVCore
import KVReplica
import KVStorage
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One node serving the whole key space from its own storage engine: the single-node
/// store, and the local replica that a cluster coordinator will drive.
///
/// Every operation validates its input against the table catalog, then runs its storage
/// work on a thread pool, because engine calls block (a synced write waits for fsync).
/// A write is a read-modify-write of the row's causal state (``StoredObject``), so it
/// holds one of 64 striped row locks for the duration; catalog changes hold all of
/// them, which orders them against every in-flight write. Reads and scans take no lock:
/// a point read is atomic in the engine and a scan reads one snapshot.
public final class LocalNode: KeyValueService {
    /// The software version reported by ``nodeInfo()``.
    public static let version = "0.1.0"

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

    /// Opens a node on `engine`: loads (or on first start creates) its identity and its
    /// table catalog, and starts the storage thread pool. The node owns the engine from
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

    private static func loadCatalog(from engine: any StorageEngine) throws(KVError) -> [TableName:
        TableDescriptor]
    {
        try storageWork("loading the table catalog") {
            var tables: [TableName: TableDescriptor] = [:]
            for entry in try engine.entries(in: .prefixed(by: CatalogRecord.prefix), of: .metadata) {
                let descriptor = try CatalogRecord.decode(entry.value)
                tables[descriptor.name] = descriptor
            }
            return tables
        }
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

    /// Runs `body` holding the row lock of `dataKey`.
    func withRowLock<Result>(_ dataKey: [UInt8], _ body: () throws(KVError) -> Result) throws(KVError)
        -> Result
    {
        let lock = rowLocks[Int(StableHash.hash(dataKey) % UInt64(rowLocks.count))]
        lock.lock()
        defer { lock.unlock() }
        return try body()
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

    func load(_ dataKey: [UInt8]) throws(KVError) -> StoredObject {
        let stored: [UInt8]?
        do { stored = try engine.get(dataKey, in: .data) } catch { throw error.asKVError }
        guard let stored else { return StoredObject() }
        return try StoredObjectCodec.decode(stored)
    }

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

    /// Checks, under the row lock, that the table is still the one the request was
    /// resolved against: it may have been cleared or recreated while the write waited.
    func checkUnchanged(_ row: ResolvedRow) throws(KVError) {
        guard try descriptor(row.descriptor.name) == row.descriptor else {
            throw KVError(
                .tableChanged,
                "table \(row.descriptor.name) was cleared or recreated meanwhile; read again and retry")
        }
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
        return ReadResult(siblings: object.liveValues, context: context, etag: etag)
    }

    func writeResult(_ object: StoredObject, identity row: [UInt8]) -> WriteResult {
        let (context, etag) = version(of: object, identity: row)
        return WriteResult(context: context, etag: etag)
    }

    public func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult {
        let row = try resolve(key)
        let object = try await blocking { [self] () throws(KVError) in try load(row.dataKey) }
        return readResult(object, identity: row.identity)
    }

    public func immediateTable(_ name: TableName) -> TableDescriptor? {
        catalog.withLockedValue { $0[name] }
    }

    /// Answers from the engine's memory (memtables, block cache) when it can.
    public func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult? {
        let row = try resolve(key)
        let cached: CachedRead
        do { cached = try engine.getIfCached(row.dataKey, in: .data) } catch { throw error.asKVError }
        guard case .found(let stored) = cached else { return nil }
        let object =
            try stored.map { (bytes) throws(KVError) in try StoredObjectCodec.decode(bytes) }
            ?? StoredObject()
        return readResult(object, identity: row.identity)
    }

    public func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError)
        -> WriteResult
    {
        try Self.validate(value, maximumBytes: settings.maximumValueBytes)
        try options.validateRequestID()
        return try await write(
            key,
            Sibling(
                value: value, timestampMilliseconds: Self.wallClockMilliseconds(),
                requestID: options.requestID),
            options)
    }

    public func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult {
        try options.validateRequestID()
        return try await write(
            key, .tombstone(at: Self.wallClockMilliseconds(), requestID: options.requestID), options)
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

    /// Applies one write (a value or a tombstone) as a read-modify-write under the row
    /// lock, by the same rule every coordinator uses (``ReplicaRules/coordinate(_:_:actor:)``).
    func write(_ key: RowKey, _ sibling: Sibling, _ options: WriteOptions) async throws(KVError)
        -> WriteResult
    {
        let row = try resolve(key)
        let context = try options.context.map { (text) throws(KVError) in
            try sealer.open(text, row: row.identity)
        }
        return try await blocking { [self] () throws(KVError) -> WriteResult in
            try withRowLock(row.dataKey) { () throws(KVError) -> WriteResult in
                try checkUnchanged(row)
                let stored = try load(row.dataKey)
                try check(options.condition, against: stored, row: row)
                guard
                    let object = ReplicaRules.coordinate(
                        stored, ProposedWrite(sibling: sibling, context: context), actor: identity.actor)
                else {
                    // Nothing live to delete: deleting an absent row is a no-op.
                    return writeResult(stored, identity: row.identity)
                }
                try checkRowLimits(object)
                var batch = WriteBatch()
                batch.put(row.dataKey, StoredObjectCodec.encode(object))
                try write(batch)
                return writeResult(object, identity: row.identity)
            }
        }
    }

    /// Refuses a row state beyond the row's limits.
    func checkRowLimits(_ object: StoredObject) throws(KVError) {
        try RowChecks.checkLimits(
            object,
            RowLimits(maximumRowBytes: settings.maximumRowBytes, maximumSiblings: settings.maximumSiblings))
    }

    public func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError)
        -> Int64
    {
        let row = try resolve(key)
        let now = Self.wallClockMilliseconds()
        return try await blocking { [self] () throws(KVError) -> Int64 in
            try withRowLock(row.dataKey) { () throws(KVError) -> Int64 in
                try checkUnchanged(row)
                var object = try load(row.dataKey)
                var state = try CounterState.merged(object.liveValues) ?? CounterState()
                state.add(delta, by: identity.actor)
                // Written over everything this node holds: the merged state includes every
                // sibling, so nothing is lost by superseding them.
                let value = RowValue(bytes: state.encoded(), contentType: CounterState.contentType)
                object.recordWrite(
                    Sibling(value: value, timestampMilliseconds: now), context: object.context,
                    actor: identity.actor)
                var batch = WriteBatch()
                batch.put(row.dataKey, StoredObjectCodec.encode(object))
                try write(batch)
                return state.value
            }
        }
    }

    public func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? {
        try CounterState.merged(try await get(key, options: options).siblings)?.value
    }

    /// Checks a write's precondition against the row's current state. On one node the
    /// check and the write happen under the same row lock, so they are atomic.
    func check(_ condition: WriteCondition, against object: StoredObject, row: ResolvedRow) throws(KVError) {
        try RowChecks.check(condition, against: object, identity: row.identity, sealer: sealer)
    }

    // MARK: - Scans

    public func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage {
        let descriptor = try descriptor(request.table)
        guard (1...ScanRequest.maximumLimit).contains(request.limit) else {
            throw KVError(
                .invalidRequest,
                "the scan limit must be 1 to \(ScanRequest.maximumLimit), not \(request.limit)")
        }
        let range = try Self.bounds(of: request, schema: descriptor.schema)
        let partitions = partitions(for: request.range, schema: descriptor.schema, table: request.table)
        let keyRange = range
        return try await blocking { [self] () throws(KVError) -> ScanPage in
            try storageWork("scan") {
                try scanPage(
                    request, range: keyRange, partitions: partitions, schema: descriptor.schema,
                    generation: descriptor.generation)
            }
        }
    }

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

    private func scanPage(
        _ request: ScanRequest, range: EncodedKeyRange, partitions: [PartitionID], schema: KeySchema,
        generation: UInt64
    ) throws -> ScanPage {
        let snapshot = try engine.snapshot()
        let direction: ScanDirection = request.reverse ? .reverse : .forward
        var merger = try SortedMerge(reverse: request.reverse) {
            (index: Int) throws -> (any StorageCursor, Int)? in
            guard index < partitions.count else { return nil }
            let prefix = StorageLayout.tablePrefix(
                partition: partitions[index], namespace: request.table.namespace, table: request.table.table)
            let lower = prefix + range.lowerBound
            let upper = range.upperBound.map { prefix + $0 } ?? KeyEncoding.prefixSuccessor(prefix)
            let bounds = EncodedKeyRange(lowerBound: lower, upperBound: upper)
            return (try snapshot.cursor(over: bounds, in: .data, direction: direction), prefix.count)
        }
        var rows: [ScanRow] = []
        var lastKey: [UInt8]? = nil
        var pageBytes = 0
        while rows.count < request.limit, pageBytes < settings.maximumResponseBytes,
            let (rowKey, value) = try merger.next()
        {
            let object = try StoredObjectCodec.decode(value)
            lastKey = rowKey
            if object.isDeleted { continue }
            let identityBytes = Self.rowIdentity(
                generation: generation,
                tableAndKey: (KeyEncoding.encode([
                    .string(request.table.namespace), .string(request.table.table),
                ]) + rowKey)[...])
            if !request.keysOnly {
                pageBytes += object.liveValues.reduce(0) { $0 + ($1.value?.bytes.count ?? 0) }
            }
            rows.append(
                ScanRow(
                    key: try KeyEncoding.decode(rowKey, schema: schema),
                    siblings: request.keysOnly ? [] : object.liveValues,
                    context: sealer.seal(object.context, row: identityBytes)))
        }
        let more = try merger.hasMore()
        return ScanPage(
            rows: rows,
            continuation: more ? lastKey.map { ScanContinuation.encode($0, reverse: request.reverse) } : nil)
    }

    // MARK: - Batches

    public func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] {
        guard operations.count <= settings.maximumBatchOperations else {
            throw KVError(
                .invalidRequest,
                "the batch has \(operations.count) operations; the limit is \(settings.maximumBatchOperations)"
            )
        }
        var results: [BatchItemResult] = []
        results.reserveCapacity(operations.count)
        var answerBytes = 0
        for operation in operations {
            do throws(KVError) {
                switch operation {
                case .get(let key):
                    guard answerBytes < settings.maximumResponseBytes else {
                        throw KVError(
                            .responseTooLarge,
                            "the batch's answer reached \(settings.maximumResponseBytes) bytes; send the rest in another batch"
                        )
                    }
                    let read = try await get(key)
                    answerBytes += read.siblings.reduce(0) { $0 + ($1.value?.bytes.count ?? 0) }
                    results.append(.read(read))
                case .put(let key, let value, let options):
                    results.append(.written(try await put(key, value: value, options: options)))
                case .delete(let key, let options):
                    results.append(.written(try await delete(key, options: options)))
                }
            } catch {
                results.append(.failed(error))
            }
        }
        return results
    }

    // MARK: - Tables

    public func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor {
        try descriptor.defaults.validate()
        return try await blocking { [self] () throws(KVError) -> TableDescriptor in
            try withAllRowLocks { () throws(KVError) -> TableDescriptor in
                if let existing = catalog.withLockedValue({ $0[descriptor.name] }) {
                    guard existing.schema == descriptor.schema else {
                        throw KVError(
                            .tableExists, "table \(descriptor.name) exists with key schema \(existing.schema)"
                        )
                    }
                    return existing
                }
                var created = descriptor
                created.generation = newGeneration(after: 0)
                var batch = WriteBatch()
                batch.put(CatalogRecord.key(created.name), CatalogRecord.encode(created), in: .metadata)
                try write(batch)
                catalog.withLockedValue { $0[created.name] = created }
                logger.info(
                    "table created",
                    metadata: ["table": "\(descriptor.name)", "schema": "\(descriptor.schema)"])
                return created
            }
        }
    }

    /// A fresh table generation, different from `previous`.
    func newGeneration(after previous: UInt64) -> UInt64 {
        var random = SystemRandomNumberGenerator()
        var generation = random.next() as UInt64
        while generation == previous || generation == 0 { generation = random.next() }
        return generation
    }

    public func table(_ name: TableName) async throws(KVError) -> TableDescriptor {
        try descriptor(name)
    }

    public func tables(in namespace: String) async throws(KVError) -> [TableDescriptor] {
        catalog.withLockedValue { $0.values.filter { $0.name.namespace == namespace } }.sorted {
            $0.name < $1.name
        }
    }

    public func namespaces() async throws(KVError) -> [String] {
        Array(Set(catalog.withLockedValue { $0.keys.map(\.namespace) })).sorted()
    }

    /// Range deletes of every row of `name`, one per partition.
    func deleteRows(of name: TableName, into batch: inout WriteBatch) {
        for partition in 0..<identity.partitionCount {
            let prefix = StorageLayout.tablePrefix(
                partition: PartitionID(rawValue: UInt32(partition)), namespace: name.namespace,
                table: name.table)
            batch.deleteRange(.prefixed(by: prefix))
            batch.deleteRange(.prefixed(by: prefix), in: .antiEntropy)
        }
    }

    /// Makes `tables` the catalog, as a cluster's metadata dictates: rows of tables that
    /// were dropped, or cleared (their generation changed), are deleted; `extra` is
    /// written in the same atomic batch (the cluster metadata it came from). Blocks: run
    /// it on the thread pool. Returns whether rows were deleted.
    @discardableResult
    func adoptCatalog(_ tables: [TableName: TableDescriptor], writing extra: [(key: [UInt8], value: [UInt8])])
        throws(KVError) -> Bool
    {
        try withAllRowLocks { () throws(KVError) -> Bool in
            let current = catalog.withLockedValue { $0 }
            var batch = WriteBatch()
            var deleted = false
            for (name, old) in current where tables[name]?.generation != old.generation {
                deleted = true
                deleteRows(of: name, into: &batch)
                if tables[name] == nil { batch.delete(CatalogRecord.key(name), in: .metadata) }
            }
            for (name, descriptor) in tables where current[name] != descriptor {
                batch.put(CatalogRecord.key(name), CatalogRecord.encode(descriptor), in: .metadata)
            }
            for entry in extra { batch.put(entry.key, entry.value, in: .metadata) }
            if !batch.isEmpty { try write(batch) }
            catalog.withLockedValue { $0 = tables }
            return deleted
        }
    }

    /// Reads one record of the metadata keyspace. Blocks.
    func metadataRecord(_ key: [UInt8]) throws(KVError) -> [UInt8]? {
        do { return try engine.get(key, in: .metadata) } catch { throw error.asKVError }
    }

    public func clearTable(_ name: TableName) async throws(KVError) {
        try await blocking { [self] () throws(KVError) in
            try withAllRowLocks { () throws(KVError) in
                var cleared = try descriptor(name)
                cleared.generation = newGeneration(after: cleared.generation)
                var batch = WriteBatch()
                deleteRows(of: name, into: &batch)
                batch.put(CatalogRecord.key(name), CatalogRecord.encode(cleared), in: .metadata)
                try write(batch)
                catalog.withLockedValue { $0[name] = cleared }
                logger.info("table cleared", metadata: ["table": "\(name)"])
            }
        }
    }

    public func dropTable(_ name: TableName) async throws(KVError) {
        _ = try descriptor(name)
        try await drop { $0 == name }
    }

    public func dropNamespace(_ namespace: String) async throws(KVError) {
        try TableName.validate(namespace, what: "namespace")
        try await drop { $0.namespace == namespace }
    }

    /// Drops every table whose name matches, rows and definitions in one atomic batch.
    /// Dropping a single table that does not exist is `table.not_found`; a namespace
    /// with no tables is simply empty.
    private func drop(_ matches: @escaping @Sendable (TableName) -> Bool) async throws(KVError) {
        try await blocking { [self] () throws(KVError) in
            try withAllRowLocks { () throws(KVError) in
                let names = catalog.withLockedValue { $0.keys.filter(matches) }.sorted()
                var batch = WriteBatch()
                for name in names {
                    deleteRows(of: name, into: &batch)
                    batch.delete(CatalogRecord.key(name), in: .metadata)
                }
                guard !batch.isEmpty else { return }
                try write(batch)
                catalog.withLockedValue { tables in for name in names { tables[name] = nil } }
                logger.info("tables dropped", metadata: ["tables": "\(names.map(\.description))"])
            }
        }
    }

    public func nodeInfo() async throws(KVError) -> NodeInfo {
        NodeInfo(
            nodeID: identity.nodeID, incarnation: identity.incarnation, engine: engineName,
            partitionCount: identity.partitionCount, version: Self.version)
    }
}
