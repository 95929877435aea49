import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOConcurrencyHelpers
import NIOCore

/// What a node knows of the transfers it takes part in: the ones it receives (with
/// progress) and the ones it serves (with their snapshots).
struct RebalanceState: Sendable {
    /// One partition this node receives.
    struct Inbound: Sendable {
        var layoutVersion: UInt64
        var source: NodeID?
        var state = "waiting"
        var rows: UInt64 = 0
        var bytes: UInt64 = 0
        var estimatedRows: UInt64 = 0
        var batches: UInt64 = 0
        /// Recent bytes per second (exponentially smoothed).
        var rate: Double = 0
        var lastBatch: NIODeadline?
        var running = false
    }

    /// One partition this node serves to one new owner.
    struct Outbound: Sendable {
        var layoutVersion: UInt64
        var snapshot: (any StorageSnapshot)?
        var estimatedRows: UInt64 = 0
        /// The last key sent; a pull that starts before it re-sends rows.
        var lastSent: [UInt8]?
        var finished = false
        var rows: UInt64 = 0
        var bytes: UInt64 = 0
        var batches: UInt64 = 0
        var resentBatches: UInt64 = 0
        var lastUsed: NIODeadline
    }

    struct OutboundKey: Hashable, Sendable {
        var destination: NodeID
        var partition: PartitionID
    }

    var inbound: [PartitionID: Inbound] = [:]
    var outbound: [OutboundKey: Outbound] = [:]
    /// Partitions whose release (the previous owner's check) is running.
    var releasing: Set<PartitionID> = []
    var stepRunning = false
    /// When the node's byte budget next allows a batch (the rate limit).
    var throttleUntil = NIODeadline.uptimeNanoseconds(0)
    var sweepCursor = 0
    /// When each partition this node holds rows of was first seen placed elsewhere.
    var foreignSince: [PartitionID: NIODeadline] = [:]
    var counters = Counters()

    /// The transfer counters, by their status names.
    struct Counters: Sendable {
        var transfersStarted: Int64 = 0
        var transfersCompleted: Int64 = 0
        var batchesReceived: Int64 = 0
        var rowsReceived: Int64 = 0
        var bytesReceived: Int64 = 0
        var batchesSent: Int64 = 0
        var rowsSent: Int64 = 0
        var bytesSent: Int64 = 0
        var batchesResent: Int64 = 0
        var pullsFailed: Int64 = 0
        var pullsRefused: Int64 = 0
        var partitionsReleased: Int64 = 0
        var releaseRepairs: Int64 = 0
        var partitionsDropped: Int64 = 0
        var hintsRerouted: Int64 = 0
    }
}

/// Moving data when the layout changes: the destination of each moving partition pulls
/// it from a previous owner as batches read from one engine snapshot, persisting the last
/// key it stored so a restart resumes there; previous owners that leave the partition
/// check that the new owners hold everything they hold before it retires; copies no
/// layout in use places here are dropped. Limits (cluster-wide and per node, a byte rate,
/// pause) come from the cluster metadata, so an operator sets them once for every node.
extension ClusterNode {
    /// How often the rebalancer looks for work.
    static let rebalanceTick = TimeAmount.milliseconds(200)
    /// How long a source keeps an idle transfer's snapshot.
    static let transferSessionIdle = TimeAmount.seconds(60)
    /// How long a pull waits for its batch.
    static let transferTimeout = TimeAmount.seconds(10)
    /// How long a partition must stay placed elsewhere before this node drops its copy:
    /// longer than metadata takes to reach every node, so a node that hears of the end
    /// of a change late still finds the rows it reads.
    static let dropGrace = TimeAmount.seconds(10)
    /// The prefix of the stored transfer cursors (metadata keyspace).
    static let cursorPrefix = Array("handoff/cursor/".utf8)

    func startRebalancing() -> RepeatedTask {
        eventLoop.scheduleRepeatedTask(initialDelay: Self.rebalanceTick, delay: Self.rebalanceTick) {
            [self] _ in
            let start = rebalance.withLockedValue { state in
                defer { state.stepRunning = true }
                return !state.stepRunning
            }
            guard start else { return }
            Task {
                await rebalanceStep()
                rebalance.withLockedValue { $0.stepRunning = false }
            }
        }
    }

