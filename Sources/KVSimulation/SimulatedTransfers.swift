import KVCluster
import KVCore
import KVReplica
import KVStorage

/// The simulator's interpreter of ``PartitionTransfers``: the same machine the node runs,
/// its cursor reads and writes and its row merges done inline on the node's volume and
/// replica store, its pulls carried as messages and served by the source from one engine
/// snapshot per transfer, as the node shell serves them.
extension SimulatedWorld {
    /// Small batches, so that transfers page (and resume) even over the few rows of a run.
    static let transferSettings = TransferSettings(
        batchBytes: 64, requestTimeoutMilliseconds: requestTimeout, retryMilliseconds: 50)

    /// What node `node`'s transfer machine sees.
    func transferView(_ node: Int) -> TransferView {
        let me = nodes[node].id
        let metadata = nodes[node].metadata
        let alive = reachablePeers(of: node)
        return TransferView(
            node: me, layout: metadata?.layout, transition: metadata?.transition,
            control: metadata?.handoffControl ?? HandoffControl(), reachable: alive, believedUp: alive,
            nowMilliseconds: nodes[node].localTime(now))
    }

    /// A transfer pull arrived at `node`: it serves it as a source (batches went to its
    /// core).
    mutating func serveTransfer(_ message: TransferMessage, from sender: Int, at node: Int) {
        switch message {
        case .transferPull(let id, let partition, let version, let after, let maximumBytes):
            let page = servePull(
                id: id, partition: partition, layoutVersion: version, after: after,
                maximumBytes: maximumBytes,
                for: sender, at: node)
            send(
                .transfers(.transferRows(id: id, page: page, estimatedRows: UInt64(page.rows.count))),
                from: node, to: sender)
        case .transferRows, .transfersRequest, .transfersReport:
            break
        }
    }

    /// The next page of a transfer, from the snapshot the source took at the transfer's
    /// first pull (again after the source restarted), or a refusal.
    mutating func servePull(
        id: UInt64, partition: PartitionID, layoutVersion: UInt64, after: [UInt8]?, maximumBytes: Int,
        for receiver: Int, at node: Int
    ) -> PartitionScanPage {
        if let refusal = PartitionTransfers.refusal(
            partition: partition, layoutVersion: layoutVersion, view: transferView(node))
        {
            return PartitionScanPage(rows: [], truncated: true, error: refusal)
        }
        let session = TransferSession(receiver: receiver, partition: partition, version: layoutVersion)
        if nodes[node].transferSnapshots[session] == nil {
            // The in-memory engine cannot fail.
            let rows = try! nodes[node].engine.snapshot().entries(
                in: StorageLayout.partitionRange(partition), of: .data)
            nodes[node].transferSnapshots[session] = rows
        }
        let following = nodes[node].transferSnapshots[session]!.filter { row in
            after.map { $0.lexicographicallyPrecedes(row.key) } ?? true
        }
        var remaining = following
        if configuration.injectedBug == .transfersSkipARow, !remaining.isEmpty {
            // The planted defect: an off-by-one in the source's paging.
            remaining.removeFirst()
        }
        var rows: [(key: [UInt8], object: StoredObject)] = []
        var bytes = 0
        for row in remaining {
            if !rows.isEmpty && bytes + row.key.count + row.value.count > maximumBytes { break }
            guard let object = try? StoredObjectCodec.decode(row.value) else { continue }
            rows.append((row.key, object))
            bytes += row.key.count + row.value.count
        }
        let truncated = rows.count < remaining.count
        // What the page covers of the snapshot: every row after the cursor up to its
        // last row, or to the end.
        let covered = following.filter { row in
            !truncated || rows.last.map { !$0.key.lexicographicallyPrecedes(row.key) } ?? false
        }
        transferPagesServed[ServedPage(receiver: receiver, id: id)] = (session, covered)
        return PartitionScanPage(rows: rows, truncated: truncated)
    }

