import KVCore

/// Settings of ``TombstoneReaper``.
public struct TombstoneReaperSettings: Hashable, Sendable {
    /// The most tombstones one pass proposes.
    public var tombstonesPerPass: Int
    /// How long (milliseconds) the partition's first replica holds a tombstone before it
    /// proposes it: longer than any message carrying a value the tombstone covers can
    /// still be on its way. The other replicas wait three times as long, in case the first
    /// holds nothing of the row (rebuilt on an empty disk, or reaped it already).
    public var graceMilliseconds: Int64
    /// How long a query waits for its answer; no answer in time is a veto.
    public var requestTimeoutMilliseconds: Int64

    /// Creates settings.
    public init(
        tombstonesPerPass: Int = 64, graceMilliseconds: Int64, requestTimeoutMilliseconds: Int64 = 1_000
    ) {
        self.tombstonesPerPass = tombstonesPerPass
        self.graceMilliseconds = graceMilliseconds
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
    }
}

/// What a node knows when it reaps or answers a reaping query.
public struct ReaperView: Sendable {
    /// This node.
    public var node: NodeID
    /// Every member that must agree: the active members other than this node (members
    /// that left for good are not asked).
    public var members: [NodeID]
    /// Members that are connected and SWIM believes alive.
    public var reachable: Set<NodeID>
    /// The formed layout, or `nil` before the cluster formed.
    public var layout: Layout?
    /// Partitions that move in the layout change under way: their tombstones stay.
    public var moving: Set<PartitionID>
    /// Whether this node's anti-entropy index covers every row it stores: if not, a row
    /// it holds could be missing from the index, and it cannot vouch for holding nothing.
    public var indexComplete: Bool

    /// Creates a view.
    public init(
        node: NodeID, members: [NodeID], reachable: Set<NodeID>, layout: Layout?, moving: Set<PartitionID>,
        indexComplete: Bool
    ) {
        self.node = node
        self.members = members
        self.reachable = reachable
        self.layout = layout
        self.moving = moving
        self.indexComplete = indexComplete
    }
}

/// What a node holds of one row, as reaping asks: read from its anti-entropy index
/// (whatever partitions it replicates: a node that lost the partition in a layout change
/// may still hold an old value) and its hints.
public struct RowHolding: Hashable, Sendable {
    /// A row's anti-entropy index entry.
    public struct IndexEntry: Hashable, Sendable {
        /// The stored object's hash.
        public var hash: UInt64
        /// Whether the stored object is a tombstone.
        public var isTombstone: Bool

        /// Creates a value.
        public init(hash: UInt64, isTombstone: Bool) {
            self.hash = hash
            self.isTombstone = isTombstone
        }
    }

    /// The row's index entry; `nil` when the node holds nothing of the row.
    public var entry: IndexEntry?
    /// Whether the node holds a hint for the row (a stand-in's copy, possibly older).
    public var holdsHint: Bool
    /// Whether the index entry could be read at all.
    public var readable: Bool

    /// Creates a value.
    public init(entry: IndexEntry?, holdsHint: Bool, readable: Bool = true) {
        self.entry = entry
        self.holdsHint = holdsHint
        self.readable = readable
    }

    /// What a node that could not read its index holds, as far as it can tell.
    public static let unreadable = RowHolding(entry: nil, holdsHint: false, readable: false)
}

/// A tombstone this node may propose: the row, the tombstone's object hash, and what
/// this node holds of the row.
public struct ReapCandidate: Hashable, Sendable {
    /// The row.
    public var key: ReplicaKey
    /// The tombstone's object hash (``ReplicaMessage`` carries it so every member
    /// compares the very same tombstone).
    public var objectHash: UInt64
    /// What this node holds of the row now.
    public var holding: RowHolding

    /// Creates a value.
    public init(key: ReplicaKey, objectHash: UInt64, holding: RowHolding) {
        self.key = key
        self.objectHash = objectHash
        self.holding = holding
    }
}

/// Counters of ``TombstoneReaper``.
public struct ReaperCounters: Hashable, Sendable {
    /// Tombstones this node reaped as proposer.
    public var reaped: Int64 = 0
    /// Proposals that a member (or this node) refused, or that a member did not answer.
    public var refused: Int64 = 0
    /// Passes skipped because a member was unreachable.
    public var passesSkipped: Int64 = 0
    /// Queries unanswered in time, by member.
    public var timeouts: [NodeID: Int64] = [:]

    /// Creates zero counters.
    public init() {}
}

