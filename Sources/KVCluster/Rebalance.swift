import KVCore

/// One staged change to the layout, applied by ``ClusterMetadata/committed(plan:by:)``.
public enum LayoutChange: Hashable, Sendable, CustomStringConvertible {
    /// Place a known member that the layout does not place yet.
    case join(NodeID)
    /// Take a member out of the layout once its partitions are handed off. With `force`
    /// its copies are not waited for (a node that is gone for good): the other replicas
    /// are the sources.
    case leave(NodeID, force: Bool)
    /// Give every partition replica of the first node to the second, a member the layout
    /// does not place yet. With `force` the old node's copies are not waited for.
    case replace(NodeID, with: NodeID, force: Bool)
    /// Change a placed member's weight.
    case setCapacity(NodeID, Int)
    /// Move a placed member to another failure domain.
    case setZone(NodeID, String)

    /// The node the change is about.
    public var node: NodeID {
        switch self {
        case .join(let node), .leave(let node, _), .replace(let node, _, _), .setCapacity(let node, _),
            .setZone(let node, _):
            node
        }
    }

    public var description: String {
        switch self {
        case .join(let node): "join \(node)"
        case .leave(let node, let force): "leave \(node)\(force ? " (forced)" : "")"
        case .replace(let old, let new, let force): "replace \(old) with \(new)\(force ? " (forced)" : "")"
        case .setCapacity(let node, let capacity): "set-capacity \(node) \(capacity)"
        case .setZone(let node, let zone): "set-zone \(node) \(zone)"
        }
    }
}

/// The changes staged for the next layout, replaced whole (the later stamp wins when two
/// copies meet).
public struct StagedLayoutChanges: Hashable, Sendable {
    /// The changes, in the order they were staged.
    public var changes: [LayoutChange]
    /// The stamp of the last staging, clearing or commit.
    public var stamp: MetadataStamp

    /// Creates staged changes.
    public init(
        changes: [LayoutChange] = [], stamp: MetadataStamp = MetadataStamp(time: 0, node: NodeID(rawValue: 0))
    ) {
        self.changes = changes
        self.stamp = stamp
    }

    /// The most changes one plan may stage.
    public static let maximumChanges = 256
}

/// How hard the cluster may push handoffs, set by an operator for the whole cluster.
public struct HandoffControl: Hashable, Sendable {
    /// Whether transfers wait (a batch in flight finishes).
    public var paused: Bool
    /// The most partition transfers running in the whole cluster at once.
    public var clusterConcurrency: Int
    /// The most partition transfers one node receives, and serves, at once.
    public var nodeConcurrency: Int
    /// The most bytes per second one node receives over all its transfers; 0 is no limit.
    public var bytesPerSecond: Int
    /// The stamp of the last change (the later wins).
    public var stamp: MetadataStamp

    /// The defaults: not paused, 16 transfers in the cluster, 4 per node, 64 MiB/s per
    /// node. A transfer waits for each batch before it asks for the next, so a few run at
    /// once per node to keep the link and the disk busy (measured: 2 per node moved a
    /// join's 157 MiB in 20 s on loopback, 4 in 12 s).
    public init(
        paused: Bool = false, clusterConcurrency: Int = 16, nodeConcurrency: Int = 4,
        bytesPerSecond: Int = 64 << 20,
        stamp: MetadataStamp = MetadataStamp(time: 0, node: NodeID(rawValue: 0))
    ) {
        self.paused = paused
        self.clusterConcurrency = clusterConcurrency
        self.nodeConcurrency = nodeConcurrency
        self.bytesPerSecond = bytesPerSecond
        self.stamp = stamp
    }