    private var isStopping: Bool { state.withLockedValue { $0.stopped } }

    /// One look for work: start the transfers this node may run, release what it may,
    /// drop one copy it no longer holds, forget idle snapshots.
    func rebalanceStep() async {
        let metadata = metadata
        guard metadata.isFormed, let layout = metadata.layout, !isStopping else { return }
        let now = NIODeadline.now()
        rebalance.withLockedValue { state in
            state.outbound = state.outbound.filter { $0.value.lastUsed + Self.transferSessionIdle > now }
            // Progress of another layout version is over.
            state.inbound = state.inbound.filter {
                $0.value.layoutVersion == layout.version || $0.value.running
            }
        }
        if let transition = metadata.transition {
            startTransfers(transition, layout: layout, control: metadata.handoffControl)
            for index in 0..<layout.partitionCount {
                let partition = PartitionID(rawValue: UInt32(index))
                guard transition.releasers(of: partition, in: layout).contains(nodeID),
                    transition.isSettled(partition, in: layout),
                    !transition.released.contains(TransferSlot(partition: partition, node: nodeID))
                else { continue }
                let start = rebalance.withLockedValue { $0.releasing.insert(partition).inserted }
                guard start else { continue }
                Task {
                    await release(partition, layout: layout)
                    _ = rebalance.withLockedValue { $0.releasing.remove(partition) }
                }
            }
        }
        await dropOneForeignPartition(metadata, layout: layout)
    }

    // MARK: - Receiving

    private func startTransfers(_ transition: LayoutTransition, layout: Layout, control: HandoffControl) {
        let pending = transition.pendingTransfers(in: layout)
        for slot in pending where slot.node == nodeID {
            rebalance.withLockedValue { state in
                // A transfer of an older version still running keeps its record until it
                // notices the new version and stops.
                if state.inbound[slot.partition]?.layoutVersion != layout.version,
                    state.inbound[slot.partition]?.running != true
                {
                    state.inbound[slot.partition] = RebalanceState.Inbound(layoutVersion: layout.version)
                }
            }
        }
        guard !control.paused else {
            rebalance.withLockedValue { state in
                for (partition, inbound) in state.inbound
                where !inbound.running && inbound.state != "received" {
                    state.inbound[partition]!.state = "paused"
                }
            }
            return
        }
        // The cluster-wide limit admits the first transfers of one order every node
        // computes alike; a node whose copy of the metadata lags sees more pending, so
        // it admits fewer, never more.
        // Transfers to a node believed down are not counted: they cannot start, and must
        // not hold the cluster's slots.
        let startable = state.withLockedValue { state in
            pending.filter { $0.node == nodeID || state.believesUp($0.node) }
        }
        let admitted = startable.prefix(control.clusterConcurrency).filter { $0.node == nodeID }
        for slot in admitted {
            let start = rebalance.withLockedValue { state in
                let running = state.inbound.values.filter(\.running).count
                guard running < control.nodeConcurrency, state.inbound[slot.partition]?.running == false
                else {
                    return false
                }
                state.inbound[slot.partition]!.running = true
                state.inbound[slot.partition]!.state = "running"
                state.counters.transfersStarted += 1
                return true
            }
            guard start else { continue }
            Task {
                await receive(slot.partition, layoutVersion: layout.version)
                rebalance.withLockedValue { state in
                    guard state.inbound[slot.partition]?.layoutVersion == layout.version else { return }
                    state.inbound[slot.partition]?.running = false
                    if state.inbound[slot.partition]?.state == "running" {
                        state.inbound[slot.partition]?.state = "waiting"
                    }
                }
            }
        }
    }

    static func cursorKey(version: UInt64, partition: PartitionID) -> [UInt8] {
        var writer = BinaryWriter(capacity: cursorPrefix.count + 12)
        writer.writeRaw(cursorPrefix)
        writer.writeFixed(version)
        writer.writeRaw(StorageLayout.partitionPrefix(partition))
        return writer.bytes
    }

