import KVCluster
import KVCore
import KVStorage
import KVStorageMemory

/// What one simulated run does: the cluster, the workload and the faults. Every choice
/// not fixed here is drawn from the seed.
public struct SimulationConfiguration: Hashable, Sendable {
    /// Decides everything else.
    public var seed: UInt64
    /// Nodes in the cluster.
    public var nodeCount: Int
    /// Replicas per key (the layout's replication factor and every request's n).
    public var replicationFactor: Int
    /// Partitions of the layout.
    public var partitionCount: Int
    /// Distinct keys the clients contend on.
    public var keyCount: Int
    /// Concurrent clients; each runs its operations one after another.
    public var clientCount: Int
    /// Operations per client.
    public var operationsPerClient: Int
    /// Whether the network drops, delays, duplicates and reorders messages, partitions
    /// nodes, and nodes crash and restart, while the workload runs.
    public var faults: Bool
    /// Whether the layout changes while the workload runs: the last node starts unplaced
    /// and joins, then a node may leave (committed through ``ClusterMetadata``, spread to
    /// each node after its own delay, partitions handed off from snapshots).
    public var layoutChanges: Bool
    /// Whether some of the writes go to a last-writer-wins key, blind and with clocks that
    /// often tie, whose replicas must end on one and the same value. Off by default, so
    /// the seeds of other runs replay the same.
    public var lastWriterWins: Bool
    /// Whether, while faults are on, about one in five of the writes that record a
    /// handoff's progress fail as a failing disk's would, with nothing stored: a batch of
    /// a transfer's rows, its cursor, a batch of receipts or releases, the drop of a
    /// copy. The machines must take the failure and try again, and nothing may count as
    /// done that was not. Off by default, so the seeds of other runs replay the same.
    public var failingWrites: Bool

    /// A deliberate defect in how replicas apply writes, so tests can show that each
    /// checker catches what it is meant to. `nil` in every real run.
    public var injectedBug: InjectedBug?

    /// Deliberate defects (see ``injectedBug``).
    public enum InjectedBug: Hashable, Sendable, CaseIterable {
        /// Replicas acknowledge stores and repairs without applying them: replicas never
        /// converge.
        case replicasIgnoreStores
        /// Nothing is stored at all, yet writes are acknowledged: writes are lost.
        case nothingIsStored
        /// Merging keeps every value of both sides, superseded or not: false siblings.
        case mergeKeepsSupersededValues
        /// A node that lost its disk comes back under its old incarnation and reuses
        /// its dots: writes are lost (P4).
        case amnesiaReusesIncarnation
        /// A hint's target acknowledges the handoff without storing it: hints are
        /// removed as delivered while nobody holds them (the hint checker).
        case handoffsAreIgnored
        /// Replicas apply writes whatever their `If-Match` or `If-None-Match` condition:
        /// a conditional write lands beside a version its client never saw.
        case conditionsAreIgnored
        /// Increments add the magnitude of their delta, losing its sign: the counter
        /// ends at a value no set of increments adds up to.
        case incrementsLoseTheirSign
        /// A member agrees to reap a tombstone whatever its own copy of the row holds:
        /// a replica that missed the delete keeps the old value, which comes back once
        /// the others reaped the tombstone (the reaping checker).
        case reapersIgnoreTheirCopy
        /// A transfer's source skips the first row after the receiver's cursor: the new
        /// owner counts the partition as received without it (the transfer checker).
        case transfersSkipARow
        /// Nodes push nothing: only the node an operator commits through learns of a
        /// change (the gossip checker).
        case gossipPushesNothing
        /// A previous owner takes its merges into a new owner as done without sending
        /// them: it releases or drops a copy whose rows the owners lack (the release
        /// checker).
        case releasesPushNothing
        /// A node never reopens a silent connection: its requests to that peer go
        /// unanswered for good, and what waits on them never finishes.
        case silentConnectionsStay
        /// A receiver's batch of transfer rows that failed to be stored is reported as
        /// stored: the machine moves its cursor past rows the node never wrote (the
        /// transfer checker; runs with ``SimulationConfiguration/failingWrites``).
        case failedStoresCountAsStored
    }

