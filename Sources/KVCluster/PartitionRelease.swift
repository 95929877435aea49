import KVCore

/// Settings of ``PartitionRelease``.
public struct ReleaseSettings: Hashable, Sendable {
    /// The most partitions pushed at once (releases and the one drop together; releases
    /// waiting to be written do not count).
    public var concurrentPushes: Int
    /// How long a request waits for its answer before the push stops.
    public var requestTimeoutMilliseconds: Int64
    /// How long a partition must stay placed elsewhere before this node drops its copy:
    /// longer than metadata takes to reach every node, so a node that hears of the end
    /// of a change late still finds the rows it reads.
    public var dropGraceMilliseconds: Int64
    /// The pause after writing releases, during which new ones wait to be written
    /// together (``ProgressRecords``).
    public var recordCoolDownMilliseconds: Int64

    /// Creates settings.
    public init(
        concurrentPushes: Int = 16, requestTimeoutMilliseconds: Int64 = 1_000,
        dropGraceMilliseconds: Int64 = 10_000, recordCoolDownMilliseconds: Int64 = 100
    ) {
        self.concurrentPushes = concurrentPushes
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        self.dropGraceMilliseconds = dropGraceMilliseconds
        self.recordCoolDownMilliseconds = recordCoolDownMilliseconds
    }
}

/// What a node knows when it looks for partitions to release or drop.
public struct ReleaseView: Sendable {
    /// This node.
    public var node: NodeID
    /// The formed layout, or `nil` before the cluster formed.
    public var layout: Layout?
    /// The layout change in progress towards `layout`.
    public var transition: LayoutTransition?
    /// Members that are connected and SWIM believes alive.
    public var reachable: Set<NodeID>
    /// Whether the row hash index covers every row (then only differing rows are pushed;
    /// without it every row is).
    public var indexComplete: Bool
    /// The shell's monotonic time, for the drop grace.
    public var nowMilliseconds: Int64

    /// Creates a view.
    public init(
        node: NodeID, layout: Layout?, transition: LayoutTransition?, reachable: Set<NodeID>,
        indexComplete: Bool, nowMilliseconds: Int64
    ) {
        self.node = node
        self.layout = layout
        self.transition = transition
        self.reachable = reachable
        self.indexComplete = indexComplete
        self.nowMilliseconds = nowMilliseconds
    }
}

/// Counters of ``PartitionRelease``.
public struct ReleaseCounters: Hashable, Sendable {
    /// Releases recorded.
    public var partitionsReleased: Int64 = 0
    /// Copies dropped.
    public var partitionsDropped: Int64 = 0
    /// Rows merged into a new owner that lacked them.
    public var rowsPushed: Int64 = 0
    /// Requests unanswered in time, by peer.
    public var timeouts: [NodeID: Int64] = [:]

    /// Creates zero counters.
    public init() {}
}

/// The end of a previous owner's copy of a partition, as a pure state machine: when a
/// copy may go, how the owners are made to hold everything it holds first, and what is
/// recorded. The shell lists and loads rows, carries messages, fires timers, records
/// releases in the cluster metadata and deletes copies; this machine decides.
///
/// ## Rules
///
/// - **Release.** A previous owner that the transition names as a releaser of a settled
///   partition (``LayoutTransition/releasers(of:in:)``) pushes its copy to every new
///   owner, then records the release. Recording it tells the cluster that the new
///   owners hold everything this node held, so it is recorded only after a full push.
///   Releases are written in batches (``ProgressRecords``, with
///   ``ReleaseSettings/recordCoolDownMilliseconds``): the first at once, later ones
///   together after a cool-down; a push whose release waits holds no push slot. A batch
///   that could not be written is pushed again from a later tick.
/// - **Drop.** One partition per ``tick(_:)``, in turn: a copy that no layout in use
///   places here (``holds(_:node:layout:transition:)``) and that stayed so for the drop
///   grace is pushed to every owner, then dropped. A previous owner takes writes until
///   the change is over, also after its release, and a stale coordinator may still send
///   one: without the push such a write would go with the copy. A copy that holds no
///   row is not dropped (there is nothing to delete).
/// - **Push.** Owner by owner, a page at a time in key order: this node's listing of
///   the partition first; a page that lists nothing ends the owner's push at once,
///   with no request sent. With the hash index complete, the owner's listing of the
///   same range follows, both are cut at the lower of their ends
///   (``KeyListing/paired(_:_:)``), and only the rows whose hashes differ are loaded and
///   merged into the owner (``AntiEntropyMessage/reconcile(id:key:object:)``); without
///   the index, every listed row is. Rows of dropped tables are skipped; a row of a table
///   this node does not know yet stops the push, for a later tick.
/// - **Owners must be reachable.** A push starts only when every owner is; one that
///   cannot be sent to or does not answer in time stops it. A stopped push says why
///   (``Action/waits(partition:reason:)``), once per new reason, and a later tick starts
///   over.
/// - **Limits.** At most ``ReleaseSettings/concurrentPushes`` partitions pushed at once,
///   one of them a drop; a push whose release waits to be written no longer counts.
///
/// Message ids start at a value the shell draws for each life of the node, so a late
/// answer to a previous life's request is never taken for a new one. The answers share
/// their kinds with anti-entropy's: the shell gives a message to this machine when
/// ``isWaiting(for:)`` its id.
public struct PartitionRelease: Sendable {
    /// Why a partition is pushed.
    public enum Purpose: Hashable, Sendable {
        /// A release of the transition to layout `layoutVersion`.
        case release(layoutVersion: UInt64)
        /// A drop of a copy no layout in use places here.
        case drop
    }