    /// Pulls `partition` batch by batch from a previous owner until it is all here, or
    /// the transfer pauses, fails or stops being wanted (a later tick resumes it from the
    /// stored cursor).
    private func receive(_ partition: PartitionID, layoutVersion: UInt64) async {
        let key = Self.cursorKey(version: layoutVersion, partition: partition)
        // The cursor: 1 and nothing when the partition is all here, 0 and the last key
        // stored otherwise.
        let stored = (try? local.metadataRecord(key)) ?? nil
        if stored?.first == 1 {
            await markReceived(partition, layoutVersion: layoutVersion)
            return
        }
        var after: [UInt8]? = stored.flatMap { $0.count > 1 ? Array($0.dropFirst()) : nil }
        var sourceIndex = 0
        var failures = 0
        while !isStopping, failures < 6 {
            let metadata = metadata
            guard let layout = metadata.layout, layout.version == layoutVersion,
                let transition = metadata.transition,
                transition.pendingTransfers(in: layout).contains(
                    TransferSlot(partition: partition, node: nodeID))
            else { return }
            if metadata.handoffControl.paused {
                rebalance.withLockedValue { $0.inbound[partition]?.state = "paused" }
                return
            }
            let candidates = transition.sources(of: partition, in: layout)
            if candidates.isEmpty {
                // Every previous owner was abandoned: nothing is left to copy.
                await markReceived(partition, layoutVersion: layoutVersion)
                return
            }
            let sources = candidates.filter { isReachable($0) }
            guard !sources.isEmpty else {
                rebalance.withLockedValue { $0.inbound[partition]?.source = nil }
                return
            }
            let source = sources[sourceIndex % sources.count]
            rebalance.withLockedValue { $0.inbound[partition]?.source = source }
            await throttle()
            let answer = await request(
                {
                    .transfers(
                        .transferPull(
                            id: $0, partition: partition, layoutVersion: layoutVersion, after: after,
                            maximumBytes: settings.transferBatchBytes))
                }, to: source, timeout: Self.transferTimeout)
            guard case .transfers(.transferRows(_, let page, let estimate))? = answer, page.error == nil
            else {
                failures += 1
                sourceIndex += 1
                rebalance.withLockedValue { $0.counters.pullsFailed += 1 }
                try? await Task.sleep(for: .milliseconds(200 * failures))
                continue
            }
            guard await store(page.rows, of: partition) else {
                failures += 1
                try? await Task.sleep(for: .milliseconds(200 * failures))
                continue
            }
            failures = 0
            let bytes = page.rows.reduce(0) { $0 + $1.key.count + StoredObjectCodec.encode($1.object).count }
            if let last = page.rows.last?.key { after = last }
            let done = !page.truncated
            var batch = WriteBatch()
            batch.put(key, done ? [1] : [0] + (after ?? []), in: .metadata)
            let cursor = batch
            // The rows are durable (the drain syncs); the cursor after them, so a crash
            // in between re-sends one batch at most.
            do {
                try await local.blocking { [local] () throws(KVError) in
                    try storageWork("storing a transfer cursor") {
                        try local.engine.write(cursor, durability: .synced)
                    }
                }
            } catch {
                return
            }
            recordBatch(partition, rows: page.rows.count, bytes: bytes, estimate: estimate)
            reserve(bytes: bytes)
            if done {
                await markReceived(partition, layoutVersion: layoutVersion)
                return
            }
        }
    }

