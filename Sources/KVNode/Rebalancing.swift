import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOConcurrencyHelpers
import NIOCore

/// What a node knows of the transfers it takes part in: the ones it receives (with
/// progress) and the ones it serves (with their snapshots).
struct RebalanceState: Sendable {
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

    var outbound: [OutboundKey: Outbound] = [:]
    var counters = Counters()

    /// The transfer counters, by their status names.
    struct Counters: Sendable {
        var batchesSent: Int64 = 0
        var rowsSent: Int64 = 0
        var bytesSent: Int64 = 0
        var batchesResent: Int64 = 0
        var pullsRefused: Int64 = 0
        var hintsRerouted: Int64 = 0
    }
}

/// Moving data when the layout changes: the destination of each moving partition pulls
/// it from a previous owner as batches read from one engine snapshot, persisting the last
/// key it stored so a restart resumes there. Previous owners that leave the partition
/// make the new owners hold everything they hold before their copy retires, and copies
/// no layout in use places here are dropped (``PartitionRelease``). Limits (cluster-wide and per node, a byte rate,
/// pause) come from the cluster metadata, so an operator sets them once for every node.
extension ClusterNode {
    /// How often the rebalancer looks for work.
    static let rebalanceTick = TimeAmount.milliseconds(200)
    /// How long a source keeps an idle transfer's snapshot.
    static let transferSessionIdle = TimeAmount.seconds(60)

    func startRebalancing() -> RepeatedTask {
        eventLoop.scheduleRepeatedTask(initialDelay: Self.rebalanceTick, delay: Self.rebalanceTick) {
            [self] _ in rebalanceStep()
        }
    }

    /// One look for work: start the transfers this node may run, the releases and the
    /// drop it may (see `PartitionReleasing.swift`), forget idle snapshots.
    func rebalanceStep() {
        guard metadata.isFormed, !isStopped else { return }
        let now = NIODeadline.now()
        rebalance.withLockedValue { state in
            state.outbound = state.outbound.filter { $0.value.lastUsed + Self.transferSessionIdle > now }
        }
        runCore(.tick(.transfers))
        runCore(.tick(.release))
    }

    /// Whether the row's table was dropped (its rows need not travel).
    func tableIsDropped(_ dataKey: [UInt8]) -> Bool {
        guard dataKey.count > 4 else { return true }
        let dropped = metadata.tables.values.filter { $0.descriptor == nil }.map(\.name)
        return ReplicaStore.table(of: dataKey, among: dropped) != nil
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
        if let refusal = PartitionTransfers.refusal(
            partition: partition, layoutVersion: layoutVersion, view: transferView())
        {
            refuse(refusal)
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

    // MARK: - Reporting

    /// This node's transfers, for the cluster-wide report, with the core's `received`
    /// ones.
    func localTransfers(received: [PartitionID: PartitionTransfers.Inbound]) -> [TransfersReport.Transfer] {
        let version = metadata.layout?.version
        let inbound = received.filter { $0.value.layoutVersion == version }
        let outbound = rebalance.withLockedValue { $0.outbound.filter { $0.value.layoutVersion == version } }
        var result: [TransfersReport.Transfer] = []
        for (partition, transfer) in inbound {
            let remaining =
                transfer.estimatedRows > transfer.rows ? transfer.estimatedRows - transfer.rows : 0
            let bytesPerRow = transfer.rows > 0 ? Double(transfer.bytes) / Double(transfer.rows) : 0
            let rate = transfer.bytesPerSecond
            let eta: Double? = rate > 0 ? Double(remaining) * bytesPerRow / rate : (remaining == 0 ? 0 : nil)
            result.append(
                TransfersReport.Transfer(
                    partition: Int(partition.rawValue), destination: nodeID.description,
                    source: transfer.source?.description, state: transfer.state, rows: transfer.rows,
                    bytes: transfer.bytes, estimatedRows: transfer.estimatedRows,
                    bytesPerSecond: UInt64(rate), etaSeconds: eta, batches: transfer.batches))
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

    /// The transfer counters, by stable name, with the core's counters of transfers
    /// `received` and partitions `released`.
    func transferCounters(
        received: TransferCounters, released: ReleaseCounters
    ) -> [String: Int64] {
        let counters = rebalance.withLockedValue { $0.counters }
        return [
            "handoff.transfers_started": received.transfersStarted,
            "handoff.transfers_completed": received.transfersCompleted,
            "handoff.batches_received": received.batchesReceived,
            "handoff.rows_received": received.rowsReceived,
            "handoff.bytes_received": received.bytesReceived,
            "handoff.batches_sent": counters.batchesSent,
            "handoff.rows_sent": counters.rowsSent,
            "handoff.bytes_sent": counters.bytesSent,
            "handoff.batches_resent": counters.batchesResent,
            "handoff.pulls_failed": received.pullsFailed,
            "handoff.pulls_refused": counters.pullsRefused,
            "handoff.partitions_released": released.partitionsReleased,
            "handoff.release_repairs": released.rowsPushed,
            "handoff.partitions_dropped": released.partitionsDropped,
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
