import KVCore

/// Settings of ``AntiEntropyExchange``.
public struct AntiEntropySettings: Hashable, Sendable {
    /// The most keys one exchange repairs.
    public var repairsPerExchange: Int
    /// The most listing pages one exchange compares.
    public var pagesPerExchange: Int
    /// How long a difference between two replicas' keys must stay unchanged before it is
    /// repaired (writes in flight are not divergence).
    public var settleDelayMilliseconds: Int64
    /// How long a request waits for its answer before the exchange gives up on it.
    public var requestTimeoutMilliseconds: Int64

    /// Creates settings.
    public init(
        repairsPerExchange: Int = 256, pagesPerExchange: Int = 4, settleDelayMilliseconds: Int64 = 250,
        requestTimeoutMilliseconds: Int64 = 1_000
    ) {
        self.repairsPerExchange = repairsPerExchange
        self.pagesPerExchange = pagesPerExchange
        self.settleDelayMilliseconds = settleDelayMilliseconds
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
    }
}

/// What a node knows when it starts an exchange.
public struct AntiEntropyView: Sendable {
    /// This node.
    public var node: NodeID
    /// The formed layout, or `nil` before the cluster formed.
    public var layout: Layout?
    /// Members that are connected and SWIM believes alive.
    public var reachable: Set<NodeID>

    /// Creates a view.
    public init(node: NodeID, layout: Layout?, reachable: Set<NodeID>) {
        self.node = node
        self.layout = layout
        self.reachable = reachable
    }
}

/// One side's listing of index entries: its entries in key order, and whether it
/// stopped at its size limit.
public struct KeyListing: Hashable, Sendable {
    /// The entries, in key order.
    public var entries: [KeyHash]
    /// Whether the listing stopped at its limit (more keys follow).
    public var truncated: Bool

    /// Creates a value.
    public init(entries: [KeyHash], truncated: Bool) {
        self.entries = entries
        self.truncated = truncated
    }

    /// Two listings of the same leaves cut at the lower of their ends when either stopped
    /// at its limit, so both cover the same keys; `bound` is where the next page starts.
    public static func paired(_ ours: KeyListing, _ theirs: KeyListing) -> (
        ours: [KeyHash], theirs: [KeyHash], bound: [UInt8]?
    ) {
        var ends: [[UInt8]] = []
        if theirs.truncated, let last = theirs.entries.last?.key { ends.append(last) }
        if ours.truncated, let last = ours.entries.last?.key { ends.append(last) }
        let bound = ends.min { $0.lexicographicallyPrecedes($1) }
        func within(_ entries: [KeyHash]) -> [KeyHash] {
            guard let bound else { return entries }
            return entries.filter { !bound.lexicographicallyPrecedes($0.key) }
        }
        return (within(ours.entries), within(theirs.entries), bound)
    }
}

/// Counters of ``AntiEntropyExchange``.
public struct AntiEntropyCounters: Hashable, Sendable {
    /// Exchanges that compared trees.
    public var exchanges: Int64 = 0
    /// Exchanges whose trees agreed.
    public var exchangesInSync: Int64 = 0
    /// Tree segments found different.
    public var divergentSegments: Int64 = 0
    /// Index entries compared, both sides.
    public var keysCompared: Int64 = 0
    /// Keys merged into both replicas.
    public var keysRepaired: Int64 = 0
    /// Differing keys left alone because they changed during the settle delay.
    public var keysInFlight: Int64 = 0
    /// Full passes over this node's partitions.
    public var rounds: Int64 = 0
    /// Partitions found divergent in the last full pass (-1 before the first ended), and
    /// in the current one.
    public var divergentLastRound: Int64 = -1
    public var divergentThisRound: Int64 = 0
    /// Requests unanswered in time, by peer.
    public var timeouts: [NodeID: Int64] = [:]

    /// Creates zero counters.
    public init() {}
}