    /// Merges received rows into storage (as anti-entropy repairs do). `false` when a row
    /// could not be stored yet: its table is not in this node's catalog (the metadata
    /// lags) or the engine failed; the batch is pulled again.
    private func store(_ rows: [(key: [UInt8], object: StoredObject)], of partition: PartitionID) async
        -> Bool
    {
        var keys: [ReplicaKey] = []
        for row in rows {
            if let generation = tableGeneration(of: row.key) {
                keys.append(ReplicaKey(partition: partition, bytes: row.key, generation: generation))
            } else if tableIsDropped(row.key) {
                keys.append(ReplicaKey(partition: partition, bytes: [], generation: 0))
            } else {
                return false
            }
        }
        return await withTaskGroup(of: Bool.self) { group in
            for (key, row) in zip(keys, rows) where !key.bytes.isEmpty {
                group.addTask {
                    switch await self.maintenanceStorage(.reconcile(key, row.object)) {
                    case .object: return true
                    case .failed(let error): return error.code == .tableChanged
                    }
                }
            }
            var stored = true
            for await result in group where !result { stored = false }
            return stored
        }
    }

    /// Whether the row's table was dropped (its rows need not travel).
    private func tableIsDropped(_ dataKey: [UInt8]) -> Bool {
        guard dataKey.count > 4 else { return true }
        let dropped = metadata.tables.values.filter { $0.descriptor == nil }.map(\.name)
        return Self.table(of: dataKey, among: dropped) != nil
    }

    private func recordBatch(_ partition: PartitionID, rows: Int, bytes: Int, estimate: UInt64) {
        let now = NIODeadline.now()
        rebalance.withLockedValue { state in
            state.counters.batchesReceived += 1
            state.counters.rowsReceived += Int64(rows)
            state.counters.bytesReceived += Int64(bytes)
            guard var inbound = state.inbound[partition] else { return }
            inbound.rows += UInt64(rows)
            inbound.bytes += UInt64(bytes)
            inbound.batches += 1
            inbound.estimatedRows = max(estimate, inbound.rows)
            if let last = inbound.lastBatch {
                let seconds = max(0.001, Double((now - last).nanoseconds) / 1e9)
                let instant = Double(bytes) / seconds
                inbound.rate = inbound.rate == 0 ? instant : 0.7 * inbound.rate + 0.3 * instant
            }
            inbound.lastBatch = now
            state.inbound[partition] = inbound
        }
    }

    /// Waits until the node's byte budget allows the next batch.
    private func throttle() async {
        let until = rebalance.withLockedValue { $0.throttleUntil }
        let now = NIODeadline.now()
        // At most a second at a time: a lowered limit or a pause is seen within it.
        if until > now {
            try? await Task.sleep(nanoseconds: UInt64(min((until - now).nanoseconds, 1_000_000_000)))
        }
    }

    /// Charges `bytes` to the node's byte budget (shared by its transfers).
    private func reserve(bytes: Int) {
        let rate = metadata.handoffControl.bytesPerSecond
        guard rate > 0 else { return }
        let cost = TimeAmount.nanoseconds(Int64(Double(bytes) / Double(rate) * 1e9))
        let now = NIODeadline.now()
        rebalance.withLockedValue { state in
            // The debt is bounded, so a rate raised after a tiny one takes effect soon.
            state.throttleUntil = min(max(state.throttleUntil, now) + cost, now + .seconds(2))
        }
    }

    private func markReceived(_ partition: PartitionID, layoutVersion: UInt64) async {
        do {
            try await local.blocking { [self] () throws(KVError) in
                try changeMetadata { metadata in
                    guard metadata.layout?.version == layoutVersion else { return }
                    metadata.markReceived(partition, by: nodeID)
                }
            }
        } catch {
            logger.error("recording a received partition failed", metadata: ["error": "\(error)"])
            return
        }
        rebalance.withLockedValue { state in
            state.inbound[partition]?.state = "received"
            state.counters.transfersCompleted += 1
        }
        logger.info(
            "partition received", metadata: ["partition": "\(partition)", "layout": "\(layoutVersion)"])
    }

    // MARK: - Serving