    /// Carries out one of the transfer machine's actions. The `switch` has no `default:`
    /// on purpose.
    mutating func performTransfers(_ action: PartitionTransfers.Action, at node: Int) {
        let delay = Int64.random(in: 0...3, using: &random)
        switch action {
        case .readCursor(let partition, let version):
            let stored = try? nodes[node].engine.get(
                StorageLayout.transferCursorKey(version: version, partition: partition), in: .metadata)
            complete(
                .transfers(
                    .cursorRead(partition, layoutVersion: version, stored.map(TransferCursor.init(encoded:)))),
                after: delay, at: node)
        case .send(let message, let target):
            send(message, from: node, to: index(of: target))
        case .store(let id, _, _) where handoffWriteFails(.rows):
            let page = transferPagesStoring.removeValue(forKey: ServedPage(receiver: node, id: id))
            guard configuration.injectedBug == .failedStoresCountAsStored else {
                complete(.transfers(.stored(id: id, ok: false)), after: delay, at: node)
                return
            }
            // The planted defect: the failed batch counts as stored.
            if let page { transferRowsExpected[page.session, default: []] += page.rows }
            complete(.transfers(.stored(id: id, ok: true)), after: delay, at: node)
        case .store(let id, let partition, let rows):
            var ok = true
            for row in rows {
                let key = ReplicaKey(
                    partition: partition, bytes: row.key, generation: SimulatedNode.table.generation)
                if case .failed = execute(.reconcile(key, row.object), at: node) { ok = false }
            }
            if let page = transferPagesStoring.removeValue(forKey: ServedPage(receiver: node, id: id)), ok {
                transferRowsExpected[page.session, default: []] += page.rows
            }
            complete(.transfers(.stored(id: id, ok: ok)), after: delay, at: node)
        case .saveCursor(let id, _, _, _) where handoffWriteFails(.cursor):
            complete(.transfers(.cursorSaved(id: id, ok: false)), after: delay, at: node)
        case .saveCursor(let id, let partition, let version, let cursor):
            var batch = WriteBatch()
            batch.put(
                StorageLayout.transferCursorKey(version: version, partition: partition), cursor.encoded,
                in: .metadata)
            let ok = (try? nodes[node].engine.write(batch, durability: .buffered)) != nil
            complete(.transfers(.cursorSaved(id: id, ok: ok)), after: delay, at: node)
        case .recordReceipts(let records) where handoffWriteFails(.receipts):
            complete(.transfers(.receiptsRecorded(records, ok: false)), after: delay, at: node)
        case .recordReceipts(let records):
            recordReceipts(records, at: node)
            complete(.transfers(.receiptsRecorded(records, ok: true)), after: delay, at: node)
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.transfers, id: id), afterMilliseconds: milliseconds, at: node)
        case .unanswered(let peer):
            noteUnanswered(by: peer, at: node)
        case .cancelTimer(let id):
            nodes[node].cancelledCoreTimers.insert(NodeCore.Timer(.transfers, id: id))
        }
    }

    /// Whether this handoff write fails, with nothing stored
    /// (``SimulationConfiguration/failingWrites``; only while faults are active, so a run
    /// still heals).
    mutating func handoffWriteFails(_ write: HandoffWrite) -> Bool {
        guard configuration.failingWrites, faultsActive, random.chance(0.2) else { return false }
        report.handoffWritesFailed[write, default: 0] += 1
        return true
    }

    /// Records the receipts in the node's own copy of the metadata as one change, which
    /// gossip spreads, after checking each transfer lost nothing.
    mutating func recordReceipts(_ records: [LayoutPartition], at node: Int) {
        let version = nodes[node].metadata?.layout?.version
        var received: [PartitionID] = []
        for record in records {
            checkTransferLostNothing(record.partition, layoutVersion: record.layoutVersion, at: node)
            guard version == record.layoutVersion else { continue }
            log("n\(node) received p\(record.partition)")
            report.partitionsHandedOff += 1
            received.append(record.partition)
        }
        let me = nodes[node].id
        changeMetadata(at: node) { metadata in
            for partition in received { metadata.markReceived(partition, by: me) }
        }
    }

    /// The transfer checker: once a new owner counts a partition as received, it holds
    /// every live row of what the pages it took covered of their sources' snapshots
    /// (tombstones may have been reaped since). Pages from different sources join at the
    /// cursor, so this holds across source changes and restarts too.
    mutating func checkTransferLostNothing(_ partition: PartitionID, layoutVersion: UInt64, at node: Int) {
        let session = TransferSession(receiver: node, partition: partition, version: layoutVersion)
        for row in transferRowsExpected.removeValue(forKey: session) ?? [] {
            guard let object = try? StoredObjectCodec.decode(row.value), !object.isDeleted else { continue }
            if ((try? nodes[node].engine.get(row.key, in: .data)) ?? nil) == nil {
                report.violations.append(
                    "n\(node) counted p\(partition) as received, but a row a page it took covered is not there"
                )
                return
            }
        }
    }
}

/// A page a source served: the receiver and its pull's id.
struct ServedPage: Hashable {
    var receiver: Int
    var id: UInt64
}

/// The rows of a source's snapshot a served page covers, and the transfer it belongs to.
typealias CoveredRows = (session: TransferSession, rows: [StorageEntry])

/// A receiver's transfer of one partition, for the page it holds.
struct HeldPage: Hashable {
    var receiver: Int
    var partition: PartitionID
}

/// One source's transfer of one partition to one receiver.
struct TransferSession: Hashable {
    var receiver: Int
    var partition: PartitionID
    var version: UInt64
}