    /// A row this node holds, as loaded for a push.
    public enum LoadedRow: Hashable, Sendable {
        /// The row, with its table generation.
        case row(ReplicaKey, StoredObject)
        /// The row's table was dropped: it need not go.
        case droppedTable
        /// The row's table is not in this node's catalog yet.
        case unknownTable
        /// The row could not be read.
        case failed
    }

    /// What the shell must do. Interpreters switch over it without a `default:`.
    public enum Action: Hashable, Sendable {
        /// List this node's rows of `partition` after `after` (exclusive), with their
        /// index hashes when `withHashes` (else with hash 0), then report
        /// ``PartitionRelease/listed(id:_:)``.
        case list(id: UInt64, partition: PartitionID, after: [UInt8]?, withHashes: Bool)
        /// Load this node's copy of the row with engine key `key`, then report
        /// ``PartitionRelease/loaded(id:_:)``.
        case load(id: UInt64, partition: PartitionID, key: [UInt8])
        /// Send a request; if it cannot be sent, report
        /// ``PartitionRelease/sendFailed(_:to:)``.
        case send(ReplicaMessage, to: NodeID)
        /// Report ``PartitionRelease/timerFired(id:)`` after the given time, unless
        /// cancelled.
        case startTimer(id: UInt64, afterMilliseconds: Int64)
        /// Cancel the timer of `id`.
        case cancelTimer(id: UInt64)
        /// Record in the cluster metadata, as one change, that this node released each
        /// partition (for its layout version; a record of another version is moot and
        /// skipped), then report ``PartitionRelease/recorded(_:ok:)``.
        case recordReleases([LayoutPartition])
        /// Delete this node's copy of `partition` (its rows, index entries and tree),
        /// unless a layout in use places it here by then, then report
        /// ``PartitionRelease/dropped(_:ok:)``.
        case drop(partition: PartitionID)
        /// `peer` left a request unanswered (the shell may reopen a silent connection).
        case unanswered(NodeID)
        /// Why the push of `partition` stopped (said once per new reason).
        case waits(partition: PartitionID, purpose: Purpose, reason: String)
    }

    /// Where a push stands.
    private enum Step: Sendable {
        /// Made, not yet listing or finishing (within one call).
        case starting
        case listing(id: UInt64)
        case asking(request: UInt64, ours: KeyListing)
        case loading(id: UInt64)
        case pushing(request: UInt64)
        case recording
        case dropping
    }

    private struct Push: Sendable {
        var purpose: Purpose
        var owners: [NodeID]
        var withHashes: Bool
        var step: Step
        var after: [UInt8]?
        /// Rows of the current page still to push, and where the next page starts.
        var queue: [[UInt8]] = []
        var bound: [UInt8]?
        /// Whether any listing of this node's copy held a row.
        var heldRows = false
    }