    /// Creates a configuration; the defaults are the CI sweep's.
    public init(
        seed: UInt64, nodeCount: Int = 5, replicationFactor: Int = 3, partitionCount: Int = 16,
        keyCount: Int = 3, clientCount: Int = 4, operationsPerClient: Int = 25, faults: Bool = true,
        layoutChanges: Bool = true, lastWriterWins: Bool = false, failingWrites: Bool = false,
        injectedBug: InjectedBug? = nil
    ) {
        self.layoutChanges = layoutChanges
        self.lastWriterWins = lastWriterWins
        self.failingWrites = failingWrites
        self.injectedBug = injectedBug
        self.seed = seed
        self.nodeCount = nodeCount
        self.replicationFactor = replicationFactor
        self.partitionCount = partitionCount
        self.keyCount = keyCount
        self.clientCount = clientCount
        self.operationsPerClient = operationsPerClient
        self.faults = faults
    }
}

/// The handoff's writes that ``SimulationConfiguration/failingWrites`` makes fail.
public enum HandoffWrite: String, CaseIterable, Hashable, Sendable {
    /// A batch of a transfer's rows.
    case rows
    /// A transfer's cursor.
    case cursor
    /// A batch of receipts in the metadata.
    case receipts
    /// A batch of releases in the metadata.
    case releases
    /// The drop of a copy no layout in use places on the node.
    case drop
}

/// The result of one run.
public struct SimulationReport: Sendable, CustomStringConvertible {
    /// The seed that replays this run.
    public var seed: UInt64
    /// Client operations that ended, by kind of outcome.
    public var writesAcknowledged = 0
    /// Writes that failed or were indeterminate.
    public var writesNotAcknowledged = 0
    /// Reads that met their quorum.
    public var readsSucceeded = 0
    /// Reads that failed.
    public var readsFailed = 0
    /// Messages the network dropped.
    public var messagesDropped = 0
    /// Messages the network delivered twice.
    public var messagesDuplicated = 0
    /// Connections that went silent, and those their node reopened.
    public var silentConnections = 0
    public var connectionsReopened = 0
    /// Node crashes.
    public var crashes = 0
    /// Disks lost (a crash that also wiped the node's data).
    public var disksLost = 0
    /// Hints left undelivered after healing (a violation when not 0).
    public var hintsLeft = 0
    /// Hints handed back and removed.
    public var hintsDelivered = 0
    /// Counter increments acknowledged.
    public var incrementsAcknowledged = 0
    /// Writes to the last-writer-wins key acknowledged.
    public var lastWriterWritesAcknowledged = 0
    /// Conditional writes refused because the row had changed (`precondition.failed`).
    public var conditionsNotMet = 0
    /// The largest number of siblings any read returned.
    public var largestSiblingCount = 0
    /// Layout changes committed.
    public var layoutChanges = 0
    /// Partitions handed off to a new owner.
    public var partitionsHandedOff = 0
    /// Handoff writes failed on purpose (``SimulationConfiguration/failingWrites``), by kind.
    public var handoffWritesFailed: [HandoffWrite: Int] = [:]
    /// Tombstone copies reaped.
    public var tombstonesReaped = 0
    /// Keys that anti-entropy exchanges merged back into a replica.
    public var keysRepaired = 0
    /// Virtual milliseconds the run took.
    public var virtualMilliseconds: Int64 = 0
    /// Every broken property, one sentence each. Empty when the run passed.
    public var violations: [String] = []

    /// Whether every checker passed.
    public var passed: Bool { violations.isEmpty }

    /// The runner's flags for the run's configuration where it differs from the
    /// runner's defaults (set by the simulation).
    public var configurationFlags = ""

    /// The one-line command that replays this run with a trace.
    public var replayCommand: String { "swift run Simulator --seed \(seed)\(configurationFlags) --trace" }