/// Tombstone reaping as a pure state machine: which tombstones a node proposes, whom it
/// asks, when a tombstone may go and when it must stay. The shell reads the anti-entropy
/// index, carries messages, fires timers and removes rows; this machine decides.
///
/// ## Rules
///
/// - **When.** Each ``tick(_:)`` starts a pass over the next partition this node
///   replicates, unless a pass is under way. A pass takes up to
///   ``TombstoneReaperSettings/tombstonesPerPass`` tombstones held long enough (the
///   grace, or three times it when this node is not the partition's first replica),
///   starting where the previous pass over any partition left off, so a few vetoed
///   tombstones cannot block the rest.
/// - **Who agrees.** A tombstone goes only if **every** active member agrees, this node
///   included. A member agrees (``agrees(objectHash:layoutVersion:partition:holding:view:)``)
///   only if it has the same layout version, the partition is not moving, its index is
///   complete, it holds no hint for the row, and its copy of the row is that very
///   tombstone or nothing at all.
/// - **All or nothing.** If any member is unreachable when the candidates are read, the
///   pass proposes nothing: an unreachable member might hold an old value or a hint. A
///   query that cannot be sent or is not answered in time is a veto.
/// - **Reaping.** Once every member agreed to a tombstone, the other replicas of its
///   partition are told to reap it and this node reaps its own copy. Each replica removes
///   the row only if it still holds exactly that tombstone, so a write that arrived
///   meanwhile is kept.
/// - **End.** A pass ends once every candidate is refused or its own reap is stored.
///
/// Message ids start at a value the shell draws for each life of the node, so a late
/// answer to a previous life's query is never taken for a new one.
public struct TombstoneReaper: Sendable {
    /// What the shell must do. Interpreters switch over it without a `default:`.
    public enum Action: Hashable, Sendable {
        /// Read up to `limit` tombstones of `partition` held for `minimumAgeMilliseconds`,
        /// starting at the `start`-th in key order, with what this node holds of each
        /// row; then report ``TombstoneReaper/candidatesRead(_:view:)``.
        case readCandidates(partition: PartitionID, limit: Int, minimumAgeMilliseconds: Int64, start: Int)
        /// Send a message (a query or a reap). If a query cannot be sent, report
        /// ``TombstoneReaper/sendFailed(_:to:)``.
        case send(ReplicaMessage, to: NodeID)
        /// Report ``TombstoneReaper/timerFired(id:)`` after the given time, unless cancelled.
        case startTimer(id: UInt64, afterMilliseconds: Int64)
        /// Cancel the timer of `id`.
        case cancelTimer(id: UInt64)
        /// `peer` left a request unanswered in time (the shell counts it against the
        /// connection: ``PeerSilence``).
        case unanswered(NodeID)
        /// Remove this node's copy of the row if it still holds exactly that tombstone
        /// (``StorageCommand/reap(_:objectHash:)``), then report
        /// ``TombstoneReaper/storageCompleted(id:_:)`` with `id`.
        case reap(id: UInt64, key: ReplicaKey, objectHash: UInt64)
    }

    /// One proposed tombstone.
    private struct Proposal: Sendable {
        var candidate: ReapCandidate
        /// Members still owing an answer, by query id.
        var waiting: [UInt64: NodeID] = [:]
        var refused = false
        /// The id of this node's own reap while it is stored.
        var reapID: UInt64?
        var done = false
    }

    /// The pass under way.
    private struct Pass: Sendable {
        var node: NodeID
        var partition: PartitionID
        var layout: Layout
        var reading = true
        var proposals: [Proposal] = []
    }

    /// The machine's settings.
    public let settings: TombstoneReaperSettings
    /// What the machine did so far.
    public private(set) var counters = ReaperCounters()
    private var pass: Pass?
    /// Which proposal each query or reap in flight belongs to.
    private var requests: [UInt64: Int] = [:]
    private var nextID: UInt64
    private var partitionCursor = 0
    private var tombstoneCursor = 0

    /// Creates the machine; `firstMessageID` must differ for every life of the node.
    public init(settings: TombstoneReaperSettings, firstMessageID: UInt64) {
        self.settings = settings
        self.nextID = firstMessageID
    }

    /// Whether a pass is under way.
    public var isPassing: Bool { pass != nil }

    // MARK: - The answering side

    /// Whether this node agrees that the tombstone with `objectHash` of a row it holds as
    /// `holding` may be reaped, asked under `layoutVersion`.
    public static func agrees(
        objectHash: UInt64, layoutVersion: UInt64, partition: PartitionID, holding: RowHolding,
        view: ReaperView
    ) -> Bool {
        guard holding.readable, !holding.holdsHint, view.indexComplete,
            let layout = view.layout, layout.version == layoutVersion,
            !view.moving.contains(partition)
        else { return false }
        // Nothing of the row here: no old value to bring back, whether or not this node
        // replicates the partition (it may have reaped it already).
        guard let entry = holding.entry else { return true }
        return entry.isTombstone && entry.hash == objectHash
    }

    // MARK: - Events

    /// The shell's periodic tick: starts a pass over the next partition this node
    /// replicates.
    public mutating func tick(_ view: ReaperView) -> [Action] {
        guard pass == nil, let layout = view.layout else { return [] }
        let mine = (0..<layout.partitionCount).map { PartitionID(rawValue: UInt32($0)) }.filter {
            layout.replicas(of: $0).contains(view.node)
        }
        guard !mine.isEmpty else { return [] }
        let partition = mine[partitionCursor % mine.count]
        partitionCursor &+= 1
        let start = tombstoneCursor
        tombstoneCursor &+= settings.tombstonesPerPass
        pass = Pass(node: view.node, partition: partition, layout: layout)
        let isFirst = layout.replicas(of: partition).first == view.node
        return [
            .readCandidates(
                partition: partition, limit: settings.tombstonesPerPass,
                minimumAgeMilliseconds: isFirst ? settings.graceMilliseconds : 3 * settings.graceMilliseconds,
                start: start)
        ]
    }

