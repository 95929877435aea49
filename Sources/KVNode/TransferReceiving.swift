import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOCore

/// The shell of ``PartitionTransfers``: it reads and persists transfer cursors, sends
/// pulls, merges received rows through the write drain, records receipts in the
/// metadata and fires the machine's timers. Every decision (which partitions, from
/// whom, where to resume, when to retry, how fast) is the machine's.
extension ClusterNode {
    /// What the transfer machine sees of this node now.
    func transferView() -> TransferView {
        let metadata = metadata
        let peers = metadata.members.keys.filter { $0 != nodeID }
        let believedUp = state.withLockedValue { state in Set(peers.filter { state.believesUp($0) }) }
        return TransferView(
            node: nodeID, layout: metadata.isFormed ? metadata.layout : nil, transition: metadata.transition,
            control: metadata.handoffControl, reachable: Set(peers.filter { isReachable($0) }),
            believedUp: believedUp, nowMilliseconds: Self.monotonicMilliseconds())
    }

    /// Carries out one of the transfer machine's actions.
    func performTransfers(_ action: PartitionTransfers.Action) {
        switch action {
        case .readCursor(let partition, let version):
            local.threadPool.submit { [self] _ in
                let stored =
                    (try? local.metadataRecord(
                        StorageLayout.transferCursorKey(version: version, partition: partition)))
                    ?? nil
                runCore(
                    .transfers(
                        .cursorRead(
                            partition, layoutVersion: version, stored.map(TransferCursor.init(encoded:)))))
            }
        case .send(let message, let target):
            transport.send(message, to: target)
        case .store(let id, let partition, let rows):
            Task {
                let ok = await store(rows, of: partition)
                runCore(.transfers(.stored(id: id, ok: ok)))
            }
        case .saveCursor(let id, let partition, let version, let cursor):
            var batch = WriteBatch()
            batch.put(
                StorageLayout.transferCursorKey(version: version, partition: partition), cursor.encoded,
                in: .metadata)
            let write = batch
            local.threadPool.submit { [self] _ in
                // The rows are durable (the drain synced them), so the cursor needs no
                // flush of its own: one lost in a crash is a batch pulled again.
                let ok =
                    (try? storageWork("storing a transfer cursor") {
                        try local.engine.write(write, durability: .buffered)
                    }) != nil
                runCore(.transfers(.cursorSaved(id: id, ok: ok)))
            }
        case .recordReceipts(let records):
            Task {
                let ok = await recordReceipts(records)
                runCore(.transfers(.receiptsRecorded(records, ok: ok)))
            }
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.transfers, id: id), afterMilliseconds: milliseconds)
        case .unanswered(let peer):
            noteUnanswered(by: peer)
        case .cancelTimer(let id):
            cancelCoreTimer(NodeCore.Timer(.transfers, id: id))
        }
    }

    /// Merges received rows into storage (as anti-entropy repairs do). `false` when a row
    /// could not be stored yet: its table is not in this node's catalog (the metadata
    /// lags) or the engine failed; the batch is pulled again.
    private func store(_ rows: [PartitionTransfers.ScanRow], of partition: PartitionID) async -> Bool {
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
        let commands = zip(keys, rows).compactMap { key, row in
            key.bytes.isEmpty ? nil : StorageCommand.reconcile(key, row.object)
        }
        return await maintenanceStorage(commands).allSatisfy { outcome in
            switch outcome {
            case .object: true
            case .failed(let error): error.code == .tableChanged
            }
        }
    }

    /// Records in the metadata, as one change, that this node holds each partition for
    /// its layout version (a newer layout makes a record moot, which is no failure).
    private func recordReceipts(_ records: [LayoutPartition]) async -> Bool {
        do {
            try await local.blocking { [self] () throws(KVError) in
                try changeMetadata { metadata in
                    for record in records where metadata.layout?.version == record.layoutVersion {
                        metadata.markReceived(record.partition, by: nodeID)
                    }
                }
            }
        } catch {
            logger.error("recording received partitions failed", metadata: ["error": "\(error)"])
            return false
        }
        for record in records {
            logger.info(
                "partition received",
                metadata: ["partition": "\(record.partition)", "layout": "\(record.layoutVersion)"])
        }
        return true
    }
}