    public var description: String {
        var text =
            "seed \(seed): \(writesAcknowledged) writes acknowledged, \(writesNotAcknowledged) not, \(conditionsNotMet) refused by their condition; \(incrementsAcknowledged) increments acknowledged; "
            + "\(readsSucceeded) reads succeeded, \(readsFailed) failed; \(messagesDropped) messages dropped, "
            + "\(messagesDuplicated) duplicated; \(silentConnections) connections silent, \(connectionsReopened) reopened; \(crashes) crashes, \(disksLost) disks lost; \(layoutChanges) layout changes, \(partitionsHandedOff) partitions handed off, \(handoffWritesFailed.values.reduce(0, +)) handoff writes failed; \(tombstonesReaped) tombstones reaped, \(keysRepaired) keys repaired by anti-entropy; at most \(largestSiblingCount) siblings; "
            + "\(virtualMilliseconds) virtual ms"
        if !passed {
            text += "\nFAILED:\n" + violations.map { "  - \($0)" }.joined(separator: "\n")
            text += "\nreplay: \(replayCommand)"
        }
        return text
    }
}

/// A deterministic simulation of a cluster: every node runs the production
/// ``Coordinator`` and ``Membership`` over an in-memory engine; a seeded generator
/// drives the network, the faults and the clients in virtual time.
///
/// ## Phases
///
/// 1. **Workload.** Clients read, write with the context of their last read, write
///    blind, and delete with a context, against random nodes, while (with faults on)
///    the network drops, delays (which reorders) and duplicates messages, partitions
///    the cluster, nodes crash and restart with their synced data, and one node may
///    lose its disk (it restarts empty, under a new incarnation). Node clocks run at
///    different rates (their timers and probes fire early or late). SWIM decides who is
///    up, so writes for down primaries go to stand-ins as hints, which are handed back.
///    The layout changes (a join, then perhaps a leave, sometimes while the previous
///    change still moves data): each node learns the metadata after its own delay, new
///    owners copy their partitions from a previous owner's snapshot, previous owners
///    that leave push what the new owners lack before the partition retires, and copies
///    no layout in use places are dropped.
/// 2. **Healing.** Faults stop, crashed nodes restart, membership settles and hints are
///    delivered for 15 virtual seconds, in-flight work drains.
/// 3. **Anti-entropy.** Two passes compare every pair of replicas of every partition
///    with ``MerkleTree``s and merge the keys that differ.
/// 4. **Final reads.** Each key is read with R = N.
///
/// ## Checkers
///
/// - **No acknowledged write is lost (P1).** Every acknowledged write is in the final
///   read, or causally superseded: some write that is in the final read (or is itself
///   superseded) was made with a context from a read that returned it.
/// - **No resurrection (P5).** No value an acknowledged delete saw is live in the end.
/// - **No false siblings, and siblings bounded (P15).** The siblings of every read are
///   pairwise concurrent, and a key ends with at most one sibling per client plus the
///   writes whose outcome their client never learned.
/// - **Repair stops (P16).** The second anti-entropy pass repairs nothing.
/// - **Convergence (P9).** After the final reads every replica of every key holds the
///   same state.
/// - **Membership and hints settle.** After healing every node sees every other alive
///   and no hint is left.
/// - **Layout changes finish (P7).** After healing no partition is still moving, and
///   the checkers above read the final layout's replicas.
/// - **Liveness.** Every client operation ends (the coordinator's timers guarantee an
///   answer).
///
/// Each write's value names it (`w<number>`), and a tombstone carries its number in
/// its informational timestamp, so a read tells the checker exactly which writes it saw.
public struct Simulation {
    /// The configuration.
    public let configuration: SimulationConfiguration
    /// Called with each line of the trace, when tracing.
    public var trace: ((String) -> Void)?

    /// Creates a simulation.
    public init(_ configuration: SimulationConfiguration, trace: ((String) -> Void)? = nil) {
        self.configuration = configuration
        self.trace = trace
    }

    /// Runs it to the end and checks every property.
    public func run() -> SimulationReport {
        var world = SimulatedWorld(configuration, trace: trace)
        return world.run()
    }
}