/// Active anti-entropy as a pure state machine: which partition and peer each exchange
/// compares, how trees, leaves and keys are compared, which differences are real, and
/// how they are repaired. The shell reads trees, listings and rows, carries messages,
/// fires timers and merges; this machine decides.
///
/// ## Rules
///
/// - **When.** Each ``tick(_:)`` starts an exchange unless one is under way: the next
///   partition this node replicates, with the next of its peer replicas (the peer moves
///   on once per full pass over the partitions). An unreachable peer, or a tree not yet
///   built on either side, means no exchange this time.
/// - **Descent.** Segment hashes first, then the leaf hashes of the segments that
///   differ, then the index entries of the leaves that differ, a page at a time in key
///   order: both listings are cut at the lower of their ends when either stopped at its
///   limit, and the next page starts after that bound (at most
///   ``AntiEntropySettings/pagesPerExchange`` pages).
/// - **Settling.** Under load the replicas of a key differ for the milliseconds its write
///   is in flight. A page's differing keys are listed again after the settle delay, and
///   only those whose hashes on both sides did not move are repaired.
/// - **Repair.** A key is loaded here, merged into the peer, and the peer's merged state
///   merged back here: both sides end with the merge. A tombstone is not copied onto a
///   peer that holds nothing of the row (both read as deleted, and that is what every
///   replica holds once the tombstone was reaped somewhere first); a peer's tombstone is
///   not copied onto this node when it held nothing either. At most
///   ``AntiEntropySettings/repairsPerExchange`` keys per exchange.
/// - **Failure.** A request that cannot be sent or is not answered in time ends the
///   exchange; a later one repeats the work.
///
/// Message ids start at a value the shell draws for each life of the node, so a late
/// answer to a previous life's request is never taken for a new one.
public struct AntiEntropyExchange: Sendable {
    /// What the shell must do. Interpreters switch over it without a `default:`.
    public enum Action: Hashable, Sendable {
        /// Read this node's tree of `partition`, then report
        /// ``AntiEntropyExchange/treeRead(_:)`` (`nil` when it is not built).
        case readTree(partition: PartitionID)
        /// Send a request; if it cannot be sent, report
        /// ``AntiEntropyExchange/sendFailed(_:to:)``.
        case send(ReplicaMessage, to: NodeID)
        /// Report ``AntiEntropyExchange/timerFired(id:)`` after the given time, unless
        /// cancelled.
        case startTimer(id: UInt64, afterMilliseconds: Int64)
        /// Cancel the timer of `id`.
        case cancelTimer(id: UInt64)
        /// `peer` left a request unanswered in time (the shell counts it against the
        /// connection: ``PeerSilence``).
        case unanswered(NodeID)
        /// List this node's index entries of `partition` in `leaves` after `after`
        /// (exclusive), then report ``AntiEntropyExchange/listed(id:_:)``.
        case list(id: UInt64, partition: PartitionID, leaves: [Int], after: [UInt8]?)
        /// Load this node's copy of the row with engine key `key` (its table generation
        /// from the catalog), then report ``AntiEntropyExchange/loaded(id:_:_:)``.
        case load(id: UInt64, partition: PartitionID, key: [UInt8])
        /// Merge `object` into this node's copy (``StorageCommand/reconcile(_:_:)``), then
        /// report ``AntiEntropyExchange/storageCompleted(id:_:)``.
        case reconcile(id: UInt64, key: ReplicaKey, object: StoredObject)
    }

    /// Where an exchange stands.
    private enum Step: Sendable {
        case readingTree
        case segments(request: UInt64)
        case leaves(request: UInt64, segments: [Int])
        /// Both listings of a page; `first` is the listing before the settle delay when
        /// this is the second.
        case listing(own: UInt64, theirs: UInt64, ours: KeyListing?, peer: KeyListing?, first: Page?)
        case settling(timer: UInt64, first: Page)
        case loading(id: UInt64)
        case repairing(request: UInt64, held: StoredObject)
        case merging(id: UInt64)
    }

    /// One page's first listing: what differed.
    private struct Page: Sendable {
        var ours: [KeyHash]
        var theirs: [KeyHash]
        var bound: [UInt8]?
        var differing: [[UInt8]]
    }

    private struct Exchange: Sendable {
        var partition: PartitionID
        var peer: NodeID
        var tree = MerkleTree()
        var step: Step = .readingTree
        var leaves: [Int] = []
        var after: [UInt8]?
        var pages = 0
        var repaired = 0
        /// Settled keys still to repair in this page, and the page's bound.
        var queue: [[UInt8]] = []
        var bound: [UInt8]?
        /// The peer's keys in this page's second listing.
        var theirKeys: Set<[UInt8]> = []
        var key: ReplicaKey?
    }