    /// The machine's settings.
    public let settings: ReleaseSettings
    /// What the machine did so far.
    public private(set) var counters = ReleaseCounters()
    private var pushes: [PartitionID: Push] = [:]
    /// The last reason each partition's push stopped for, until it ends.
    private var waiting: [PartitionID: String] = [:]
    /// When each partition this node may hold rows of was first seen placed elsewhere.
    private var foreignSince: [PartitionID: Int64] = [:]
    private var sweepCursor = 0
    /// Releases written and waiting to be.
    private var records: ProgressRecords
    private var nextID: UInt64

    /// Creates the machine; `firstMessageID` must differ for every life of the node.
    public init(settings: ReleaseSettings = ReleaseSettings(), firstMessageID: UInt64) {
        self.settings = settings
        self.nextID = firstMessageID
        self.records = ProgressRecords(coolDownMilliseconds: settings.recordCoolDownMilliseconds)
    }

    /// Whether `node` must keep its copy of `partition`: the layout places it there, or
    /// it is a previous owner during a change in progress (it still gets every write).
    public static func holds(
        _ partition: PartitionID, node: NodeID, layout: Layout?, transition: LayoutTransition?
    ) -> Bool {
        guard let layout else { return true }
        if layout.replicas(of: partition).contains(node) { return true }
        return transition?.previous.replicas(of: partition).contains(node) == true
    }

    /// The partitions being pushed, and why.
    public var running: [PartitionID: Purpose] { pushes.mapValues(\.purpose) }

    /// Whether a request of `id` waits for its answer here.
    public func isWaiting(for id: UInt64) -> Bool {
        pushes.values.contains { push in
            switch push.step {
            case .asking(let request, _), .pushing(let request): request == id
            case .starting, .listing, .loading, .recording, .dropping: false
            }
        }
    }

    // MARK: - Starting

    /// The shell's periodic tick: starts the releases this node owes, and looks at the
    /// next partition in turn for a copy to drop.
    public mutating func tick(_ view: ReleaseView) -> [Action] {
        guard let layout = view.layout else { return [] }
        var actions: [Action] = []
        if let transition = view.transition {
            var active = activePushes
            for index in 0..<layout.partitionCount where active < settings.concurrentPushes {
                let partition = PartitionID(rawValue: UInt32(index))
                guard pushes[partition] == nil, transition.isSettled(partition, in: layout),
                    transition.releasers(of: partition, in: layout).contains(view.node),
                    !transition.released.contains(TransferSlot(partition: partition, node: view.node))
                else { continue }
                actions += start(
                    partition, .release(layoutVersion: layout.version), layout: layout, view: view)
                if pushes[partition] != nil { active = activePushes }
            }
        }
        let dropping = pushes.values.contains { $0.purpose == .drop }
        guard !dropping, activePushes < settings.concurrentPushes else { return actions }
        let partition = PartitionID(rawValue: UInt32(sweepCursor % layout.partitionCount))
        sweepCursor = (sweepCursor + 1) % layout.partitionCount
        guard pushes[partition] == nil else { return actions }
        guard !Self.holds(partition, node: view.node, layout: layout, transition: view.transition) else {
            foreignSince[partition] = nil
            return actions
        }
        let since = foreignSince[partition] ?? view.nowMilliseconds
        foreignSince[partition] = since
        guard view.nowMilliseconds - since >= settings.dropGraceMilliseconds else { return actions }
        return actions + start(partition, .drop, layout: layout, view: view)
    }

    private mutating func start(
        _ partition: PartitionID, _ purpose: Purpose, layout: Layout, view: ReleaseView
    )
        -> [Action]
    {
        let owners = layout.replicas(of: partition).filter { $0 != view.node }
        if let absent = owners.first(where: { !view.reachable.contains($0) }) {
            return wait(partition, purpose, "owner \(absent) is not reachable")
        }
        pushes[partition] = Push(
            purpose: purpose, owners: owners, withHashes: view.indexComplete, step: .starting)
        return owners.isEmpty ? finish(partition) : listPage(partition)
    }

    // MARK: - Events