    /// The candidates of the pass were read (empty when none are old enough, or reading
    /// failed).
    public mutating func candidatesRead(_ candidates: [ReapCandidate], view: ReaperView) -> [Action] {
        guard var current = pass, current.reading else { return [] }
        current.reading = false
        guard !candidates.isEmpty else {
            pass = nil
            return []
        }
        guard view.members.allSatisfy(view.reachable.contains) else {
            counters.passesSkipped += 1
            pass = nil
            return []
        }
        var actions: [Action] = []
        for candidate in candidates {
            guard
                Self.agrees(
                    objectHash: candidate.objectHash, layoutVersion: current.layout.version,
                    partition: current.partition, holding: candidate.holding, view: view)
            else {
                counters.refused += 1
                continue
            }
            var proposal = Proposal(candidate: candidate)
            let index = current.proposals.count
            for member in view.members {
                let id = takeID()
                proposal.waiting[id] = member
                requests[id] = index
                actions.append(
                    .send(
                        .reaping(
                            .reapQuery(
                                id: id, key: candidate.key, objectHash: candidate.objectHash,
                                layoutVersion: current.layout.version)), to: member))
                actions.append(.startTimer(id: id, afterMilliseconds: settings.requestTimeoutMilliseconds))
            }
            current.proposals.append(proposal)
        }
        pass = current
        // A cluster of one asks nobody: its own agreement is everyone's.
        for index in current.proposals.indices where current.proposals[index].waiting.isEmpty {
            actions += decided(index)
        }
        return actions + endIfDone()
    }

    /// A message arrived: the answer to a query.
    public mutating func received(_ message: ReapMessage, from sender: NodeID) -> [Action] {
        guard case .reapAnswer(let id, let agrees) = message else { return [] }
        return answered(id, from: sender, agrees: agrees, cancel: true)
    }

    /// A query could not be sent.
    public mutating func sendFailed(_ message: ReapMessage, to member: NodeID) -> [Action] {
        guard case .reapQuery(let id, _, _, _) = message else { return [] }
        return answered(id, from: member, agrees: false, cancel: true)
    }

    /// A query's timer fired: no answer in time.
    public mutating func timerFired(id: UInt64) -> [Action] {
        guard let index = requests[id], let member = pass?.proposals[index].waiting[id] else { return [] }
        counters.timeouts[member, default: 0] += 1
        return [.unanswered(member)] + answered(id, from: member, agrees: false, cancel: false)
    }

    /// This node's own reap finished.
    public mutating func storageCompleted(id: UInt64, _ outcome: StorageOutcome) -> [Action] {
        guard let index = requests.removeValue(forKey: id), var current = pass,
            current.proposals[index].reapID == id
        else { return [] }
        if case .object(let object) = outcome, object.entries.isEmpty { counters.reaped += 1 }
        current.proposals[index].done = true
        pass = current
        return endIfDone()
    }

    // MARK: - Deciding

    private mutating func takeID() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }

    private mutating func answered(_ id: UInt64, from member: NodeID, agrees: Bool, cancel: Bool) -> [Action]
    {
        guard let index = requests[id], var current = pass, current.proposals[index].waiting[id] == member
        else { return [] }
        requests[id] = nil
        current.proposals[index].waiting[id] = nil
        if !agrees { current.proposals[index].refused = true }
        pass = current
        var actions: [Action] = cancel ? [.cancelTimer(id: id)] : []
        if current.proposals[index].waiting.isEmpty { actions += decided(index) }
        return actions + endIfDone()
    }

    /// Every member answered the proposal at `index`: reap it everywhere, or count the
    /// veto.
    private mutating func decided(_ index: Int) -> [Action] {
        guard var current = pass else { return [] }
        var proposal = current.proposals[index]
        guard !proposal.refused else {
            counters.refused += 1
            proposal.done = true
            current.proposals[index] = proposal
            pass = current
            return []
        }
        let key = proposal.candidate.key
        let hash = proposal.candidate.objectHash
        var actions: [Action] = current.layout.replicas(of: current.partition).filter { $0 != current.node }
            .map { .send(.reaping(.reap(key: key, objectHash: hash)), to: $0) }
        let id = takeID()
        requests[id] = index
        proposal.reapID = id
        current.proposals[index] = proposal
        pass = current
        actions.append(.reap(id: id, key: key, objectHash: hash))
        return actions
    }

    private mutating func endIfDone() -> [Action] {
        if let current = pass, !current.reading, current.proposals.allSatisfy(\.done) { pass = nil }
        return []
    }
}