    /// The machine's settings.
    public let settings: AntiEntropySettings
    /// What the machine did so far.
    public private(set) var counters = AntiEntropyCounters()
    private var exchange: Exchange?
    private var nextID: UInt64
    private var partitionCursor = 0
    private var peerCursor = 0

    /// Creates the machine; `firstMessageID` must differ for every life of the node.
    public init(settings: AntiEntropySettings = AntiEntropySettings(), firstMessageID: UInt64) {
        self.settings = settings
        self.nextID = firstMessageID
    }

    /// Whether an exchange is under way.
    public var isExchanging: Bool { exchange != nil }

    // MARK: - Starting

    /// The shell's periodic tick: starts an exchange of the next partition with the next
    /// peer replica.
    public mutating func tick(_ view: AntiEntropyView) -> [Action] {
        guard exchange == nil, let layout = view.layout else { return [] }
        let mine = (0..<layout.partitionCount).map { PartitionID(rawValue: UInt32($0)) }.filter {
            layout.replicas(of: $0).contains(view.node)
        }
        guard !mine.isEmpty else { return [] }
        let index = partitionCursor % mine.count
        partitionCursor &+= 1
        if index == 0 {
            peerCursor &+= 1
            if counters.exchanges > 0 {
                counters.rounds += 1
                counters.divergentLastRound = counters.divergentThisRound
            }
            counters.divergentThisRound = 0
        }
        let peers = layout.replicas(of: mine[index]).filter { $0 != view.node }
        guard !peers.isEmpty else { return [] }
        return start(mine[index], with: peers[peerCursor % peers.count], view: view)
    }

    /// Starts an exchange of `partition` with `peer` now, unless one is under way (the
    /// simulator's final full rounds; ``tick(_:)`` otherwise).
    public mutating func start(_ partition: PartitionID, with peer: NodeID, view: AntiEntropyView) -> [Action]
    {
        guard exchange == nil, view.reachable.contains(peer) else { return [] }
        exchange = Exchange(partition: partition, peer: peer)
        return [.readTree(partition: partition)]
    }

    // MARK: - Events

    /// This node's tree of the partition was read.
    public mutating func treeRead(_ tree: MerkleTree?) -> [Action] {
        guard var current = exchange, case .readingTree = current.step else { return [] }
        guard let tree else {
            exchange = nil
            return []
        }
        current.tree = tree
        let id = takeID()
        current.step = .segments(request: id)
        exchange = current
        return request(.antiEntropy(.treeRequest(id: id, partition: current.partition, segments: [])), id: id)
    }

    /// A message arrived: the answer to a request.
    public mutating func received(_ message: AntiEntropyMessage, from sender: NodeID) -> [Action] {
        guard var current = exchange, current.peer == sender else { return [] }
        switch (message, current.step) {
        case (.treeHashes(let id, let ready, let hashes), .segments(let request)) where id == request:
            guard ready else { return [.cancelTimer(id: id)] + finish(divergent: false) }
            let segments = current.tree.differingSegments(hashes)
            guard !segments.isEmpty else { return [.cancelTimer(id: id)] + finish(divergent: false) }
            counters.divergentSegments += Int64(segments.count)
            let next = takeID()
            current.step = .leaves(request: next, segments: segments)
            exchange = current
            return [.cancelTimer(id: id)]
                + self.request(
                    .antiEntropy(.treeRequest(id: next, partition: current.partition, segments: segments)),
                    id: next)
        case (.treeHashes(let id, let ready, let hashes), .leaves(let request, let segments))
        where id == request:
            guard ready else { return [.cancelTimer(id: id)] + finish(divergent: true) }
            current.leaves = current.tree.differingLeaves(in: segments, hashes)
            exchange = current
            guard !current.leaves.isEmpty else { return [.cancelTimer(id: id)] + finish(divergent: true) }
            return [.cancelTimer(id: id)] + listPage(first: nil)
        case (
            .keyHashes(let id, let entries, let truncated),
            .listing(let own, let theirs, let ours, nil, let first)
        )
        where id == theirs:
            current.step = .listing(
                own: own, theirs: theirs, ours: ours,
                peer: KeyListing(entries: entries, truncated: truncated),
                first: first)
            exchange = current
            return [.cancelTimer(id: id)] + comparePage()
        case (.reconciled(let id, let outcome), .repairing(let request, let held)) where id == request:
            guard case .object(let merged) = outcome, let key = current.key else {
                return [.cancelTimer(id: id)] + finish(divergent: true)
            }
            // The peer held nothing and this tombstone was not sent, or this node held
            // nothing: a tombstone coming back is not copied here.
            if held.entries.isEmpty, merged.isDeleted { return [.cancelTimer(id: id)] + repairNext() }
            let local = takeID()
            current.step = .merging(id: local)
            exchange = current
            return [.cancelTimer(id: id), .reconcile(id: local, key: key, object: merged)]
        default:
            return []
        }
    }