    /// This node's listing was read (`nil` when it could not be).
    public mutating func listed(id: UInt64, _ listing: KeyListing?) -> [Action] {
        guard let (partition, push) = push(where: { if case .listing(id) = $0 { true } else { false } })
        else { return [] }
        guard let listing, let owner = push.owners.first else {
            return stop(partition, "listing this node's rows failed")
        }
        if listing.entries.isEmpty, !listing.truncated { return ownerDone(partition) }
        var next = push
        next.heldRows = next.heldRows || !listing.entries.isEmpty
        guard push.withHashes else {
            next.queue = listing.entries.map(\.key)
            next.bound = listing.truncated ? listing.entries.last?.key : nil
            pushes[partition] = next
            return pushNext(partition)
        }
        let request = takeID()
        next.step = .asking(request: request, ours: listing)
        pushes[partition] = next
        return [
            .send(
                .antiEntropy(
                    .keyHashesRequest(
                        id: request, partition: partition, leaves: MerkleTree.everyLeaf,
                        after: push.after)),
                to: owner),
            .startTimer(id: request, afterMilliseconds: settings.requestTimeoutMilliseconds),
        ]
    }

    /// A message arrived: an owner's listing, or its answer to a merge.
    public mutating func received(_ message: AntiEntropyMessage, from sender: NodeID) -> [Action] {
        switch message {
        case .keyHashes(let id, let entries, let truncated):
            guard
                let (partition, push) = push(where: {
                    if case .asking(id, _) = $0 { true } else { false }
                }),
                push.owners.first == sender, case .asking(_, let ours) = push.step
            else { return [] }
            let paired = KeyListing.paired(ours, KeyListing(entries: entries, truncated: truncated))
            let theirs = Dictionary(paired.theirs.map { ($0.key, $0.hash) }, uniquingKeysWith: { a, _ in a })
            var next = push
            next.queue = paired.ours.filter { theirs[$0.key] != $0.hash }.map(\.key)
            next.bound = paired.bound
            pushes[partition] = next
            return [.cancelTimer(id: id)] + pushNext(partition)
        case .reconciled(let id, let outcome):
            guard
                let (partition, push) = push(where: {
                    if case .pushing(id) = $0 { true } else { false }
                }),
                push.owners.first == sender
            else { return [] }
            guard case .object = outcome else {
                let reason: String
                if case .failed(let error) = outcome { reason = error.message } else { reason = "" }
                return [.cancelTimer(id: id)]
                    + stop(partition, "merging a row into \(sender) failed: \(reason)")
            }
            counters.rowsPushed += 1
            return [.cancelTimer(id: id)] + pushNext(partition)
        case .treeRequest, .treeHashes, .keyHashesRequest, .reconcile:
            return []
        }
    }

    /// A row of the page was loaded.
    public mutating func loaded(id: UInt64, _ row: LoadedRow) -> [Action] {
        guard let (partition, push) = push(where: { if case .loading(id) = $0 { true } else { false } }),
            let owner = push.owners.first
        else { return [] }
        switch row {
        case .row(let key, let object):
            // Nothing to push of a row this node holds nothing of (reaped meanwhile).
            guard !object.entries.isEmpty else { return pushNext(partition) }
            let request = takeID()
            pushes[partition]?.step = .pushing(request: request)
            return [
                .send(.antiEntropy(.reconcile(id: request, key: key, object: object)), to: owner),
                .startTimer(id: request, afterMilliseconds: settings.requestTimeoutMilliseconds),
            ]
        case .droppedTable:
            return pushNext(partition)
        case .unknownTable:
            return stop(partition, "a row of a table this node does not know yet")
        case .failed:
            return stop(partition, "loading a row failed")
        }
    }

    /// The batch of releases was recorded (`ok`), or could not be (a later tick pushes
    /// its partitions again).
    public mutating func recorded(_ batch: [LayoutPartition], ok: Bool) -> [Action] {
        guard !batch.isEmpty, batch == records.writing else { return [] }
        for record in batch {
            guard let push = pushes[record.partition], case .recording = push.step,
                push.purpose == .release(layoutVersion: record.layoutVersion)
            else { continue }
            pushes[record.partition] = nil
            if ok {
                counters.partitionsReleased += 1
                waiting[record.partition] = nil
            }
        }
        return perform(records.written(timerID: takeID()))
    }

    /// The copy was dropped (`ok`), or was not (placed here again, or the delete failed).
    public mutating func dropped(_ partition: PartitionID, ok: Bool) -> [Action] {
        guard case .dropping? = pushes[partition]?.step else { return [] }
        pushes[partition] = nil
        if ok {
            counters.partitionsDropped += 1
            foreignSince[partition] = nil
            waiting[partition] = nil
        }
        return []
    }

