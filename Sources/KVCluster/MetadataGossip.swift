import KVCore

/// Settings of ``MetadataGossip``.
public struct MetadataGossipSettings: Hashable, Sendable {
    /// The shortest time between two pushes to one peer prompted by its probes.
    public var probePushIntervalMilliseconds: Int64

    /// Creates settings.
    public init(probePushIntervalMilliseconds: Int64 = 500) {
        self.probePushIntervalMilliseconds = probePushIntervalMilliseconds
    }
}

/// How cluster metadata spreads, as a pure state machine: to whom a node pushes its copy
/// and when, what it does with a peer's copy, and when it forms the cluster. The shell
/// stores the metadata (``adopt(_:into:own:formation:)`` runs under its lock, with the
/// storage write), carries messages and calls ``tick()``; this machine decides.
///
/// ## Rules
///
/// - **Rounds.** Each ``tick()`` pushes this node's copy to the next other member in
///   node-id order, one per tick, so every pair exchanges within a round of ticks.
/// - **On change.** A change this node makes to the layout, the members, the transition,
///   the staged changes, the transfer limits or the departing set is pushed to every
///   other member at once (table changes are pushed, and waited for, by the shell). A
///   change adopted from a peer is pushed on as well, unless all it changes is the
///   transition's progress (receipts and releases): those are frequent during a
///   handoff, their maker pushes them to everyone, and a member it missed learns them
///   from probes and rounds. Pushing each on from every member made every receipt a
///   dozen pushes, and concurrent receipts a cascade of new merged copies.
/// - **Probes.** Every probe carries the sender's metadata digest; a node whose digest
///   differs gets this node's copy, at most once per
///   ``MetadataGossipSettings/probePushIntervalMilliseconds`` (not before this node knows
///   anyone, or has formed).
/// - **A peer's copy.** It is merged (``ClusterMetadata/merge(_:)``: commutative,
///   associative, idempotent) unless it belongs to another cluster, which is refused and
///   reported once per distinct reason. A copy whose record of this node differs from
///   what the node is (one restored from a backup) is corrected with a newer revision.
///   If the peer lacks something this node has, it gets this node's copy back; a push
///   with an id is acknowledged once stored.
/// - **Formation.** While unformed, a node that knows at least the expected number of
///   members and has the smallest id among them forms the cluster: it computes the
///   first layout, with a cluster id and context secret the shell draws
///   (``ClusterMetadata/formed(by:clusterID:secret:expectedMembers:)``). Every other node
///   learns of it by merging.
public struct MetadataGossip: Sendable {
    /// What the shell must do. Interpreters switch over it without a `default:`.
    public enum Action: Hashable, Sendable {
        /// Send this node's current copy to `peer` (with `id` when an acknowledgement
        /// is wanted).
        case push(to: NodeID)
        /// Acknowledge the push `id` of `peer`: its copy is merged and stored.
        case acknowledge(id: UInt64, to: NodeID)
        /// Report that a peer's copy was refused, and why (new reasons only).
        case refused(reason: String, from: NodeID)
    }

    /// What a formation needs from the shell: the members to wait for, and a cluster id
    /// and secret it drew.
    public struct Formation: Hashable, Sendable {
        public var expectedMembers: Int
        public var clusterID: UInt64
        public var secret: [UInt8]

        /// Creates a value.
        public init(expectedMembers: Int, clusterID: UInt64, secret: [UInt8]) {
            self.expectedMembers = expectedMembers
            self.clusterID = clusterID
            self.secret = secret
        }
    }

    /// What made a node's copy change, as the shell reports it with the change.
    public enum ChangeCause: Hashable, Sendable {
        /// This node made the change: a request through it, a receipt or release it
        /// recorded, a formation, a correction of its own record.
        case own
        /// It merged a peer's copy, and nothing else.
        case adopted
    }

    /// The outcome of ``adopt(_:into:own:formation:)``.
    public struct Adoption: Hashable, Sendable {
        /// The metadata to store (unchanged when refused).
        public var metadata: ClusterMetadata
        /// Why the peer's copy was refused, if it was.
        public var refusal: String?
        /// Whether this node formed the cluster just now.
        public var formed: Bool
        /// Whether this node corrected its own record, which the peer's copy got wrong.
        public var corrected = false

        /// What made the change: this node's own doing when it formed the cluster or
        /// corrected its record, else (with a peer's copy) the adoption.
        public func cause(merging peer: Bool) -> ChangeCause {
            peer && !formed && !corrected ? .adopted : .own
        }
    }