    /// This node's listing was read (`nil` when it could not be).
    public mutating func listed(id: UInt64, _ listing: KeyListing?) -> [Action] {
        guard var current = exchange,
            case .listing(let own, let theirs, nil, let peer, let first) = current.step,
            own == id
        else { return [] }
        guard let listing else { return [.cancelTimer(id: theirs)] + finish(divergent: true) }
        current.step = .listing(own: own, theirs: theirs, ours: listing, peer: peer, first: first)
        exchange = current
        return comparePage()
    }

    /// This node's copy of a row was loaded (`key` is `nil` when the row's table is not
    /// in the catalog: it is skipped).
    public mutating func loaded(id: UInt64, _ key: ReplicaKey?, _ outcome: StorageOutcome) -> [Action] {
        guard var current = exchange, case .loading(let expected) = current.step, expected == id else {
            return []
        }
        guard let key, case .object(let held) = outcome else { return repairNext() }
        // A tombstone is not copied onto a replica that holds nothing of the row.
        if held.isDeleted, !held.entries.isEmpty, !current.theirKeys.contains(key.bytes) {
            return repairNext()
        }
        current.key = key
        let request = takeID()
        current.step = .repairing(request: request, held: held)
        exchange = current
        return self.request(.antiEntropy(.reconcile(id: request, key: key, object: held)), id: request)
    }

    /// A local merge finished.
    public mutating func storageCompleted(id: UInt64, _ outcome: StorageOutcome) -> [Action] {
        guard var current = exchange, case .merging(let expected) = current.step, expected == id else {
            return []
        }
        current.repaired += 1
        exchange = current
        counters.keysRepaired += 1
        return repairNext()
    }

    /// A request could not be sent: the exchange ends.
    public mutating func sendFailed(_ message: AntiEntropyMessage, to peer: NodeID) -> [Action] {
        guard let id = Self.requestID(message), isWaiting(for: id, from: peer) else { return [] }
        return [.cancelTimer(id: id)] + finish(divergent: true)
    }

    /// A timer fired: a request went unanswered (the exchange ends), or a page settled.
    public mutating func timerFired(id: UInt64) -> [Action] {
        guard let current = exchange else { return [] }
        if case .settling(let timer, let first) = current.step, timer == id { return listPage(first: first) }
        guard isWaiting(for: id, from: current.peer) else { return [] }
        counters.timeouts[current.peer, default: 0] += 1
        return [.unanswered(current.peer)] + finish(divergent: true)
    }

    // MARK: - Steps

