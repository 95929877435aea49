/// A backup a node took of itself (`POST /v1/_node/backup`).
public struct BackupReport: Hashable, Sendable {
    /// The node.
    public var nodeID: NodeID
    /// Where the backup is, on the node's machine.
    public var path: String
    /// When it was taken (milliseconds since 1970).
    public var takenAtMilliseconds: Int64
    /// The layout version the node had then.
    public var layoutVersion: UInt64

    /// Creates a report.
    public init(nodeID: NodeID, path: String, takenAtMilliseconds: Int64, layoutVersion: UInt64) {
        self.nodeID = nodeID
        self.path = path
        self.takenAtMilliseconds = takenAtMilliseconds
        self.layoutVersion = layoutVersion
    }
}

/// What a node says about itself.
public struct NodeInfo: Hashable, Sendable {
    /// The node's permanent id.
    public var nodeID: NodeID
    /// Its current incarnation.
    public var incarnation: UInt32
    /// The storage engine's name.
    public var engine: String
    /// The number of partitions of the key space.
    public var partitionCount: Int
    /// The software version.
    public var version: String
    /// Where the node's node-to-node protocol listens (`host:port`), when it has one:
    /// what a node that joins through this one connects to.
    public var peerAddress: String?

    /// Creates node info.
    public init(
        nodeID: NodeID, incarnation: UInt32, engine: String, partitionCount: Int, version: String,
        peerAddress: String? = nil
    ) {
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.engine = engine
        self.partitionCount = partitionCount
        self.version = version
        self.peerAddress = peerAddress
    }
}

/// What a node knows about its cluster: the members, the layout version and how the
/// partitions are spread.
public struct ClusterStatus: Hashable, Sendable {
    /// One member as the answering node sees it.
    public struct Member: Hashable, Sendable {
        /// The member's node id.
        public var nodeID: NodeID
        /// Where its HTTP API listens.
        public var httpAddress: String
        /// Where its node-to-node protocol listens.
        public var peerAddress: String
        /// Its zone.
        public var zone: String
        /// Its capacity weight.
        public var capacity: Int
        /// Partition replicas the layout gives it.
        public var replicas: Int
        /// Partitions whose first replica it is.
        public var primaries: Int
        /// `joining` for a member the layout does not place yet, else `self` for the
        /// answering node, `up` (connected and alive), `suspect` (connected but missing
        /// its SWIM probes, as a paused process does) or `down` (unreachable or declared
        /// dead).
        public var state: String
        /// The member's SWIM incarnation as the answering node knows it (0 if unknown).
        public var incarnation: UInt64

        /// Creates a member entry.
        public init(
            nodeID: NodeID, httpAddress: String, peerAddress: String, zone: String, capacity: Int,
            replicas: Int,
            primaries: Int, state: String, incarnation: UInt64 = 0
        ) {
            self.incarnation = incarnation
            self.nodeID = nodeID
            self.httpAddress = httpAddress
            self.peerAddress = peerAddress
            self.zone = zone
            self.capacity = capacity
            self.replicas = replicas
            self.primaries = primaries
            self.state = state
        }
    }

    /// The answering node.
    public var nodeID: NodeID
    /// The cluster's id (hexadecimal), empty while not formed.
    public var clusterID: String
    /// The layout's version (0 while not formed).
    public var layoutVersion: UInt64
    /// Partitions of the key space.
    public var partitionCount: Int
    /// Replicas per partition.
    public var replicationFactor: Int
    /// Every known member, sorted by node id.
    public var members: [Member]
    /// The answering node's failure-handling counters by stable name: hints pending,
    /// stored and delivered, anti-entropy exchanges, divergence and repairs, tombstones
    /// held and reaped (`docs/anti-entropy.md` lists them).
    public var counters: [String: Int64]

    /// Creates a status.
    public init(
        nodeID: NodeID, clusterID: String, layoutVersion: UInt64, partitionCount: Int, replicationFactor: Int,
        members: [Member], counters: [String: Int64] = [:]
    ) {
        self.counters = counters
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.layoutVersion = layoutVersion
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.members = members
    }
}

/// A cluster's layout as served over HTTP: each partition's ordered replicas.
public struct LayoutDescription: Hashable, Sendable {
    /// The layout version.
    public var version: UInt64
    /// Replicas per partition.
    public var replicationFactor: Int
    /// For each partition, its replicas in preference order.
    public var partitions: [[NodeID]]

    /// Creates a description.
    public init(version: UInt64, replicationFactor: Int, partitions: [[NodeID]]) {
        self.version = version
        self.replicationFactor = replicationFactor
        self.partitions = partitions
    }
}