    /// Every way the values are out of range, one sentence each.
    public func problems() -> [String] {
        var problems: [String] = []
        if !(1...1024).contains(clusterConcurrency) {
            problems.append(
                "the cluster-wide transfer concurrency must be 1 to 1024, not \(clusterConcurrency)")
        }
        if !(1...64).contains(nodeConcurrency) {
            problems.append("the per-node transfer concurrency must be 1 to 64, not \(nodeConcurrency)")
        }
        if !(0...(1 << 40)).contains(bytesPerSecond) {
            problems.append("the transfer rate must be 0 (no limit) to 1 TiB/s, not \(bytesPerSecond)")
        }
        return problems
    }
}

/// One (partition, node) pair of a layout change: a destination that must receive the
/// partition, or a previous owner that must confirm before it drops its copy.
public struct TransferSlot: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The partition.
    public var partition: PartitionID
    /// The node.
    public var node: NodeID

    /// Creates a slot.
    public init(partition: PartitionID, node: NodeID) {
        self.partition = partition
        self.node = node
    }

    public static func < (lhs: TransferSlot, rhs: TransferSlot) -> Bool {
        (lhs.partition, lhs.node) < (rhs.partition, rhs.node)
    }

    public var description: String { "p\(partition)→\(node)" }
}

/// A layout change in progress: the layout whose owners hold everything (`previous`),
/// moving towards the metadata's current layout (the target).
///
/// Per partition it goes through three phases, each visible to every node from the
/// metadata alone:
/// 1. **moving**: some new owners have not received the partition. Writes go to the
///    union of both replica sets and need their quorum in each; reads go to the
///    previous owners.
/// 2. **releasing**: every new owner has received it, and each previous owner that
///    leaves it merges into the new owners whatever they do not hold as it does (rows
///    the source of a transfer lacked: with W < N no single replica has every write).
///    Reads still go to the previous owners.
/// 3. **retired**: every leaving owner released it. Every write acknowledged before has
///    a write quorum among the new owners, so reads go to them.
///
/// Writes go to both sets until the whole change is over, and previous owners keep
/// their copies until then, so a node that learns of a retirement late still reads a
/// set that has every write. The sets only grow, so copies merge by union; once every
/// partition is retired the transition is over and the metadata drops it.
public struct LayoutTransition: Hashable, Sendable {
    /// The layout whose owners hold everything.
    public var previous: Layout
    /// Previous owners that are not waited for: gone for good (forced leave or replace).
    public var abandoned: Set<NodeID>
    /// New owners that received their partition.
    public var received: Set<TransferSlot>
    /// Previous owners that confirmed the new owners hold their copy.
    public var released: Set<TransferSlot>

    /// Creates a transition.
    public init(
        previous: Layout, abandoned: Set<NodeID> = [], received: Set<TransferSlot> = [],
        released: Set<TransferSlot> = []
    ) {
        self.previous = previous
        self.abandoned = abandoned
        self.received = received
        self.released = released
    }

    /// The new owners of `partition` in `target` that must receive it.
    public func destinations(of partition: PartitionID, in target: Layout) -> [NodeID] {
        // Preference lists are short: searching them is cheaper than hashing them, and
        // these run for every partition at every metadata change.
        let before = previous.replicas(of: partition)
        return target.replicas(of: partition).filter { !before.contains($0) }
    }

    /// The previous owners of `partition` that must confirm before it retires.
    public func leavers(of partition: PartitionID, in target: Layout) -> [NodeID] {
        let after = target.replicas(of: partition)
        return previous.replicas(of: partition).filter { !after.contains($0) && !abandoned.contains($0) }
    }

    /// Whether every new owner of `partition` received it.
    public func isSettled(_ partition: PartitionID, in target: Layout) -> Bool {
        destinations(of: partition, in: target).allSatisfy {
            received.contains(TransferSlot(partition: partition, node: $0))
        }
    }

    /// The previous owners of `partition` that must merge what they hold into the new
    /// owners before it retires: the leavers, and when a previous owner was abandoned
    /// (its copy is gone) every previous owner that stays as well, since the one source a
    /// new owner copied need not hold every write the abandoned node held.
    public func releasers(of partition: PartitionID, in target: Layout) -> [NodeID] {
        let leaving = leavers(of: partition, in: target)
        let before = previous.replicas(of: partition)
        guard before.contains(where: abandoned.contains) else { return leaving }
        let after = Set(target.replicas(of: partition))
        return leaving + before.filter { after.contains($0) && !abandoned.contains($0) }
    }