    private mutating func takeID() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }

    private static func requestID(_ message: AntiEntropyMessage) -> UInt64? {
        switch message {
        case .treeRequest(let id, _, _), .keyHashesRequest(let id, _, _, _), .reconcile(let id, _, _): id
        case .treeHashes, .keyHashes, .reconciled: nil
        }
    }

    private func isWaiting(for id: UInt64, from peer: NodeID) -> Bool {
        guard let current = exchange, current.peer == peer else { return false }
        switch current.step {
        case .segments(let request), .leaves(let request, _), .repairing(let request, _): return request == id
        case .listing(_, let theirs, _, nil, _): return theirs == id
        case .readingTree, .listing, .settling, .loading, .merging: return false
        }
    }

    private func request(_ message: ReplicaMessage, id: UInt64) -> [Action] {
        guard let peer = exchange?.peer else { return [] }
        return [
            .send(message, to: peer),
            .startTimer(id: id, afterMilliseconds: settings.requestTimeoutMilliseconds),
        ]
    }

    /// Lists the current page on both sides (again after the settle delay when `first`
    /// is given).
    private mutating func listPage(first: Page?) -> [Action] {
        guard var current = exchange else { return [] }
        let own = takeID()
        let theirs = takeID()
        current.step = .listing(own: own, theirs: theirs, ours: nil, peer: nil, first: first)
        exchange = current
        return request(
            .antiEntropy(
                .keyHashesRequest(
                    id: theirs, partition: current.partition, leaves: current.leaves, after: current.after)),
            id: theirs) + [
                .list(id: own, partition: current.partition, leaves: current.leaves, after: current.after)
            ]
    }

    /// Both listings of a page are in: find what differs, wait for it to settle, or
    /// start repairing what stayed put.
    private mutating func comparePage() -> [Action] {
        guard var current = exchange,
            case .listing(_, _, let ours?, let theirs?, let first) = current.step
        else { return [] }
        let paired = KeyListing.paired(ours, theirs)
        guard let first else {
            let differing = MerkleTree.differingKeys(paired.ours, paired.theirs)
            counters.keysCompared += Int64(paired.ours.count + paired.theirs.count)
            guard !differing.isEmpty else {
                current.bound = paired.bound
                exchange = current
                return pageDone()
            }
            let timer = takeID()
            current.step = .settling(
                timer: timer,
                first: Page(
                    ours: paired.ours, theirs: paired.theirs, bound: paired.bound, differing: differing))
            exchange = current
            return [.startTimer(id: timer, afterMilliseconds: settings.settleDelayMilliseconds)]
        }
        let settled = Self.settledDifferences(
            first.differing, before: (first.ours, first.theirs), after: (paired.ours, paired.theirs))
        counters.keysInFlight += Int64(first.differing.count - settled.count)
        current.queue = Array(settled.prefix(max(0, settings.repairsPerExchange - current.repaired)))
        current.bound = first.bound
        current.theirKeys = Set(paired.theirs.map(\.key))
        exchange = current
        return repairNext()
    }

    /// Repairs the next settled key of the page, or ends the page.
    private mutating func repairNext() -> [Action] {
        guard var current = exchange else { return [] }
        guard !current.queue.isEmpty else { return pageDone() }
        let key = current.queue.removeFirst()
        let id = takeID()
        current.step = .loading(id: id)
        current.key = nil
        exchange = current
        return [.load(id: id, partition: current.partition, key: key)]
    }

    /// The page is done: on to the next page, or the exchange ends.
    private mutating func pageDone() -> [Action] {
        guard var current = exchange else { return [] }
        current.pages += 1
        guard let bound = current.bound, current.pages < settings.pagesPerExchange,
            current.repaired < settings.repairsPerExchange
        else { return finish(divergent: true) }
        current.after = bound
        current.bound = nil
        exchange = current
        return listPage(first: nil)
    }

    private mutating func finish(divergent: Bool) -> [Action] {
        exchange = nil
        counters.exchanges += 1
        if divergent { counters.divergentThisRound += 1 } else { counters.exchangesInSync += 1 }
        return []
    }

    /// The keys of `differing` whose hashes on both sides are the same in both listings:
    /// real divergence, not a write in flight.
    public static func settledDifferences(
        _ differing: [[UInt8]], before: (ours: [KeyHash], theirs: [KeyHash]),
        after: (ours: [KeyHash], theirs: [KeyHash])
    ) -> [[UInt8]] {
        func table(_ entries: [KeyHash]) -> [[UInt8]: UInt64] {
            Dictionary(entries.map { ($0.key, $0.hash) }, uniquingKeysWith: { first, _ in first })
        }
        let (ours, theirs) = (table(before.ours), table(before.theirs))
        let (oursLater, theirsLater) = (table(after.ours), table(after.theirs))
        return differing.filter { key in
            ours[key] == oursLater[key] && theirs[key] == theirsLater[key]
                && oursLater[key] != theirsLater[key]
        }
    }
}
