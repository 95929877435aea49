import KVCluster
import KVCore
import KVStorage

/// A peer's anti-entropy or reaping request, as the replica that serves it sees it.
///
/// The node and the simulator both serve these through ``ReplicaStore``, so the answers a
/// peer's exchange or reaper gets are the same code in both: only how the work is run
/// (a thread pool and the write drain, or inline) is the shell's.
package enum MaintenanceRequest: Hashable, Sendable {
    /// The hashes of a partition's tree: its segments, or the leaves of `segments`.
    case treeHashes(id: UInt64, partition: PartitionID, segments: [Int])
    /// The key hashes in some of a partition's leaves, after a key.
    case keyHashes(id: UInt64, partition: PartitionID, leaves: [Int], after: [UInt8]?)
    /// Whether this replica agrees that a tombstone may be reaped.
    case reapQuery(id: UInt64, key: ReplicaKey, objectHash: UInt64, layoutVersion: UInt64)
    /// Merge a peer's copy of a row into this replica's.
    case reconcile(id: UInt64, key: ReplicaKey, object: StoredObject)
    /// Reap a tombstone that every replica agreed on, if it is still the one held.
    case reap(key: ReplicaKey, objectHash: UInt64)

    /// What serving a request takes.
    package enum Work: Hashable, Sendable {
        /// Reads of memory only: answer where the request arrived.
        case memory
        /// Reads of the engine: answer off the event loop.
        case engineReads
        /// A write through the replica's write path; ``MaintenanceRequest/answer(to:)``
        /// answers its outcome.
        case write(StorageCommand)
    }

    /// The request `message` carries; `nil` for every other message.
    package init?(_ message: ReplicaMessage) {
        switch message {
        case .antiEntropy(.treeRequest(let id, let partition, let segments)):
            self = .treeHashes(id: id, partition: partition, segments: segments)
        case .antiEntropy(.keyHashesRequest(let id, let partition, let leaves, let after)):
            self = .keyHashes(id: id, partition: partition, leaves: leaves, after: after)
        case .antiEntropy(.reconcile(let id, let key, let object)):
            self = .reconcile(id: id, key: key, object: object)
        case .reaping(.reapQuery(let id, let key, let hash, let layoutVersion)):
            self = .reapQuery(id: id, key: key, objectHash: hash, layoutVersion: layoutVersion)
        case .reaping(.reap(let key, let hash)):
            self = .reap(key: key, objectHash: hash)
        default:
            return nil
        }
    }

    /// What serving this request takes.
    package var work: Work {
        switch self {
        case .treeHashes: .memory
        case .keyHashes, .reapQuery: .engineReads
        case .reconcile(_, let key, let object): .write(.reconcile(key, object))
        case .reap(let key, let hash): .write(.reap(key, objectHash: hash))
        }
    }

    /// The answer to a write request once its write ran. A reap has none: its proposer
    /// does not wait.
    package func answer(to outcome: StorageOutcome) -> ReplicaMessage? {
        switch self {
        case .reconcile(let id, _, _): .antiEntropy(.reconciled(id: id, outcome: outcome))
        case .treeHashes, .keyHashes, .reapQuery, .reap: nil
        }
    }
}