    /// Answers a new owner's pull with the next batch from the transfer's snapshot.
    func serveTransferPull(
        id: UInt64, partition: PartitionID, layoutVersion: UInt64, after: [UInt8]?, maximumBytes: Int,
        from sender: NodeID
    ) {
        let metadata = metadata
        @Sendable func refuse(_ error: KVError) {
            rebalance.withLockedValue { $0.counters.pullsRefused += 1 }
            transport.send(
                .transfers(
                    .transferRows(
                        id: id, page: PartitionScanPage(rows: [], truncated: true, error: error),
                        estimatedRows: 0
                    )),
                to: sender)
        }
        guard let layout = metadata.layout, layout.version == layoutVersion,
            let transition = metadata.transition,
            transition.sources(of: partition, in: layout).contains(nodeID)
        else {
            refuse(
                KVError(
                    .unavailable,
                    "this node is not a source of partition \(partition) in layout \(layoutVersion)"))
            return
        }
        let key = RebalanceState.OutboundKey(destination: sender, partition: partition)
        let now = NIODeadline.now()
        let admitted = rebalance.withLockedValue { state in
            if state.outbound[key]?.layoutVersion != layoutVersion {
                let busy = state.outbound.values.filter {
                    !$0.finished && $0.lastUsed + .seconds(5) > now && $0.snapshot != nil
                }.count
                guard busy < metadata.handoffControl.nodeConcurrency else { return false }
                state.outbound[key] = RebalanceState.Outbound(layoutVersion: layoutVersion, lastUsed: now)
            }
            state.outbound[key]!.lastUsed = now
            return true
        }
        guard admitted else {
            refuse(KVError(.unavailable, "this node serves as many transfers as it may; retry shortly"))
            return
        }
        local.threadPool.submit { [self] _ in
            do throws(KVError) {
                let page = try readBatch(key, after: after, maximumBytes: min(maximumBytes, 32 << 20))
                transport.send(
                    .transfers(.transferRows(id: id, page: page.page, estimatedRows: page.estimate)),
                    to: sender)
            } catch {
                refuse(error)
            }
        }
    }

    /// Reads the next batch of a transfer from its snapshot (taken at the first pull, or
    /// again when the source restarted). Blocks.
    private func readBatch(_ key: RebalanceState.OutboundKey, after: [UInt8]?, maximumBytes: Int)
        throws(KVError)
        -> (page: PartitionScanPage, estimate: UInt64)
    {
        var snapshot = rebalance.withLockedValue { $0.outbound[key]?.snapshot }
        var estimate = rebalance.withLockedValue { $0.outbound[key]?.estimatedRows } ?? 0
        let range = StorageLayout.partitionRange(key.partition)
        if snapshot == nil {
            let taken = try storageWork("taking a transfer snapshot") { try local.engine.snapshot() }
            snapshot = taken
            estimate = try storageWork("estimating a partition") {
                var count: UInt64 = 0
                let keyspace: Keyspace = antiEntropy.indexComplete ? .antiEntropy : .data
                let cursor = try taken.cursor(over: range, in: keyspace, direction: .forward)
                while count < 1_000_000, try cursor.next() != nil { count += 1 }
                return count
            }
            rebalance.withLockedValue { state in
                state.outbound[key]?.snapshot = taken
                state.outbound[key]?.estimatedRows = estimate
            }
        }
        guard let snapshot else { throw KVError(.internalError, "no transfer snapshot") }
        var lower = range.lowerBound
        if let after {
            guard after.starts(with: StorageLayout.partitionPrefix(key.partition)) else {
                throw KVError(.invalidRequest, "the transfer cursor lies outside partition \(key.partition)")
            }
            lower = after + [0]
        }
        var rows: [(key: [UInt8], object: StoredObject)] = []
        var bytes = 0
        var truncated = false
        try storageWork("reading a transfer batch") {
            let cursor = try snapshot.cursor(
                over: EncodedKeyRange(lowerBound: lower, upperBound: range.upperBound), in: .data,
                direction: .forward)
            while let entry = try cursor.next() {
                if !rows.isEmpty && bytes + entry.key.count + entry.value.count > maximumBytes {
                    truncated = true
                    break
                }
                rows.append((entry.key, try StoredObjectCodec.decode(entry.value)))
                bytes += entry.key.count + entry.value.count
            }
        }
        rebalance.withLockedValue { state in
            guard var outbound = state.outbound[key] else { return }
            // A pull that starts before the last key sent re-sends rows: the new owner
            // restarted and resumed from its stored cursor.
            if let sent = outbound.lastSent, (after ?? []).lexicographicallyPrecedes(sent) {
                outbound.resentBatches += 1
                state.counters.batchesResent += 1
            }
            if let last = rows.last?.key { outbound.lastSent = last }
            outbound.finished = !truncated
            if outbound.finished { outbound.snapshot = nil }
            outbound.rows += UInt64(rows.count)
            outbound.bytes += UInt64(bytes)
            outbound.batches += 1
            state.outbound[key] = outbound
            state.counters.batchesSent += 1
            state.counters.rowsSent += Int64(rows.count)
            state.counters.bytesSent += Int64(bytes)
        }
        return (PartitionScanPage(rows: rows, truncated: truncated), estimate)
    }

