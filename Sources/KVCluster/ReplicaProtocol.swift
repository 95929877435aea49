import KVCore

/// A row as replicas name it: its partition (which decides the replicas) and its engine
/// key (which the node shell resolved from namespace, table and key parts).
///
/// The coordinator never interprets the bytes; it only routes by the partition.
public struct ReplicaKey: Hashable, Sendable, CustomStringConvertible {
    /// The row's partition.
    public var partition: PartitionID
    /// The row's key in the engine's data keyspace.
    public var bytes: [UInt8]
    /// The generation of the row's table as the node that made the key knew it, or 0
    /// for "not checked" (the simulator). A replica refuses to store or serve a key of a
    /// generation its catalog does not have: a node that missed a clear or drop must not
    /// bring the old rows back by replicating or repairing them.
    public var generation: UInt64

    /// Creates a key.
    public init(partition: PartitionID, bytes: [UInt8], generation: UInt64 = 0) {
        self.partition = partition
        self.bytes = bytes
        self.generation = generation
    }

    public var description: String { "p\(partition):\(bytes.count)B" }

}

/// A client write as it reaches a coordinator: the new version and the causal context
/// it supersedes.
public struct ProposedWrite: Hashable, Sendable {
    /// The new version: a value or a tombstone. For an increment, only its timestamp
    /// and request id count.
    public var sibling: Sibling
    /// The opened context of the client's last read, or `nil` for a blind write.
    public var context: VersionVector?
    /// A precondition the coordinating replica checks under the row lock, against the
    /// version it holds.
    public var condition: WriteCondition
    /// The generation of the table the client resolved the key against; the replica
    /// refuses the write (`table.changed`) if its table has another one.
    public var generation: UInt64
    /// When set, the write adds this to the row's counter instead of storing `sibling`'s
    /// value (see ``ReplicaRules/increment(_:by:actor:timestampMilliseconds:)``).
    public var increment: Int64?

    /// Creates a proposed write.
    public init(
        sibling: Sibling, context: VersionVector?, condition: WriteCondition = .none, generation: UInt64 = 0,
        increment: Int64? = nil
    ) {
        self.sibling = sibling
        self.context = context
        self.condition = condition
        self.generation = generation
        self.increment = increment
    }
}

/// The quorum one request asks for, resolved from the table's defaults and the
/// request's overrides (see ``ReplicationDefaults``).
public typealias Quorum = ReplicationDefaults

/// Identifies one client operation at the node that accepted it.
///
/// Forwarded operations keep the id of the node that forwarded them, so ids from
/// different nodes never collide in a coordinator's tables.
public enum OperationID: Hashable, Sendable, CustomStringConvertible {
    /// An operation a client sent to this node.
    case local(UInt64)
    /// An operation another node forwarded here because this node is a replica.
    case forwarded(from: NodeID, id: UInt64)

    public var description: String {
        switch self {
        case .local(let id): "L\(id)"
        case .forwarded(let node, let id): "F\(node)#\(id)"
        }
    }
}

/// What a client operation ends with.
public enum OperationOutcome: Hashable, Sendable {
    /// The write met its quorum; the object is the coordinator's state after the write,
    /// whose context covers the new version.
    case written(StoredObject)
    /// The read met its quorum; the object merges every reply it waited for.
    case read(StoredObject)
    /// The operation failed (`quorum.unavailable`, `write.indeterminate`, a failed
    /// precondition, a storage error…).
    case failed(KVError)
}

/// A key and the hash of its object, as anti-entropy compares them.
public struct KeyHash: Hashable, Sendable {
    /// The row's engine key.
    public var key: [UInt8]
    /// ``MerkleTree/objectHash(_:)`` of the row's object.
    public var hash: UInt64

    /// Creates a value.
    public init(key: [UInt8], hash: UInt64) {
        self.key = key
        self.hash = hash
    }
}

/// One node's part of a cluster scan: a key range of one table within some partitions
/// that the node holds.
public struct PartitionScan: Hashable, Sendable {
    /// The table prefix inside each partition's range: the encoded namespace and table.
    public var tablePrefix: [UInt8]
    /// The partitions to read.
    public var partitions: [PartitionID]
    /// The lowest encoded row key (inclusive), relative to the table prefix.
    public var lowerBound: [UInt8]
    /// The end (exclusive), or `nil` for the table's end.
    public var upperBound: [UInt8]?
    /// The most rows to return.
    public var limit: Int
    /// Whether to walk in descending key order.
    public var reverse: Bool
    /// Whether to leave values out of the returned objects.
    public var keysOnly: Bool

