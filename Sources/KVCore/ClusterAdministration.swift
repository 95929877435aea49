/// A layout change to stage, as the CLI and the HTTP API name it
/// (`POST /v1/_cluster/stage`).
public struct LayoutChangeRequest: Codable, Hashable, Sendable {
    /// `join`, `leave`, `replace`, `set-capacity` or `set-zone`.
    public var change: String
    /// The node: its id (16 hex digits), its `--node-name`, or its HTTP address.
    public var node: String
    /// For `replace`: the node that takes over.
    public var replacement: String?
    /// For `set-capacity`: the new weight.
    public var capacity: Int?
    /// For `set-zone`: the new zone.
    public var zone: String?
    /// For `leave` and `replace`: do not wait for the old node's copies (it is gone).
    public var force: Bool?

    /// Creates a request.
    public init(
        change: String, node: String, replacement: String? = nil, capacity: Int? = nil, zone: String? = nil,
        force: Bool? = nil
    ) {
        self.change = change
        self.node = node
        self.replacement = replacement
        self.capacity = capacity
        self.zone = zone
        self.force = force
    }
}

/// What committing the staged changes would do (`GET /v1/_cluster/plan`), or did (the
/// answer of `POST /v1/_cluster/commit`).
public struct LayoutPlanReport: Codable, Hashable, Sendable {
    /// One partition whose replicas change.
    public struct Move: Codable, Hashable, Sendable {
        /// The partition.
        public var partition: Int
        /// Its replicas now (node ids).
        public var from: [String]
        /// Its replicas after the commit.
        public var to: [String]

        /// Creates a move.
        public init(partition: Int, from: [String], to: [String]) {
            self.partition = partition
            self.from = from
            self.to = to
        }
    }

    /// The plan's id, which a commit must give; `nil` when nothing is staged.
    public var id: String?
    /// The layout version now.
    public var currentVersion: UInt64
    /// The version a commit makes.
    public var proposedVersion: UInt64
    /// The staged changes, one line each.
    public var changes: [String]
    /// The partitions whose replicas change.
    public var moves: [Move]
    /// The partition copies that travel.
    public var movedReplicas: Int
    /// Roughly how many bytes travel, from this node's average partition size.
    public var estimatedBytes: UInt64
    /// Replicas per node after the commit.
    public var replicasPerNode: [String: Int]
    /// Whether a layout change is still moving data (a commit now redirects it).
    public var transitionInProgress: Bool

    /// Creates a report.
    public init(
        id: String?, currentVersion: UInt64, proposedVersion: UInt64, changes: [String], moves: [Move],
        movedReplicas: Int, estimatedBytes: UInt64, replicasPerNode: [String: Int], transitionInProgress: Bool
    ) {
        self.id = id
        self.currentVersion = currentVersion
        self.proposedVersion = proposedVersion
        self.changes = changes
        self.moves = moves
        self.movedReplicas = movedReplicas
        self.estimatedBytes = estimatedBytes
        self.replicasPerNode = replicasPerNode
        self.transitionInProgress = transitionInProgress
    }

    public enum CodingKeys: String, CodingKey {
        case id, changes, moves
        case currentVersion = "current_version"
        case proposedVersion = "proposed_version"
        case movedReplicas = "moved_replicas"
        case estimatedBytes = "estimated_bytes"
        case replicasPerNode = "replicas_per_node"
        case transitionInProgress = "transition_in_progress"
    }
}

/// The body of `POST /v1/_cluster/commit`.
public struct LayoutCommitRequest: Codable, Hashable, Sendable {
    /// The id of the plan to commit.
    public var plan: String

    /// Creates a request.
    public init(plan: String) { self.plan = plan }
}

/// Changes to how transfers run (`POST /v1/_cluster/transfers`); absent fields stay.
public struct TransferControlRequest: Codable, Hashable, Sendable {
    /// Pause (`true`) or resume (`false`) every transfer.
    public var paused: Bool?
    /// The most transfers in the whole cluster at once.
    public var clusterConcurrency: Int?
    /// The most transfers one node receives (and serves) at once.
    public var nodeConcurrency: Int?
    /// The most bytes per second one node receives; 0 is no limit.
    public var bytesPerSecond: Int?