    // MARK: - Releasing and dropping

    /// The check a previous owner makes before its copy of a settled partition may go:
    /// it compares its row hashes with each new owner's, page by page, and merges every
    /// row the new owner does not hold as it does into it. Once every new owner holds
    /// all of it, the node records the release.
    private func release(_ partition: PartitionID, layout: Layout) async {
        let owners = layout.replicas(of: partition).filter { $0 != nodeID }
        for owner in owners {
            guard isReachable(owner), await pushDifferences(partition, to: owner) else { return }
        }
        do {
            try await local.blocking { [self] () throws(KVError) in
                try changeMetadata { metadata in
                    guard metadata.layout?.version == layout.version else { return }
                    metadata.markReleased(partition, by: nodeID)
                }
            }
        } catch {
            return
        }
        rebalance.withLockedValue { $0.counters.partitionsReleased += 1 }
        logger.info(
            "partition released", metadata: ["partition": "\(partition)", "layout": "\(layout.version)"])
    }

    /// Makes `owner` hold everything of `partition` this node holds; `true` once every
    /// row compared equal or was merged into it.
    private func pushDifferences(_ partition: PartitionID, to owner: NodeID) async -> Bool {
        let allLeaves = Array(0..<MerkleTree.leafCount)
        var after: [UInt8]?
        while !isStopping {
            let listing: [KeyHash]
            let bound: [UInt8]?
            if antiEntropy.indexComplete {
                guard let page = await pairedListings(partition, allLeaves, after: after, with: owner) else {
                    return false
                }
                bound = page.bound
                let theirHashes = Dictionary(
                    page.theirs.map { ($0.key, $0.hash) }, uniquingKeysWith: { a, _ in a })
                listing = page.ours.filter { theirHashes[$0.key] != $0.hash }
            } else {
                // Without the hash index every row is merged into the owner.
                guard
                    let page = try? await local.blocking({ [local, after] () throws(KVError) in
                        try storageWork("listing a partition") {
                            var keys: [KeyHash] = []
                            let range = StorageLayout.partitionRange(partition)
                            let cursor = try local.engine.cursor(
                                over: EncodedKeyRange(
                                    lowerBound: after.map { $0 + [0] } ?? range.lowerBound,
                                    upperBound: range.upperBound),
                                in: .data, direction: .forward)
                            while keys.count < Self.keysPerListing, let entry = try cursor.next() {
                                keys.append(KeyHash(key: entry.key, hash: 0))
                            }
                            return keys
                        }
                    })
                else { return false }
                listing = page
                bound = page.count == Self.keysPerListing ? page.last?.key : nil
            }
            for entry in listing where !isStopping {
                guard let generation = tableGeneration(of: entry.key) else {
                    // A dropped table's rows need not go; an unknown one (this node's
                    // catalog lags) is checked again later.
                    if tableIsDropped(entry.key) { continue }
                    return false
                }
                let row = ReplicaKey(partition: partition, bytes: entry.key, generation: generation)
                guard case .object(let object) = await maintenanceStorage(.load(row)) else { return false }
                if object.entries.isEmpty { continue }
                guard
                    case .antiEntropy(.reconciled(_, .object))? = await request(
                        { .antiEntropy(.reconcile(id: $0, key: row, object: object)) }, to: owner)
                else { return false }
                rebalance.withLockedValue { $0.counters.releaseRepairs += 1 }
            }
            guard let bound else { return true }
            after = bound
        }
        return false
    }

