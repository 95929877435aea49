import KVCore

/// A message between nodes, nested by the subsystem that handles it, so each machine
/// switches over its own family only. Every request carries an id chosen by its sender;
/// the reply carries the same id back.
///
/// The nesting is the source's, not the wire's: every message keeps its own frame kind
/// (`docs/wire-protocol.md`), so the bytes are those of the flat enum before it.
public enum ReplicaMessage: Hashable, Sendable {
    /// The read and write path.
    case quorum(QuorumMessage)
    /// Cluster metadata.
    case metadata(MetadataMessage)
    /// Cluster scans.
    case scans(ScanMessage)
    /// A SWIM probe, ack or probe request, with a digest of the sender's cluster
    /// metadata: a receiver whose digest differs pushes its metadata back, so layout
    /// changes spread on the probes every member sends anyway.
    case membership(MembershipMessage, metadataDigest: UInt64)
    /// Hinted handoff.
    case hints(HintMessage)
    /// Active anti-entropy.
    case antiEntropy(AntiEntropyMessage)
    /// Tombstone reaping.
    case reaping(ReapMessage)
    /// Partition transfers.
    case transfers(TransferMessage)
}

/// The messages of the read and write path (``Coordinator``): replicating a write,
/// fetching a key, read repair, forwarding to a coordinating replica, and a stand-in's
/// hint of the sloppy quorum.
public enum QuorumMessage: Hashable, Sendable {
    /// Store `object` merged into the replica's state (the coordinator already made the
    /// new dot).
    case store(id: UInt64, key: ReplicaKey, object: StoredObject)
    /// The replica stored the object; `durable` says it is synced.
    case stored(id: UInt64, durable: Bool)
    /// Return the replica's state of `key`.
    case fetch(id: UInt64, key: ReplicaKey)
    /// The replica's state (empty when it holds nothing).
    case fetched(id: UInt64, object: StoredObject)
    /// The replica could not serve a `store` or `fetch`.
    case replicaFailed(id: UInt64, error: KVError)
    /// Read repair: merge `object` in. Nothing is answered.
    case repair(key: ReplicaKey, object: StoredObject)
    /// Coordinate this write on the sender's behalf: the receiver is a replica.
    case coordinateWrite(id: UInt64, key: ReplicaKey, write: ProposedWrite, quorum: Quorum)
    /// Coordinate this read on the sender's behalf.
    case coordinateRead(id: UInt64, key: ReplicaKey, quorum: Quorum)
    /// The outcome of a forwarded operation.
    case coordinated(id: UInt64, outcome: OperationOutcome)
    /// Sloppy quorum: keep `object` as a durable hint for `target`, a primary replica
    /// that is down, and hand it over once `target` is back. Answered by ``stored(id:durable:)``.
    case storeHint(id: UInt64, key: ReplicaKey, object: StoredObject, target: NodeID)
}

/// Cluster metadata spread by push and gossip.
public enum MetadataMessage: Hashable, Sendable {
    /// The sender's copy of the cluster metadata (``ClusterMetadata/encoded()``), to be
    /// merged. With an `id`, the receiver answers ``merged(id:)`` once it has
    /// merged and stored it; gossip sends it without one.
    case push(id: UInt64?, encoded: [UInt8])
    /// The receiver merged and stored the metadata sent with `id`.
    case merged(id: UInt64)
}

/// One node's part of a cluster scan.
public enum ScanMessage: Hashable, Sendable {
    /// Read one page of a table's rows from the receiver's replicas of `partitions`.
    case scan(id: UInt64, request: PartitionScan)
    /// The rows of a ``scan(id:request:)``.
    case scanned(id: UInt64, page: PartitionScanPage)
}

/// Hinted handoff: a hint handed back to the replica it was kept for.
public enum HintMessage: Hashable, Sendable {
    /// Hinted handoff: merge a hinted object in, as the primary replica it was held for.
    case handoff(id: UInt64, key: ReplicaKey, object: StoredObject)
    /// The answer to ``handoff(id:key:object:)``: `nil` when merged and stored.
    case handedOff(id: UInt64, error: KVError?)
}

/// Active anti-entropy: Merkle trees compared top-down, then keys, then repair.
public enum AntiEntropyMessage: Hashable, Sendable {
    /// Anti-entropy: the receiver's Merkle tree of `partition`, as its segment hashes
    /// (`segments` empty) or as the leaf hashes of the given segments.
    case treeRequest(id: UInt64, partition: PartitionID, segments: [Int])
    /// The hashes a ``treeRequest(id:partition:segments:)`` asked for; `ready` is false
    /// while the receiver is still building the tree (the hashes are then empty).
    case treeHashes(id: UInt64, ready: Bool, hashes: [UInt64])
    /// Anti-entropy: the keys and object hashes the receiver holds in the given leaves
    /// of `partition`'s tree, in key order, after `after` (exclusive) when given.
    case keyHashesRequest(id: UInt64, partition: PartitionID, leaves: [Int], after: [UInt8]?)
    /// The answer to ``keyHashesRequest(id:partition:leaves:)``; `truncated` when the
    /// answer stopped at its size limit.
    case keyHashes(id: UInt64, entries: [KeyHash], truncated: Bool)
    /// Anti-entropy repair: merge `object` in and answer with the merged state.
    case reconcile(id: UInt64, key: ReplicaKey, object: StoredObject)
    /// The answer to ``reconcile(id:key:object:)``.
    case reconciled(id: UInt64, outcome: StorageOutcome)
}

/// Tombstone reaping by agreement of every member.
public enum ReapMessage: Hashable, Sendable {
    /// Tombstone reaping: does the receiver agree that the tombstone of `key` with
    /// `objectHash` may go? It agrees only on the same layout version, holding no hint
    /// for the key, and holding that very tombstone (a replica) or nothing of the row
    /// (any other member).
    case reapQuery(id: UInt64, key: ReplicaKey, objectHash: UInt64, layoutVersion: UInt64)
    /// The answer to ``reapQuery(id:key:objectHash:)``.
    case reapAnswer(id: UInt64, agrees: Bool)
    /// Every member agreed: remove the row if it is still that tombstone.
    case reap(key: ReplicaKey, objectHash: UInt64)
}

/// Partition transfers of a layout change.
public enum TransferMessage: Hashable, Sendable {
    /// Asks a previous owner for the next batch of `partition`'s rows after `after`
    /// (from the start when `nil`), read from one engine snapshot per transfer, for
    /// layout version `layoutVersion`, at most `maximumBytes` of them.
    case transferPull(
        id: UInt64, partition: PartitionID, layoutVersion: UInt64, after: [UInt8]?, maximumBytes: Int)
    /// A batch of a transfer: the rows (`truncated` while more follow, `error` when the
    /// source cannot serve), and the source's estimate of the partition's row count.
    case transferRows(id: UInt64, page: PartitionScanPage, estimatedRows: UInt64)
    /// Asks a node for the progress of the transfers it takes part in.
    case transfersRequest(id: UInt64)
    /// The answer: ``TransferProgress/encode(_:)`` of its transfers.
    case transfersReport(id: UInt64, encoded: [UInt8])
}
