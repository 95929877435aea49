import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOCore

/// The shell of ``PartitionRelease``: it lists and loads this node's rows on the thread
/// pool, sends listings and merges to the owners, records releases in the metadata,
/// deletes dropped copies and fires the machine's timers. Every decision (which
/// partitions, when, which rows go to whom, when to give up) is the machine's.
extension ClusterNode {
    /// What the release machine sees of this node now.
    func releaseView() -> ReleaseView {
        let metadata = metadata
        return ReleaseView(
            node: nodeID, layout: metadata.isFormed ? metadata.layout : nil, transition: metadata.transition,
            reachable: Set(metadata.members.keys.filter { $0 != nodeID && isReachable($0) }),
            indexComplete: antiEntropy.indexComplete, nowMilliseconds: Self.monotonicMilliseconds())
    }

    /// Carries out one of the release machine's actions.
    func performRelease(_ action: PartitionRelease.Action) {
        switch action {
        case .list(let id, let partition, let after, let withHashes):
            local.threadPool.submit { [self] _ in
                let listing = try? listRows(of: partition, after: after, withHashes: withHashes)
                runCore(.release(.listed(id: id, listing)))
            }
        case .load(let id, let partition, let bytes):
            guard let generation = tableGeneration(of: bytes) else {
                let row: PartitionRelease.LoadedRow =
                    tableIsDropped(bytes) ? .droppedTable : .unknownTable
                runCore(.release(.loaded(id: id, row)))
                return
            }
            let key = ReplicaKey(partition: partition, bytes: bytes, generation: generation)
            storage(.load(key)) { [self] outcome in
                let row: PartitionRelease.LoadedRow
                if case .object(let object) = outcome { row = .row(key, object) } else { row = .failed }
                runCore(.release(.loaded(id: id, row)))
            }
        case .send(let message, let target):
            transport.send(message, to: target)
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.release, id: id), afterMilliseconds: milliseconds)
        case .cancelTimer(let id):
            cancelCoreTimer(NodeCore.Timer(.release, id: id))
        case .recordReleases(let records):
            local.threadPool.submit { [self] _ in
                let ok = recordReleases(records)
                runCore(.release(.recorded(records, ok: ok)))
            }
        case .drop(let partition):
            local.threadPool.submit { [self] _ in
                let ok = dropCopy(of: partition)
                runCore(.release(.dropped(partition, ok: ok)))
            }
        case .unanswered(let peer):
            noteUnanswered(by: peer)
        case .waits(let partition, let purpose, let reason):
            let what =
                if case .drop = purpose { "partition drop waits" } else { "partition release waits" }
            logger.info(
                "\(what)", metadata: ["partition": "\(partition)", "reason": "\(reason)"])
        }
    }

    /// One page of this node's rows of `partition` after `after`: index entries when the
    /// index is complete, else the rows' keys with hash 0. Runs on the thread pool.
    private func listRows(of partition: PartitionID, after: [UInt8]?, withHashes: Bool) throws(KVError)
        -> KeyListing
    {
        if withHashes {
            let listing = try AntiEntropyIndex.keyHashes(
                in: partition, leaves: MerkleTree.everyLeaf, after: after, engine: local.engine,
                limit: Self.keysPerListing)
            return KeyListing(entries: listing.entries, truncated: listing.truncated)
        }
        return try storageWork("listing a partition") {
            var keys: [KeyHash] = []
            let range = StorageLayout.partitionRange(partition)
            let cursor = try local.engine.cursor(
                over: EncodedKeyRange(
                    lowerBound: after.map { $0 + [0] } ?? range.lowerBound, upperBound: range.upperBound),
                in: .data, direction: .forward)
            while keys.count < Self.keysPerListing, let entry = try cursor.next() {
                keys.append(KeyHash(key: entry.key, hash: 0))
            }
            return KeyListing(entries: keys, truncated: keys.count == Self.keysPerListing)
        }
    }

    /// Records, as one change, the release of each partition whose layout is still the
    /// record's (a newer one makes it moot, which is no failure). Runs on the thread pool.
    private func recordReleases(_ records: [LayoutPartition]) -> Bool {
        do {
            try changeMetadata { metadata in
                for record in records where metadata.layout?.version == record.layoutVersion {
                    metadata.markReleased(record.partition, by: nodeID)
                }
            }
        } catch {
            logger.error("recording released partitions failed", metadata: ["error": "\(error)"])
            return false
        }
        for record in records {
            logger.info(
                "partition released",
                metadata: ["partition": "\(record.partition)", "layout": "\(record.layoutVersion)"])
        }
        return true
    }

    /// Deletes this node's copy of `partition`: its rows, with their index entries and
    /// tree; hints stay with their own keyspace. Checked again under the metadata lock, so
    /// a change that placed the partition here since cannot lose its first rows. Runs on
    /// the thread pool.
    private func dropCopy(of partition: PartitionID) -> Bool {
        let range = StorageLayout.partitionRange(partition)
        let dropped = try? withMetadataLock { () throws(KVError) -> Bool in
            let metadata = self.metadata
            guard
                !PartitionRelease.holds(
                    partition, node: nodeID, layout: metadata.layout, transition: metadata.transition)
            else { return false }
            var batch = WriteBatch()
            batch.deleteRange(range, in: .data)
            batch.deleteRange(range, in: .antiEntropy)
            try local.write(batch)
            if antiEntropy.isEnabled { try antiEntropy.rebuild(partition, engine: local.engine) }
            return true
        }
        guard dropped == true else { return false }
        logger.info("dropped a partition this node no longer holds", metadata: ["partition": "\(partition)"])
        return true
    }
}