    /// Whether this node must keep its copy of `partition`: the layout places it here,
    /// or it is a previous owner during a change in progress (it still gets every write).
    static func holds(_ partition: PartitionID, node: NodeID, metadata: ClusterMetadata) -> Bool {
        guard let layout = metadata.layout else { return true }
        if layout.replicas(of: partition).contains(node) { return true }
        guard let transition = metadata.transition else { return false }
        return transition.previous.replicas(of: partition).contains(node)
    }

    /// Looks at the next partition in turn and drops this node's copy of it if no layout
    /// in use places it here (a retired partition it left, or a change that moved it
    /// away before it arrived). Only rows go, with their index entries and tree; hints
    /// stay with their own keyspace.
    private func dropOneForeignPartition(_ metadata: ClusterMetadata, layout: Layout) async {
        let index = rebalance.withLockedValue { state in
            defer { state.sweepCursor = (state.sweepCursor + 1) % layout.partitionCount }
            return state.sweepCursor % layout.partitionCount
        }
        let partition = PartitionID(rawValue: UInt32(index))
        let now = NIODeadline.now()
        guard !Self.holds(partition, node: nodeID, metadata: metadata) else {
            rebalance.withLockedValue { _ = $0.foreignSince.removeValue(forKey: partition) }
            return
        }
        let since = rebalance.withLockedValue { state in
            if state.foreignSince[partition] == nil { state.foreignSince[partition] = now }
            return state.foreignSince[partition]!
        }
        guard since + Self.dropGrace <= now else { return }
        let range = StorageLayout.partitionRange(partition)
        let any = try? await local.blocking { [local] () throws(KVError) -> Bool in
            try storageWork("looking for a dropped partition's rows") {
                try local.engine.cursor(over: range, in: .data, direction: .forward).next() != nil
            }
        }
        guard any == true else { return }
        // A previous owner takes writes until the change is over, also after it released,
        // and a stale coordinator may still send one: the owners get whatever they lack
        // before the copy goes, or it stays until they can.
        for owner in layout.replicas(of: partition) where owner != nodeID {
            guard isReachable(owner), await pushDifferences(partition, to: owner) else { return }
        }
        let dropped = try? await local.blocking { [self] () throws(KVError) -> Bool in
            // Checked again under the metadata lock, so a change that placed the
            // partition here since cannot lose its first rows.
            return try withMetadataLock { () throws(KVError) -> Bool in
                guard !Self.holds(partition, node: nodeID, metadata: self.metadata) else { return false }
                var batch = WriteBatch()
                batch.deleteRange(range, in: .data)
                batch.deleteRange(range, in: .antiEntropy)
                try local.write(batch)
                if antiEntropy.isEnabled { try antiEntropy.rebuild(partition, engine: local.engine) }
                return true
            }
        }
        if dropped == true {
            rebalance.withLockedValue { state in
                state.counters.partitionsDropped += 1
                state.foreignSince[partition] = nil
            }
            logger.info(
                "dropped a partition this node no longer holds", metadata: ["partition": "\(partition)"])
        }
    }

    // MARK: - Reporting

    /// This node's transfers, for the cluster-wide report.
    func localTransfers() -> [TransfersReport.Transfer] {
        let version = metadata.layout?.version
        let (inbound, outbound) = rebalance.withLockedValue { state in
            (
                state.inbound.filter { $0.value.layoutVersion == version },
                state.outbound.filter { $0.value.layoutVersion == version }
            )
        }
        var result: [TransfersReport.Transfer] = []
        for (partition, transfer) in inbound {
            let remaining =
                transfer.estimatedRows > transfer.rows ? transfer.estimatedRows - transfer.rows : 0
            let bytesPerRow = transfer.rows > 0 ? Double(transfer.bytes) / Double(transfer.rows) : 0
            let eta: Double? =
                transfer.rate > 0
                ? Double(remaining) * bytesPerRow / transfer.rate : (remaining == 0 ? 0 : nil)
            result.append(
                TransfersReport.Transfer(
                    partition: Int(partition.rawValue), destination: nodeID.description,
                    source: transfer.source?.description, state: transfer.state, rows: transfer.rows,
                    bytes: transfer.bytes, estimatedRows: transfer.estimatedRows,
                    bytesPerSecond: UInt64(transfer.rate), etaSeconds: eta, batches: transfer.batches))
        }
        for (key, transfer) in outbound {
            result.append(
                TransfersReport.Transfer(
                    partition: Int(key.partition.rawValue), destination: key.destination.description,
                    source: nodeID.description, state: transfer.finished ? "sent" : "sending",
                    rows: transfer.rows,
                    bytes: transfer.bytes, estimatedRows: transfer.estimatedRows, batches: transfer.batches,
                    resentBatches: transfer.resentBatches))
        }
        return result
    }