    /// Whether `partition` is settled and every previous owner that must released it.
    public func isRetired(_ partition: PartitionID, in target: Layout) -> Bool {
        isSettled(partition, in: target)
            && releasers(of: partition, in: target).allSatisfy {
                released.contains(TransferSlot(partition: partition, node: $0))
            }
    }

    /// Whether every partition is retired.
    public func isComplete(in target: Layout) -> Bool {
        (0..<target.partitionCount).allSatisfy { isRetired(PartitionID(rawValue: UInt32($0)), in: target) }
    }

    /// Every transfer still to make, in the order the cluster-wide limit admits them:
    /// spread over partitions and destinations by a stable hash, so the first admitted
    /// are not all one node's.
    public func pendingTransfers(in target: Layout) -> [TransferSlot] {
        // Each slot's rank is hashed once, not at every comparison: new owners compute
        // this list whenever a transfer may start.
        var pending: [(rank: UInt64, slot: TransferSlot)] = []
        for index in 0..<target.partitionCount {
            let partition = PartitionID(rawValue: UInt32(index))
            for node in destinations(of: partition, in: target)
            where !received.contains(TransferSlot(partition: partition, node: node)) {
                pending.append((Layout.rank(index, node), TransferSlot(partition: partition, node: node)))
            }
        }
        return pending.sorted { ($0.rank, $0.slot) < ($1.rank, $1.slot) }.map(\.slot)
    }

    /// The nodes that may send `partition` to a new owner, best first: previous owners
    /// that leave it (their copy goes away, and a replaced node holds exactly it), then
    /// those that keep it; never an abandoned node.
    public func sources(of partition: PartitionID, in target: Layout) -> [NodeID] {
        let leaving = leavers(of: partition, in: target)
        let staying = previous.replicas(of: partition).filter {
            !leaving.contains($0) && !abandoned.contains($0)
        }
        return leaving + staying
    }
}

/// Where the coordinator sends a key's reads and writes: the layout, and for partitions
/// of a layout change in progress the previous owners (see ``LayoutTransition``).
public struct Placement: Hashable, Sendable {
    /// The current (target) layout.
    public var layout: Layout
    /// For partitions that move: the previous owners, which get every write until the
    /// change is over.
    public var previousOwners: [PartitionID: [NodeID]]
    /// Partitions not yet retired: reads go to their previous owners.
    public var readsFromPrevious: Set<PartitionID>

    /// A placement with no change in progress.
    public init(layout: Layout) {
        self.layout = layout
        previousOwners = [:]
        readsFromPrevious = []
    }

    /// The placement of `layout` while `transition` (towards it) is in progress.
    public init(layout: Layout, transition: LayoutTransition?) {
        self.init(layout: layout)
        guard let transition, transition.previous.partitionCount == layout.partitionCount else { return }
        for index in 0..<layout.partitionCount {
            let partition = PartitionID(rawValue: UInt32(index))
            let previous = transition.previous.replicas(of: partition)
            let current = layout.replicas(of: partition)
            // The same nodes in any order (short lists: searched, not hashed).
            guard !(previous.allSatisfy(current.contains) && current.allSatisfy(previous.contains)) else {
                continue
            }
            previousOwners[partition] = previous
            if !transition.isRetired(partition, in: layout) { readsFromPrevious.insert(partition) }
        }
    }

    /// The replicas reads of `partition` go to, in order.
    public func readReplicas(of partition: PartitionID) -> [NodeID] {
        readsFromPrevious.contains(partition)
            ? previousOwners[partition] ?? layout.replicas(of: partition) : layout.replicas(of: partition)
    }