extension ReplicaStore {
    /// Answers a request that asks only for reads (``MaintenanceRequest/Work/memory`` or
    /// ``MaintenanceRequest/Work/engineReads``); `nil` for a write request. Blocks on the
    /// engine for listings and reap queries. `reaperView` is asked only for a reap query.
    package func answer(
        _ request: MaintenanceRequest, keysPerListing: Int, reaperView: () -> ReaperView
    ) -> ReplicaMessage? {
        switch request {
        case .treeHashes(let id, let partition, let segments):
            guard let tree = antiEntropy.tree(of: partition) else {
                return .antiEntropy(.treeHashes(id: id, ready: false, hashes: []))
            }
            let hashes = segments.isEmpty ? tree.segmentHashes : tree.leafHashes(of: segments)
            return .antiEntropy(.treeHashes(id: id, ready: true, hashes: hashes))
        case .keyHashes(let id, let partition, let leaves, let after):
            // An unreadable listing answers "truncated" with nothing, so the asker retries
            // rather than concluding the leaves are empty.
            let listing = keyListing(partition, leaves: leaves, after: after, limit: keysPerListing)
            return .antiEntropy(
                .keyHashes(id: id, entries: listing?.entries ?? [], truncated: listing?.truncated ?? true))
        case .reapQuery(let id, let key, let hash, let layoutVersion):
            let agrees = TombstoneReaper.agrees(
                objectHash: hash, layoutVersion: layoutVersion, partition: key.partition,
                holding: holding(of: key), view: reaperView())
            return .reaping(.reapAnswer(id: id, agrees: agrees))
        case .reconcile, .reap:
            return nil
        }
    }

    /// The key hashes in `leaves` of `partition` after `after`, at most `limit` of them;
    /// `nil` when the index cannot be read. Blocks.
    package func keyListing(_ partition: PartitionID, leaves: [Int], after: [UInt8]?, limit: Int)
        -> KeyListing?
    {
        (try? AntiEntropyIndex.keyHashes(
            in: partition, leaves: leaves, after: after, engine: engine, limit: limit))
            .map { KeyListing(entries: $0.entries, truncated: $0.truncated) }
    }

    /// What this replica holds of `key`: its index entry, whatever partitions it
    /// replicates, and whether it holds a hint for the row. Blocks.
    package func holding(of key: ReplicaKey) -> RowHolding {
        let stored: [UInt8]?
        do {
            stored = try storageWork("reading an anti-entropy entry") {
                try engine.get(key.bytes, in: .antiEntropy)
            }
        } catch {
            return .unreadable
        }
        let holdsHint = hints.holdsHint(for: key.bytes)
        guard let stored else { return RowHolding(entry: nil, holdsHint: holdsHint) }
        guard let value = AntiEntropyIndex.parseIndexValue(stored) else { return .unreadable }
        // An expiring row counts as a tombstone once it has expired by this node's clock.
        let isGone = value.goneSince.map { $0 <= antiEntropy.wallMilliseconds() } ?? false
        return RowHolding(entry: .init(hash: value.hash, isTombstone: isGone), holdsHint: holdsHint)
    }

    /// Up to `limit` tombstones of `partition` at least `minimumAge` old, from the
    /// `start`th on, with what this replica holds of each: a reaping pass's candidates.
    /// Rows of tables this replica no longer knows are left out. Blocks.
    package func reapCandidates(of partition: PartitionID, limit: Int, minimumAge: Int64, start: Int)
        -> [ReapCandidate]
    {
        antiEntropy.tombstones(of: partition, limit: limit, minimumAge: minimumAge, start: start)
            .compactMap { entry in
                guard let generation = tableGeneration(of: entry.key) else { return nil }
                let key = ReplicaKey(partition: partition, bytes: entry.key, generation: generation)
                return ReapCandidate(key: key, objectHash: entry.hash, holding: holding(of: key))
            }
    }

    /// The generation of the table a data key belongs to, in this replica's catalog.
    package func tableGeneration(of dataKey: [UInt8]) -> UInt64? {
        catalog.withLockedValue { tables in
            Self.table(of: dataKey, among: tables.keys).flatMap { tables[$0]?.generation }
        }
    }

    /// Which of `names` the row with engine key `dataKey` belongs to.
    package static func table(of dataKey: [UInt8], among names: some Sequence<TableName>) -> TableName? {
        guard dataKey.count > 4 else { return nil }
        let partition = PartitionID(
            rawValue: dataKey.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        return names.first { name in
            dataKey.starts(
                with: StorageLayout.tablePrefix(
                    partition: partition, namespace: name.namespace, table: name.table))
        }
    }
}
