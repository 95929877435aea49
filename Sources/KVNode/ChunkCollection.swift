import KVCluster
import KVCore
import KVReplica
import KVStorage

/// What the chunk collector remembers between passes.
struct ChunkCollectionState: Sendable {
    /// A pass is running (passes never overlap).
    var running = false
    /// When each value was first found named by no row, by this node's clock.
    var unnamedSince: [UUIDValue: Int64] = [:]
    /// When each value was last found named by a live version: it is not read again
    /// within a grace, so a store of many large values costs few reads per pass.
    var namedAt: [UUIDValue: Int64] = [:]
    /// Chunk rows deleted so far.
    var collected: Int64 = 0
    /// A compaction of chunk rows is running.
    var compacting = false
    /// Compactions of large values' chunk rows so far.
    var compactions: Int64 = 0
}

/// Collecting the chunks of large values no row names any more: overwritten or deleted
/// values, and uploads that never finished (the coordinator crashed, the client went
/// away, a quorum failed).
///
/// Each node looks only at the partitions it is the first replica of, so one node
/// decides for each value. It lists the chunk keys it holds there (keys only, from the
/// anti-entropy index when there is one), and for each value reads the owning row named
/// by the value's ``UploadRecord`` through the cluster, from every replica of the row. A
/// value no live version names is deleted (its chunks, then its record, each with the
/// context of this replica's copy) once it has been found unnamed for the grace and its
/// upload began more than the grace ago. A value is not read while its upload is younger
/// than the grace, nor within a grace of being found named. Uploads give up after half
/// the grace, so a running upload's chunks are never taken, and a reader of an
/// overwritten value has the grace to finish. The tombstones left behind are reaped like
/// any other; every replica compacts the deleted value's rows at its next pass
/// (``compactChunkRows(all:)``), which frees the space.
extension ClusterNode {

    func startChunkCollection() {
        let start = state.withLockedValue { state -> Bool in
            guard !state.chunkCollection.running && !state.stopped else { return false }
            state.chunkCollection.running = true
            return true
        }
        guard start else { return }
        Task {
            await collectChunks()
            state.withLockedValue { $0.chunkCollection.running = false }
        }
    }

    /// One pass over the partitions this node leads, after compacting what earlier
    /// passes (here or on other nodes) deleted.
    func collectChunks() async {
        await compactChunkRows(all: true)
        let metadata = metadata
        guard metadata.isFormed, let layout = metadata.layout else { return }
        let grace = settings.largeValueGraceMilliseconds
        for index in 0..<layout.assignments.count where layout.assignments[index].first == nodeID {
            guard !isStopped else { return }
            let partition = PartitionID(rawValue: UInt32(index))
            let values: [UUIDValue: [Int64]]
            do {
                values = try await local.blocking { [self] () throws(KVError) in try chunkKeys(in: partition)
                }
            } catch {
                logger.warning(
                    "listing chunks failed", metadata: ["partition": "\(index)", "error": "\(error)"])
                continue
            }
            for (id, indexes) in values.sorted(by: { $0.key < $1.key }) {
                await consider(id, indexes: indexes, grace: grace)
            }
        }
        // Forget values that are gone.
        let now = NodeStorage.wallClockMilliseconds()
        state.withLockedValue { state in
            state.chunkCollection.unnamedSince = state.chunkCollection.unnamedSince.filter {
                now - $0.value < 4 * grace
            }
            state.chunkCollection.namedAt = state.chunkCollection.namedAt.filter { now - $0.value < grace }
        }
    }

    /// Starts ``compactChunkRows(all:)`` for the values with enough chunks written since
    /// their last compaction, unless one runs; called after every drain of writes.
    func compactChunkRowsIfDue() {
        guard store.pendingCompactions.withLockedValue({ $0.hasDue }) else { return }
        Task { await compactChunkRows(all: false) }
    }