    /// Creates a scan.
    public init(
        tablePrefix: [UInt8], partitions: [PartitionID], lowerBound: [UInt8], upperBound: [UInt8]?,
        limit: Int,
        reverse: Bool, keysOnly: Bool
    ) {
        self.tablePrefix = tablePrefix
        self.partitions = partitions
        self.lowerBound = lowerBound
        self.upperBound = upperBound
        self.limit = limit
        self.reverse = reverse
        self.keysOnly = keysOnly
    }
}

/// What one node answers to a ``PartitionScan``.
public struct PartitionScanPage: Hashable, Sendable {
    /// Rows in scan order: the encoded row key (relative to the table prefix) and the
    /// replica's object, tombstones included (a tombstone on one replica must win over
    /// an older value on another).
    public var rows: [(key: [UInt8], object: StoredObject)]
    /// Whether the node stopped at the limit (or its answer size) with rows left.
    public var truncated: Bool
    /// Why the node could not answer, if it could not.
    public var error: KVError?

    /// Creates a page.
    public init(rows: [(key: [UInt8], object: StoredObject)], truncated: Bool, error: KVError? = nil) {
        self.rows = rows
        self.truncated = truncated
        self.error = error
    }

    public static func == (lhs: PartitionScanPage, rhs: PartitionScanPage) -> Bool {
        lhs.truncated == rhs.truncated && lhs.error == rhs.error && lhs.rows.count == rhs.rows.count
            && zip(lhs.rows, rhs.rows).allSatisfy { $0.key == $1.key && $0.object == $1.object }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(truncated)
        hasher.combine(rows.count)
        for row in rows { hasher.combine(row.key) }
    }
}

/// A storage operation the shell carries out under the row's lock, then reports back
/// with the same ticket.
public enum StorageCommand: Hashable, Sendable {
    /// Apply a client write as coordinator: load, check the precondition, apply
    /// ``ReplicaRules/coordinate(_:_:actor:)``, store, return the new object.
    case coordinate(ReplicaKey, ProposedWrite)
    /// Merge a replicated object in (``ReplicaRules/merge(_:_:)``) and store it.
    case merge(ReplicaKey, StoredObject)
    /// Load the stored object (empty if absent).
    case load(ReplicaKey)
    /// Keep `object` as a durable hint for `target` (sloppy quorum).
    case storeHint(target: NodeID, key: ReplicaKey, object: StoredObject)
    /// Merge `object` in as ``merge(_:_:)`` does, and also correct the row's
    /// anti-entropy entry from what is stored (anti-entropy's repair).
    case reconcile(ReplicaKey, StoredObject)
    /// Remove the row if its object still has `objectHash` (a tombstone every member
    /// agreed to reap); otherwise change nothing.
    case reap(ReplicaKey, objectHash: UInt64)
}

/// Why the shell runs a storage command, so its result reaches the right place.
public enum StorageTicket: Hashable, Sendable {
    /// The coordinator's own step of an operation.
    case operation(OperationID)
    /// A `store` request from a coordinator.
    case store(from: NodeID, id: UInt64)
    /// A `fetch` request from a coordinator.
    case fetch(from: NodeID, id: UInt64)
    /// A read repair; nothing waits for it.
    case repair
    /// A hinted handoff from `from`, answered with ``ReplicaMessage/handedOff(id:error:)``.
    case handoff(from: NodeID, id: UInt64)
    /// A hint the coordinator keeps itself for a replica it could not reach; nothing
    /// waits for it.
    case hint
    /// Work of the node shell (anti-entropy, reaping, hint delivery): the shell takes
    /// the result itself and the coordinator ignores it.
    case maintenance(id: UInt64)
}

/// The result of a storage command.
public enum StorageOutcome: Hashable, Sendable {
    /// The command succeeded; the object is the row's state afterwards (or as loaded).
    case object(StoredObject)
    /// The command failed.
    case failed(KVError)
}