    /// The replica sets a write to `partition` needs its quorum in: the layout's, then
    /// the previous owners' while the change is in progress.
    public func writeSets(of partition: PartitionID) -> [[NodeID]] {
        if let previous = previousOwners[partition] { return [layout.replicas(of: partition), previous] }
        return [layout.replicas(of: partition)]
    }
}

/// What committing the staged changes would do: the new layout and what moves.
public struct LayoutPlan: Hashable, Sendable {
    /// One partition whose replicas change.
    public struct Move: Hashable, Sendable {
        /// The partition.
        public var partition: PartitionID
        /// Its replicas now.
        public var from: [NodeID]
        /// Its replicas after the commit.
        public var to: [NodeID]
    }

    /// Names this plan: a commit must give it, and is refused once the layout or the
    /// staged changes differ from what the plan was made of.
    public var id: String
    /// The staged changes.
    public var changes: [LayoutChange]
    /// The current layout.
    public var current: Layout
    /// The layout a commit makes.
    public var proposed: Layout
    /// The partitions whose replicas change.
    public var moves: [Move]
    /// Owners not waited for (forced leaves and replaces).
    public var abandoned: Set<NodeID>

    /// How many (partition, node) replicas the new layout adds: the partition copies
    /// that travel.
    public var movedReplicas: Int {
        moves.reduce(0) { total, move in total + Set(move.to).subtracting(move.from).count }
    }
}

extension ClusterMetadata {
    /// Members that left for good: their leave or replace was committed and no layout in
    /// use places them any more. They are not probed, not asked to agree, and cannot
    /// join again under the same node id.
    public var departed: Set<NodeID> {
        var inUse = Set(layout?.members.map(\.node) ?? [])
        // An abandoned node is gone for good: it holds nothing anyone waits for.
        if let transition {
            inUse.formUnion(
                transition.previous.members.map(\.node).filter { !transition.abandoned.contains($0) })
        }
        return departing.subtracting(inUse)
    }

    /// The members that take part in the cluster's agreements and probes: every member
    /// but the departed.
    public var activeMembers: [NodeID] {
        let gone = departed
        return members.keys.filter { !gone.contains($0) }.sorted()
    }

    /// Previous owners of the change in progress that the current layout no longer
    /// places: a forced leave may still abandon them.
    var previousHolders: Set<NodeID> {
        guard let transition else { return [] }
        let placed = Set(layout?.members.map(\.node) ?? [])
        return Set(transition.previous.members.map(\.node)).subtracting(placed).subtracting(
            transition.abandoned)
    }

    /// Where reads and writes go now.
    public var placement: Placement? {
        guard let layout else { return nil }
        return Placement(layout: layout, transition: transition)
    }

    /// Adds `change` to the staged changes, after checking it against the members and the
    /// layout as they are (a plan checks the whole list again).
    public mutating func stage(_ change: LayoutChange, by node: NodeID) throws(KVError) {
        guard let layout else { throw KVError(.unavailable, "the cluster is not formed yet") }
        guard staged.changes.count < StagedLayoutChanges.maximumChanges else {
            throw KVError(
                .invalidRequest, "at most \(StagedLayoutChanges.maximumChanges) changes can be staged at once"
            )
        }
        var changes = staged.changes
        changes.append(change)
        _ = try Self.proposedLayout(
            changes, members: members, departed: departing, current: layout, stillHolding: previousHolders)
        clock = Self.next(after: clock)
        staged = StagedLayoutChanges(changes: changes, stamp: MetadataStamp(time: clock, node: node))
    }

    /// Drops every staged change.
    public mutating func clearStaged(by node: NodeID) {
        clock = Self.next(after: clock)
        staged = StagedLayoutChanges(changes: [], stamp: MetadataStamp(time: clock, node: node))
    }

    /// Changes how transfers run.
    public mutating func control(by node: NodeID, _ change: (inout HandoffControl) -> Void) throws(KVError) {
        var next = handoffControl
        change(&next)
        let problems = next.problems()
        guard problems.isEmpty else { throw KVError(.invalidRequest, problems.joined(separator: "; ")) }
        clock = Self.next(after: clock)
        next.stamp = MetadataStamp(time: clock, node: node)
        handoffControl = next
    }