    /// The transfer counters, by stable name.
    var transferCounters: [String: Int64] {
        let counters = rebalance.withLockedValue { $0.counters }
        return [
            "handoff.transfers_started": counters.transfersStarted,
            "handoff.transfers_completed": counters.transfersCompleted,
            "handoff.batches_received": counters.batchesReceived,
            "handoff.rows_received": counters.rowsReceived,
            "handoff.bytes_received": counters.bytesReceived,
            "handoff.batches_sent": counters.batchesSent,
            "handoff.rows_sent": counters.rowsSent,
            "handoff.bytes_sent": counters.bytesSent,
            "handoff.batches_resent": counters.batchesResent,
            "handoff.pulls_failed": counters.pullsFailed,
            "handoff.pulls_refused": counters.pullsRefused,
            "handoff.partitions_released": counters.partitionsReleased,
            "handoff.release_repairs": counters.releaseRepairs,
            "handoff.partitions_dropped": counters.partitionsDropped,
            "handoff.hints_rerouted": counters.hintsRerouted,
        ]
    }

    /// Encodes transfers for a peer's report.
    static func encode(_ transfers: [TransfersReport.Transfer]) -> [UInt8] {
        var writer = BinaryWriter(capacity: 64 * transfers.count + 8)
        writer.writeVarint(UInt64(transfers.count))
        for transfer in transfers {
            writer.writeVarint(UInt64(transfer.partition))
            writer.writeLengthPrefixed(Array(transfer.destination.utf8))
            writer.writeLengthPrefixed(Array((transfer.source ?? "").utf8))
            writer.writeLengthPrefixed(Array(transfer.state.utf8))
            for value in [
                transfer.rows, transfer.bytes, transfer.estimatedRows, transfer.bytesPerSecond,
                transfer.batches,
                transfer.resentBatches,
            ] {
                writer.writeVarint(value)
            }
            writer.writeFixed((transfer.etaSeconds ?? -1).bitPattern)
        }
        return writer.bytes
    }

    /// Decodes a peer's report; `nil` when malformed.
    static func decodeTransfers(_ bytes: [UInt8]) -> [TransfersReport.Transfer]? {
        var reader = BinaryReader(bytes)
        func text() throws -> String {
            String(decoding: try reader.readLengthPrefixed(maximumLength: 64), as: UTF8.self)
        }
        do {
            let count = try reader.readVarint()
            guard count <= 1 << 20 else { return nil }
            var result: [TransfersReport.Transfer] = []
            for _ in 0..<count {
                let partition = Int(try reader.readVarint() & 0xffff_ffff)
                let destination = try text()
                let source = try text()
                let state = try text()
                var values: [UInt64] = []
                for _ in 0..<6 { values.append(try reader.readVarint()) }
                let eta = Double(bitPattern: try reader.readFixed())
                result.append(
                    TransfersReport.Transfer(
                        partition: partition, destination: destination, source: source.isEmpty ? nil : source,
                        state: state, rows: values[0], bytes: values[1], estimatedRows: values[2],
                        bytesPerSecond: values[3], etaSeconds: eta < 0 ? nil : eta, batches: values[4],
                        resentBatches: values[5]))
            }
            return result
        } catch {
            return nil
        }
    }
}