    /// The machine's settings.
    public let settings: MetadataGossipSettings
    /// This node.
    public let node: NodeID
    private var round = 0
    private var lastProbePush: [NodeID: Int64] = [:]
    private var lastRefusal: String?

    /// Creates the machine.
    public init(node: NodeID, settings: MetadataGossipSettings = MetadataGossipSettings()) {
        self.node = node
        self.settings = settings
    }

    // MARK: - Rules the shell applies under its lock

    /// Merges a peer's copy into this node's (`theirs` is `nil` for a local change),
    /// corrects this node's own record if the merged copy says otherwise, and forms the
    /// cluster if this node is the one to.
    public static func adopt(
        _ theirs: ClusterMetadata?, into mine: ClusterMetadata, own: ClusterMember, formation: Formation?
    ) -> Adoption {
        var metadata = mine
        var corrected = false
        if let theirs {
            if case .refused(let reason) = metadata.merge(theirs) {
                return Adoption(metadata: mine, refusal: reason, formed: false)
            }
            if let known = metadata.members[own.node], !own.peerAddress.isEmpty, known.differs(from: own) {
                var record = own
                record.revision = ClusterMetadata.next(after: known.revision)
                metadata.announce(record)
                corrected = true
            }
        }
        if let formation,
            let formed = metadata.formed(
                by: own.node, clusterID: formation.clusterID, secret: formation.secret,
                expectedMembers: formation.expectedMembers)
        {
            return Adoption(metadata: formed, refusal: nil, formed: true, corrected: corrected)
        }
        return Adoption(metadata: metadata, refusal: nil, formed: false, corrected: corrected)
    }

    // MARK: - Events

    /// One gossip round: this node's copy to the next other member in turn.
    public mutating func tick(_ metadata: ClusterMetadata) -> [Action] {
        let peers = metadata.members.keys.filter { $0 != node }.sorted()
        guard !peers.isEmpty else { return [] }
        round += 1
        return [.push(to: peers[round % peers.count])]
    }

    /// A probe arrived carrying the sender's metadata digest.
    public mutating func probeArrived(
        digest: UInt64, from sender: NodeID, metadata: ClusterMetadata, ownDigest: UInt64,
        nowMilliseconds: Int64
    ) -> [Action] {
        guard digest != ownDigest, metadata.isFormed || !metadata.members.isEmpty else { return [] }
        if let last = lastProbePush[sender], nowMilliseconds - last < settings.probePushIntervalMilliseconds {
            return []
        }
        lastProbePush[sender] = nowMilliseconds
        return [.push(to: sender)]
    }

    /// A peer's copy `theirs` was adopted (and, if that changed anything, stored; this
    /// node's copy is now `current`) or refused (`refusal`).
    public mutating func pushHandled(
        theirs: ClusterMetadata, id: UInt64?, from sender: NodeID, refusal: String?, current: ClusterMetadata
    ) -> [Action] {
        if let reason = refusal {
            defer { lastRefusal = reason }
            return lastRefusal == reason ? [] : [.refused(reason: reason, from: sender)]
        }
        var actions: [Action] = []
        var theirsMerged = theirs
        theirsMerged.merge(current)
        if theirsMerged != theirs { actions.append(.push(to: sender)) }
        if let id { actions.append(.acknowledge(id: id, to: sender)) }
        return actions
    }

    /// This node's copy changed from `before` to `after` (stored), by `cause`.
    public func changed(from before: ClusterMetadata, to after: ClusterMetadata, cause: ChangeCause)
        -> [Action]
    {
        let structural =
            after.layout != before.layout || after.members != before.members
            || after.staged != before.staged || after.handoffControl != before.handoffControl
            || after.departing != before.departing
            || !Self.sameShape(before.transition, after.transition)
        let progressed = after.transition != before.transition
        guard structural || (progressed && cause == .own) else { return [] }
        return after.members.keys.filter { $0 != node }.sorted().map { .push(to: $0) }
    }

    /// Whether two transitions differ at most in their progress (receipts, releases).
    private static func sameShape(_ first: LayoutTransition?, _ second: LayoutTransition?) -> Bool {
        switch (first, second) {
        case (nil, nil): true
        case (let first?, let second?):
            first.abandoned == second.abandoned && first.previous == second.previous
        default: false
        }
    }
}