    /// Creates a request.
    public init(
        paused: Bool? = nil, clusterConcurrency: Int? = nil, nodeConcurrency: Int? = nil,
        bytesPerSecond: Int? = nil
    ) {
        self.paused = paused
        self.clusterConcurrency = clusterConcurrency
        self.nodeConcurrency = nodeConcurrency
        self.bytesPerSecond = bytesPerSecond
    }

    public enum CodingKeys: String, CodingKey {
        case paused
        case clusterConcurrency = "cluster_concurrency"
        case nodeConcurrency = "node_concurrency"
        case bytesPerSecond = "bytes_per_second"
    }
}

/// The partition transfers of the layout change in progress
/// (`GET /v1/_cluster/transfers`).
public struct TransfersReport: Codable, Hashable, Sendable {
    /// One partition on its way to one new owner.
    public struct Transfer: Codable, Hashable, Sendable {
        /// The partition.
        public var partition: Int
        /// The new owner receiving it.
        public var destination: String
        /// The previous owner sending it, while one does.
        public var source: String?
        /// `waiting`, `running`, `paused`, `received` (the new owner has it all),
        /// `releasing` (a previous owner checks the new owners hold its copy) or
        /// `released`.
        public var state: String
        /// Rows received so far.
        public var rows: UInt64
        /// Bytes received so far.
        public var bytes: UInt64
        /// The source's estimate of the partition's rows.
        public var estimatedRows: UInt64
        /// The recent rate.
        public var bytesPerSecond: UInt64
        /// Seconds left at the recent rate, when known.
        public var etaSeconds: Double?
        /// Batches received.
        public var batches: UInt64
        /// Batches the source sent twice (a resumed transfer re-sends at most the batch
        /// in flight).
        public var resentBatches: UInt64

        /// Creates a transfer.
        public init(
            partition: Int, destination: String, source: String?, state: String, rows: UInt64 = 0,
            bytes: UInt64 = 0,
            estimatedRows: UInt64 = 0, bytesPerSecond: UInt64 = 0, etaSeconds: Double? = nil,
            batches: UInt64 = 0,
            resentBatches: UInt64 = 0
        ) {
            self.partition = partition
            self.destination = destination
            self.source = source
            self.state = state
            self.rows = rows
            self.bytes = bytes
            self.estimatedRows = estimatedRows
            self.bytesPerSecond = bytesPerSecond
            self.etaSeconds = etaSeconds
            self.batches = batches
            self.resentBatches = resentBatches
        }

        public enum CodingKeys: String, CodingKey {
            case partition, destination, source, state, rows, bytes, batches
            case estimatedRows = "estimated_rows"
            case bytesPerSecond = "bytes_per_second"
            case etaSeconds = "eta_seconds"
            case resentBatches = "resent_batches"
        }
    }

    /// The layout version the transfers lead to.
    public var layoutVersion: UInt64
    /// Whether a layout change is in progress.
    public var inProgress: Bool
    /// Whether transfers are paused.
    public var paused: Bool
    /// The cluster-wide concurrency limit.
    public var clusterConcurrency: Int
    /// The per-node concurrency limit.
    public var nodeConcurrency: Int
    /// The per-node byte rate limit (0: none).
    public var bytesPerSecond: Int
    /// How many (partition, new owner) transfers the change needs, and how many are done.
    public var total: Int
    /// How many are received.
    public var received: Int
    /// How many partitions still wait for a previous owner to release them.
    public var unreleased: Int
    /// Every transfer not yet received, and the ones in flight, with progress.
    public var transfers: [Transfer]

    /// Creates a report.
    public init(
        layoutVersion: UInt64, inProgress: Bool, paused: Bool, clusterConcurrency: Int, nodeConcurrency: Int,
        bytesPerSecond: Int, total: Int, received: Int, unreleased: Int, transfers: [Transfer]
    ) {
        self.layoutVersion = layoutVersion
        self.inProgress = inProgress
        self.paused = paused
        self.clusterConcurrency = clusterConcurrency
        self.nodeConcurrency = nodeConcurrency
        self.bytesPerSecond = bytesPerSecond
        self.total = total
        self.received = received
        self.unreleased = unreleased
        self.transfers = transfers
    }

    public enum CodingKeys: String, CodingKey {
        case paused, total, received, unreleased, transfers
        case layoutVersion = "layout_version"
        case inProgress = "in_progress"
        case clusterConcurrency = "cluster_concurrency"
        case nodeConcurrency = "node_concurrency"
        case bytesPerSecond = "bytes_per_second"
    }
}