    /// A request could not be sent: its push stops.
    public mutating func sendFailed(_ message: AntiEntropyMessage, to peer: NodeID) -> [Action] {
        let id: UInt64
        switch message {
        case .keyHashesRequest(let request, _, _, _), .reconcile(let request, _, _): id = request
        case .treeRequest, .treeHashes, .keyHashes, .reconciled: return []
        }
        guard isWaiting(for: id), let (partition, push) = push(waitingFor: id), push.owners.first == peer
        else {
            return []
        }
        return [.cancelTimer(id: id)] + stop(partition, "owner \(peer) is unreachable")
    }

    /// A timer fired: a request went unanswered, and its push stops; or the cool-down
    /// after written releases ended.
    public mutating func timerFired(id: UInt64) -> [Action] {
        if records.ownsTimer(id) { return perform(records.timerFired(id: id)) }
        guard let (partition, push) = push(waitingFor: id), let owner = push.owners.first else { return [] }
        counters.timeouts[owner, default: 0] += 1
        return [.unanswered(owner)] + stop(partition, "owner \(owner) did not answer in time")
    }

    // MARK: - Steps

    private mutating func takeID() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }

    /// Pushes under way, without those whose release waits to be written.
    private var activePushes: Int {
        pushes.values.count(where: { if case .recording = $0.step { false } else { true } })
    }

    /// The batcher's step as this machine's actions.
    private func perform(_ step: ProgressRecords.Step) -> [Action] {
        switch step {
        case .none: []
        case .write(let batch): [.recordReleases(batch)]
        case .startTimer(let id, let milliseconds): [.startTimer(id: id, afterMilliseconds: milliseconds)]
        }
    }

    private func push(where matches: (Step) -> Bool) -> (PartitionID, Push)? {
        pushes.first { matches($0.value.step) }.map { ($0.key, $0.value) }
    }

    private func push(waitingFor id: UInt64) -> (PartitionID, Push)? {
        push { step in
            switch step {
            case .asking(let request, _), .pushing(let request): request == id
            case .starting, .listing, .loading, .recording, .dropping: false
            }
        }
    }

    /// Lists this node's next page of the partition.
    private mutating func listPage(_ partition: PartitionID) -> [Action] {
        guard let push = pushes[partition] else { return [] }
        let id = takeID()
        pushes[partition]?.step = .listing(id: id)
        return [.list(id: id, partition: partition, after: push.after, withHashes: push.withHashes)]
    }

    /// Pushes the page's next differing row, or moves on to the next page.
    private mutating func pushNext(_ partition: PartitionID) -> [Action] {
        guard var push = pushes[partition] else { return [] }
        guard !push.queue.isEmpty else {
            guard let bound = push.bound else { return ownerDone(partition) }
            push.after = bound
            push.bound = nil
            pushes[partition] = push
            return listPage(partition)
        }
        let key = push.queue.removeFirst()
        let id = takeID()
        push.step = .loading(id: id)
        pushes[partition] = push
        return [.load(id: id, partition: partition, key: key)]
    }

    /// The current owner holds everything: on to the next, or the push is done.
    private mutating func ownerDone(_ partition: PartitionID) -> [Action] {
        guard var push = pushes[partition] else { return [] }
        push.owners.removeFirst()
        push.after = nil
        push.queue = []
        push.bound = nil
        pushes[partition] = push
        return push.owners.isEmpty ? finish(partition) : listPage(partition)
    }

    /// Every owner holds everything: record the release, or drop the copy.
    private mutating func finish(_ partition: PartitionID) -> [Action] {
        guard var push = pushes[partition] else { return [] }
        switch push.purpose {
        case .release(let version):
            push.step = .recording
            pushes[partition] = push
            return perform(records.add(LayoutPartition(partition, layoutVersion: version)))
        case .drop:
            guard push.heldRows else {
                pushes[partition] = nil
                return []
            }
            push.step = .dropping
            pushes[partition] = push
            return [.drop(partition: partition)]
        }
    }

    private mutating func stop(_ partition: PartitionID, _ reason: String) -> [Action] {
        guard let push = pushes.removeValue(forKey: partition) else { return [] }
        return wait(partition, push.purpose, reason)
    }

    private mutating func wait(_ partition: PartitionID, _ purpose: Purpose, _ reason: String) -> [Action] {
        guard waiting[partition] != reason else { return [] }
        waiting[partition] = reason
        return [.waits(partition: partition, purpose: purpose, reason: reason)]
    }
}