    /// What committing the staged changes would do.
    public func plan() throws(KVError) -> LayoutPlan {
        guard let layout else { throw KVError(.unavailable, "the cluster is not formed yet") }
        guard !staged.changes.isEmpty else {
            throw KVError(
                .invalidRequest, "no layout change is staged; stage one with join, leave or replace")
        }
        let (proposed, abandoned) = try Self.proposedLayout(
            staged.changes, members: members, departed: departing, current: layout,
            stillHolding: previousHolders)
        var moves: [LayoutPlan.Move] = []
        for index in 0..<layout.partitionCount {
            let partition = PartitionID(rawValue: UInt32(index))
            let from = layout.replicas(of: partition)
            let to = proposed.replicas(of: partition)
            if Set(from) != Set(to) {
                moves.append(LayoutPlan.Move(partition: partition, from: from, to: to))
            }
        }
        var writer = BinaryWriter(capacity: 64)
        writer.writeVarint(layout.version)
        writer.writeVarint(staged.stamp.time)
        writer.writeFixed(staged.stamp.node.rawValue)
        // The progress of a change in progress is part of what the plan is made of: two
        // nodes that commit one plan id then make the very same transition.
        let progress = transition.map(Self.encodeTransition) ?? []
        let digest = StableHash.hash(writer.bytes + Self.encode(proposed) + progress)
        let id = "\(proposed.version)-\(String(digest & 0xffff_ffff, radix: 16))"
        return LayoutPlan(
            id: id, changes: staged.changes, current: layout, proposed: proposed, moves: moves,
            abandoned: abandoned)
    }

    /// The metadata after `node` commits the plan named `planID`: the proposed layout as
    /// the next version, a transition from the layout whose owners hold everything, and
    /// no staged changes. Refused when the plan is stale.
    public func committed(plan planID: String, by node: NodeID) throws(KVError) -> ClusterMetadata {
        let plan = try plan()
        guard plan.id == planID else {
            throw KVError(
                .staleLayoutPlan,
                "plan \(planID) is stale: the layout or the staged changes changed since; the current plan is \(plan.id)"
            )
        }
        var next = self
        // During a change in progress the owners that hold everything are, per
        // partition, the previous ones while it has not retired, and the current ones
        // once it has; a new owner of the interrupted change that stays one keeps what it
        // received (it has had every write since).
        var base = plan.current
        if let transition {
            var members = Dictionary(uniqueKeysWithValues: transition.previous.members.map { ($0.node, $0) })
            for member in plan.current.members { members[member.node] = member }
            base = Layout(
                version: transition.previous.version, partitionCount: plan.current.partitionCount,
                replicationFactor: plan.current.replicationFactor, members: members.values.sorted(),
                assignments: (0..<plan.current.partitionCount).map { index in
                    let partition = PartitionID(rawValue: UInt32(index))
                    return transition.isRetired(partition, in: plan.current)
                        ? plan.current.replicas(of: partition) : transition.previous.replicas(of: partition)
                })
        }
        var carried = LayoutTransition(
            previous: base, abandoned: (transition?.abandoned ?? []).union(plan.abandoned))
        if let transition {
            carried.received = transition.received.filter { slot in
                plan.proposed.replicas(of: slot.partition).contains(slot.node)
            }
        }
        next.layout = plan.proposed
        next.transition = carried.isComplete(in: plan.proposed) ? nil : carried
        for change in plan.changes {
            switch change {
            case .leave(let leaving, _): next.departing.insert(leaving)
            case .replace(let old, _, _): next.departing.insert(old)
            case .join, .setCapacity, .setZone: break
            }
        }
        next.clock = Self.next(after: next.clock)
        next.staged = StagedLayoutChanges(changes: [], stamp: MetadataStamp(time: next.clock, node: node))
        return next
    }