    /// Compacts the spans of large values whose chunk rows were written or deleted
    /// since their last compaction (``ReplicaStore/pendingCompactions``): every noted
    /// value at a collection pass (`all`), otherwise those with 64 MiB written. The
    /// one-flush-per-chunk table files merge into large ones, and the space of deleted
    /// values returns to the file system. One runs at a time; what is noted meanwhile
    /// waits for the next.
    func compactChunkRows(all: Bool) async {
        let spans = state.withLockedValue { state -> [KeySpan]? in
            guard !state.chunkCollection.compacting && !state.stopped else { return nil }
            state.chunkCollection.compacting = true
            return store.pendingCompactions.withLockedValue {
                $0.take(minimumBytes: all ? 0 : PendingCompactions.triggerBytes)
            }
        }
        guard let spans else { return }
        defer { state.withLockedValue { $0.chunkCollection.compacting = false } }
        for span in spans {
            guard !isStopped else { return }
            do {
                try await local.blocking { [local] () throws(KVError) in
                    try storageWork("compacting chunk rows") {
                        // The anti-entropy index keys its entries by the row's key, and
                        // each flush wrote a small file of those too.
                        try local.engine.compact(span.range, in: .data)
                        try local.engine.compact(span.range, in: .antiEntropy)
                    }
                }
                state.withLockedValue { $0.chunkCollection.compactions += 1 }
            } catch {
                logger.warning("compacting chunk rows failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The chunk indexes this node holds of each value in `partition` (tombstones too).
    private func chunkKeys(in partition: PartitionID) throws(KVError) -> [UUIDValue: [Int64]] {
        let table = LargeValue.chunkTable
        let prefix = StorageLayout.tablePrefix(
            partition: partition, namespace: table.name.namespace, table: table.name.table)
        let keyspace: Keyspace = antiEntropy.isEnabled ? .antiEntropy : .data
        let engine = local.engine
        return try storageWork("listing chunks") {
            var values: [UUIDValue: [Int64]] = [:]
            let cursor = try engine.cursor(over: .prefixed(by: prefix), in: keyspace, direction: .forward)
            while let entry = try cursor.next() {
                guard
                    let parts = try? KeyEncoding.decode(
                        Array(entry.key[prefix.count...]), schema: table.schema),
                    case .uuid(let id) = parts[0], case .int64(let chunk) = parts[1]
                else { continue }
                values[id, default: []].append(chunk)
            }
            return values
        }
    }

    /// Decides about one value and deletes its chunks when no row names it.
    private func consider(_ id: UUIDValue, indexes: [Int64], grace: Int64) async {
        let recordKey = RowKey(
            table: LargeValue.chunkTable.name,
            parts: [.uuid(id), .int64(Int64(LargeValue.uploadRecordIndex))])
        let local = try? await localObject(recordKey)
        if let local, local.object.isDeleted, !local.object.entries.isEmpty {
            // Collected already: its tombstones wait for the reaper.
            return
        }
        let record = local?.object.liveValues.lazy.compactMap { UploadRecord(encoded: $0.value?.bytes ?? []) }
            .first
        guard let named = await isNamed(id, by: record) else { return }
        let now = NodeStorage.wallClockMilliseconds()
        let since = state.withLockedValue { state -> Int64? in
            if named {
                state.chunkCollection.unnamedSince[id] = nil
                return nil
            }
            if let since = state.chunkCollection.unnamedSince[id] { return since }
            state.chunkCollection.unnamedSince[id] = now
            return now
        }
        guard let since, now - since >= grace else { return }
        // The record may come from a faulty peer with any start: one so far back that the
        // age overflows is long ago.
        let (age, overflow) = now.subtractingReportingOverflow(record?.startedMilliseconds ?? since)
        guard overflow || age >= grace else { return }
        let replicas = record?.replicas ?? LargeValue.chunkTable.defaults.n
        var deleted: Int64 = 0
        // The record goes last: while it is there, the next pass finds the value again.
        for chunk in indexes.sorted(by: >) where chunk != Int64(LargeValue.uploadRecordIndex) {
            if await deleteChunkRow(
                RowKey(table: recordKey.table, parts: [.uuid(id), .int64(chunk)]), replicas)
            {
                deleted += 1
            } else {
                return
            }
        }
        if await deleteChunkRow(recordKey, replicas) { deleted += 1 }
        logger.debug("collected a large value", metadata: ["value": "\(id)", "rows": "\(deleted)"])
        state.withLockedValue { state in
            state.chunkCollection.collected += deleted
            state.chunkCollection.unnamedSince[id] = nil
        }
    }

    /// Whether a live version of the row in `record` names value `id`; `nil` when that
    /// cannot be told now (the read failed). A value without a record is named by no row.
    private func isNamed(_ id: UUIDValue, by record: UploadRecord?) async -> Bool? {
        guard let record else { return false }
        let descriptor: TableDescriptor
        do {
            descriptor = try local.descriptor(record.table)
        } catch {
            // The table was dropped: nothing names the value.
            return false
        }
        guard let parts = try? KeyEncoding.decode(record.encodedKey, schema: descriptor.schema) else {
            return false
        }
        do {
            // Every replica of the row must answer: a replica that missed the version
            // naming the value must not make it look unnamed (a failed read skips it).
            let width = try Self.width(of: formedLayout())
            let all = min(descriptor.defaults.n, width)
            let result = try await get(
                RowKey(table: record.table, parts: parts),
                options: ReadOptions(quorum: QuorumOverrides(r: all)))
            return result.siblings.contains { $0.value?.largeValue?.id == id }
        } catch {
            return nil
        }
    }

    /// This replica's copy of a chunk-table row, with its sealed context.
    private func localObject(_ key: RowKey) async throws(KVError) -> (object: StoredObject, context: String) {
        let row = try local.resolve(key)
        let object = try await local.blocking { [self] () throws(KVError) in try store.object(at: row.dataKey)
        }
        return (object, local.version(of: object, identity: row.identity).context)
    }

    /// Deletes one chunk-table row with the context of this replica's copy; whether it
    /// is gone (or was never here).
    private func deleteChunkRow(_ key: RowKey, _ replicas: Int) async -> Bool {
        do {
            let copy = try await localObject(key)
            if copy.object.isDeleted { return true }
            _ = try await writeRow(
                key, .tombstone(at: NodeStorage.wallClockMilliseconds()),
                WriteOptions(context: copy.context, quorum: QuorumOverrides(n: replicas)), increment: nil)
            return true
        } catch {
            logger.debug("collecting a chunk failed", metadata: ["key": "\(key)", "error": "\(error)"])
            return false
        }
    }
}