    /// Records that `node` received `partition` (it is a destination of the transition).
    public mutating func markReceived(_ partition: PartitionID, by node: NodeID) {
        transition?.received.insert(TransferSlot(partition: partition, node: node))
        settleTransition()
    }

    /// Records that `node`, a previous owner, confirmed the new owners hold its copy.
    public mutating func markReleased(_ partition: PartitionID, by node: NodeID) {
        transition?.released.insert(TransferSlot(partition: partition, node: node))
        settleTransition()
    }

    /// Ends the transition once every partition is retired.
    mutating func settleTransition() {
        if let transition, let layout, transition.isComplete(in: layout) { self.transition = nil }
    }

    /// The layout `changes` make from `current`, and the owners they abandon; every
    /// change is checked against what the earlier ones left.
    static func proposedLayout(
        _ changes: [LayoutChange], members: [NodeID: ClusterMember], departed: Set<NodeID>, current: Layout,
        stillHolding: Set<NodeID> = []
    ) throws(KVError) -> (Layout, Set<NodeID>) {
        var placed = Dictionary(uniqueKeysWithValues: current.members.map { ($0.node, $0) })
        var assignments = current.assignments
        var abandoned: Set<NodeID> = []
        func unplacedMember(_ node: NodeID) throws(KVError) -> ClusterMember {
            guard let member = members[node] else {
                throw KVError(.notFound, "\(node) is not a member of the cluster; start it with --join first")
            }
            guard !departed.contains(node) else {
                throw KVError(
                    .invalidRequest, "\(node) left the cluster; a node that left joins under a new name")
            }
            guard placed[node] == nil else {
                throw KVError(.invalidRequest, "\(node) is already in the layout")
            }
            return member
        }
        func placedMember(_ node: NodeID) throws(KVError) -> LayoutMember {
            guard let member = placed[node] else {
                throw KVError(
                    .invalidRequest, "\(node) is not in the layout (or a staged change took it out)")
            }
            return member
        }
        for change in changes {
            switch change {
            case .join(let node):
                placed[node] = try unplacedMember(node).layoutMember
            case .leave(let node, let force):
                if force, placed[node] == nil, stillHolding.contains(node) {
                    // A node whose leave is committed but that died before it released:
                    // its copies are no longer waited for.
                    abandoned.insert(node)
                    continue
                }
                _ = try placedMember(node)
                placed[node] = nil
                if force { abandoned.insert(node) }
            case .replace(let old, let new, let force):
                let outgoing = try placedMember(old)
                var incoming = try unplacedMember(new).layoutMember
                // The new node takes the old one's place exactly, so it takes its zone
                // and weight as well: nothing else moves.
                incoming.zone = outgoing.zone
                incoming.capacity = outgoing.capacity
                placed[old] = nil
                placed[new] = incoming
                assignments = assignments.map { list in list.map { $0 == old ? new : $0 } }
                if force { abandoned.insert(old) }
            case .setCapacity(let node, let capacity):
                guard (1...(1 << 20)).contains(capacity) else {
                    throw KVError(.invalidRequest, "a capacity must be 1 to 1048576, not \(capacity)")
                }
                placed[node] = try placedMember(node)
                placed[node]!.capacity = capacity
            case .setZone(let node, let zone):
                guard !zone.isEmpty, zone.utf8.count <= 64 else {
                    throw KVError(.invalidRequest, "a zone name must be 1 to 64 bytes")
                }
                placed[node] = try placedMember(node)
                placed[node]!.zone = zone
            }
        }
        guard !placed.isEmpty else {
            throw KVError(.invalidRequest, "the changes leave no node in the layout")
        }
        let substituted = Layout(
            version: current.version, partitionCount: current.partitionCount,
            replicationFactor: current.replicationFactor, members: current.members, assignments: assignments)
        let proposed = Layout.computed(
            members: Array(placed.values), replicationFactor: current.replicationFactor,
            partitionCount: current.partitionCount, previous: substituted)
        return (proposed, abandoned)
    }
}
