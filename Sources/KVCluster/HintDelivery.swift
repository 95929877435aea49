import KVCore

/// Settings of ``HintDelivery``.
public struct HintDeliverySettings: Hashable, Sendable {
    /// Hints handed back per second, shared by the targets delivered to at once.
    public var ratePerSecond: Int
    /// How often the shell calls ``HintDelivery/tick(_:)``.
    public var tickMilliseconds: Int64
    /// How long one handoff waits for its answer before the delivery stops (the hint
    /// stays and goes again on a later tick).
    public var requestTimeoutMilliseconds: Int64

    /// Creates settings.
    public init(
        ratePerSecond: Int = 2_000, tickMilliseconds: Int64 = 100, requestTimeoutMilliseconds: Int64 = 1_000
    ) {
        self.ratePerSecond = ratePerSecond
        self.tickMilliseconds = tickMilliseconds
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
    }

    /// The hints one delivery reads at most: a tick's share of the rate.
    func batchSize(targets: Int) -> Int {
        max(1, ratePerSecond * Int(tickMilliseconds) / 1_000 / max(1, targets))
    }
}

/// A hint as stored: its storage key and its record (`nil` when the record cannot be
/// decoded, which delivery removes).
public struct StoredHint: Hashable, Sendable {
    /// The key in the hints keyspace (`StorageLayout.hintKey(target:sequence:)`).
    public var storageKey: [UInt8]
    /// The hint, if it decodes.
    public var record: HintRecord?

    /// Creates a value.
    public init(storageKey: [UInt8], record: HintRecord?) {
        self.storageKey = storageKey
        self.record = record
    }
}

/// What a node knows when it hands hints back.
public struct HintDeliveryView: Sendable {
    /// This node.
    public var node: NodeID
    /// Targets that hold hints here.
    public var targetsWithHints: [NodeID]
    /// Members that are connected and SWIM believes alive.
    public var reachable: Set<NodeID>
    /// Members that left for good (``ClusterMetadata/departed``).
    public var departed: Set<NodeID>
    /// Where rows live now, or `nil` before the cluster formed.
    public var placement: Placement?
    /// The table generations this node's catalog has: a hint of any other generation
    /// is obsolete.
    public var knownGenerations: Set<UInt64>

    /// Creates a view.
    public init(
        node: NodeID, targetsWithHints: [NodeID], reachable: Set<NodeID>, departed: Set<NodeID>,
        placement: Placement?, knownGenerations: Set<UInt64>
    ) {
        self.node = node
        self.targetsWithHints = targetsWithHints
        self.reachable = reachable
        self.departed = departed
        self.placement = placement
        self.knownGenerations = knownGenerations
    }

    /// Who a hint for `target` goes to: the target while it still holds the key's
    /// partition (in the layout, or as a previous owner of a moving partition), else the
    /// partition's replicas in the layout.
    public func recipients(of record: HintRecord) -> [NodeID] {
        guard let placement else { return [record.target] }
        if !departed.contains(record.target),
            placement.writeSets(of: record.key.partition).contains(where: { $0.contains(record.target) })
        {
            return [record.target]
        }
        return placement.layout.replicas(of: record.key.partition)
    }
}

/// Hinted handoff as a pure state machine: which targets get their hints back, in what
/// order, how long each handoff waits, where a hint goes once its target no longer
/// holds the row, and which hints may be removed. The shell reads and removes hints,
/// carries messages and fires timers; this machine decides.
///
/// ## Rules
///
/// - **Who.** Each tick starts one delivery for every target that holds hints here and
///   is reachable, or has departed (its hints then go to the row's current replicas).
///   A target has at most one delivery at a time.
/// - **How much.** A delivery reads the target's oldest hints, a tick's share of the
///   rate divided among the targets delivered to at once.
/// - **Order.** Hints go one at a time, in the order they were taken; the next leaves
///   only once the previous was acknowledged. The first hint that is refused, cannot be
///   sent or times out stops the delivery: it and the rest stay for a later tick.
/// - **Reroute.** A hint whose target no longer holds the key's partition goes to every
///   current replica of the partition (this node's own copy is reconciled in its
///   storage); it counts as delivered once every one of them has it.
/// - **Obsolete.** A hint of a table generation the catalog lacks (the table was cleared
///   or dropped since), or one that cannot be decoded, is removed undelivered.
/// - **Removal.** Delivered and obsolete hints are removed in one synced write; only
///   once that is stored does the delivery end. A removal lost in a crash delivers the
///   hint again, which the merge absorbs: delivery is at least once, merging makes it
///   exactly once in effect.
///
/// Message ids start at a value the shell draws for each life of the node, so a late
/// answer to a previous life's handoff is never taken for a new one.
public struct HintDelivery: Sendable {
    /// What the shell must do. Interpreters switch over it without a `default:`.
    public enum Action: Hashable, Sendable {
        /// Read the oldest `limit` hints held for `target`, then report
        /// ``HintDelivery/hintsRead(target:_:view:)``.
        case readHints(target: NodeID, limit: Int)
        /// Send a message (a ``HintMessage/handoff(id:key:object:)``). If it cannot be
        /// sent, report ``HintDelivery/sendFailed(_:to:)``.
        case send(ReplicaMessage, to: NodeID)
        /// Merge a rerouted hint into this node's own copy
        /// (``StorageCommand/reconcile(_:_:)``), then report
        /// ``HintDelivery/storageCompleted(id:_:)`` with `id`.
        case reconcile(id: UInt64, key: ReplicaKey, object: StoredObject)
        /// Report ``HintDelivery/timerFired(id:)`` after the given time, unless cancelled.
        case startTimer(id: UInt64, afterMilliseconds: Int64)
        /// Cancel the timer of `id`.
        case cancelTimer(id: UInt64)
        /// `peer` left a request unanswered in time (the shell counts it against the
        /// connection: ``PeerSilence``).
        case unanswered(NodeID)
        /// Remove these hints with one synced write, then report
        /// ``HintDelivery/removalStored(target:)`` (or ``HintDelivery/removalFailed(target:)``).
        case remove(HintRemoval)
    }

    /// The end of one delivery: what to remove and what to count.
    public struct HintRemoval: Hashable, Sendable {
        /// The target delivered to.
        public var target: NodeID
        /// Hints acknowledged by every recipient.
        public var delivered: [StoredHint]
        /// Who acknowledged each delivered hint (the target, or the row's replicas).
        public var recipients: [[NodeID]] = []
        /// Obsolete hints, removed undelivered.
        public var dropped: [StoredHint]
        /// Hints that were sent and not acknowledged (they stay).
        public var failed: Int
        /// Delivered hints that went to the row's current replicas instead of the target.
        public var rerouted: Int
    }

    /// One target's delivery.
    private struct Session: Sendable {
        /// Hints still to send, oldest first.
        var queue: [StoredHint] = []
        var removal: HintRemoval
        /// The hint in flight: its recipients still owing an answer, by request id.
        var waiting: [UInt64: NodeID] = [:]
        var currentFailed = false
        var currentRecipients: [NodeID] = []
        var currentRerouted = false
        var reading = true
        var removing = false
    }

    /// The machine's settings.
    public let settings: HintDeliverySettings
    private var sessions: [NodeID: Session] = [:]
    /// Which session each request in flight belongs to.
    private var requests: [UInt64: NodeID] = [:]
    private var nextID: UInt64

    /// Creates the machine; `firstMessageID` must differ for every life of the node.
    public init(settings: HintDeliverySettings = HintDeliverySettings(), firstMessageID: UInt64) {
        self.settings = settings
        self.nextID = firstMessageID
    }

    /// Targets with a delivery under way.
    public var delivering: Set<NodeID> { Set(sessions.keys) }

    // MARK: - Events

    /// The shell's periodic tick: starts deliveries.
    public mutating func tick(_ view: HintDeliveryView) -> [Action] {
        let targets = view.targetsWithHints.filter { target in
            sessions[target] == nil && (view.reachable.contains(target) || view.departed.contains(target))
        }.sorted()
        guard !targets.isEmpty else { return [] }
        let limit = settings.batchSize(targets: targets.count)
        return targets.map { target in
            sessions[target] = Session(
                removal: HintRemoval(target: target, delivered: [], dropped: [], failed: 0, rerouted: 0))
            return .readHints(target: target, limit: limit)
        }
    }

    /// The hints read for a delivery (empty when reading failed or none were left).
    public mutating func hintsRead(target: NodeID, _ hints: [StoredHint], view: HintDeliveryView) -> [Action]
    {
        guard var session = sessions[target], session.reading else { return [] }
        session.reading = false
        for hint in hints {
            // A hint of a partition outside the layout has no replicas to go to (only a
            // faulty peer could have left one).
            if let record = hint.record,
                record.key.generation == 0 || view.knownGenerations.contains(record.key.generation),
                Int(record.key.partition.rawValue) < view.placement?.layout.partitionCount ?? Int.max
            {
                session.queue.append(hint)
            } else {
                session.removal.dropped.append(hint)
            }
        }
        sessions[target] = session
        return sendNext(target, view: view)
    }

    /// A message arrived: the answer to a handoff.
    public mutating func received(_ message: HintMessage, from sender: NodeID, view: HintDeliveryView)
        -> [Action]
    {
        guard case .handedOff(let id, let error) = message, requests[id] != nil else { return [] }
        return answered(id, from: sender, ok: error == nil, view: view, cancel: true)
    }

    /// A handoff could not be sent.
    public mutating func sendFailed(_ message: HintMessage, to target: NodeID, view: HintDeliveryView)
        -> [Action]
    {
        guard case .handoff(let id, _, _) = message, requests[id] != nil else { return [] }
        return answered(id, from: target, ok: false, view: view, cancel: true)
    }

    /// A handoff's timer fired: no answer in time.
    public mutating func timerFired(id: UInt64, view: HintDeliveryView) -> [Action] {
        guard let target = requests[id], let recipient = sessions[target]?.waiting[id] else { return [] }
        return [.unanswered(recipient)] + answered(id, from: recipient, ok: false, view: view, cancel: false)
    }

    /// A rerouted hint's reconcile into this node's own copy finished.
    public mutating func storageCompleted(id: UInt64, _ outcome: StorageOutcome, view: HintDeliveryView)
        -> [Action]
    {
        guard requests[id] != nil else { return [] }
        let ok: Bool
        switch outcome {
        case .object: ok = true
        case .failed: ok = false
        }
        return answered(id, from: view.node, ok: ok, view: view, cancel: false)
    }

    /// The removal of a delivery was stored: the delivery ends.
    public mutating func removalStored(target: NodeID) {
        if sessions[target]?.removing == true { sessions[target] = nil }
    }

    /// The removal could not be stored: the delivery ends, and every hint stays.
    public mutating func removalFailed(target: NodeID) {
        removalStored(target: target)
    }

    // MARK: - Sending

    /// Sends the next hint of `target`'s delivery, or ends the delivery.
    private mutating func sendNext(_ target: NodeID, view: HintDeliveryView) -> [Action] {
        guard var session = sessions[target] else { return [] }
        guard !session.queue.isEmpty, let record = session.queue[0].record else { return finish(target) }
        let recipients = view.recipients(of: record)
        session.currentFailed = false
        session.currentRecipients = recipients
        session.currentRerouted = recipients != [target]
        var actions: [Action] = []
        for recipient in recipients {
            let id = nextID
            nextID &+= 1
            if recipient == view.node {
                actions.append(.reconcile(id: id, key: record.key, object: record.object))
            } else if recipient == target || view.reachable.contains(recipient) {
                actions.append(
                    .send(.hints(.handoff(id: id, key: record.key, object: record.object)), to: recipient))
                actions.append(.startTimer(id: id, afterMilliseconds: settings.requestTimeoutMilliseconds))
            } else {
                // A current replica that is unreachable: this hint cannot be handed on now.
                session.currentFailed = true
                continue
            }
            session.waiting[id] = recipient
            requests[id] = target
        }
        sessions[target] = session
        if session.waiting.isEmpty { return actions + hintDone(target, view: view) }
        return actions
    }

    private mutating func answered(
        _ id: UInt64, from recipient: NodeID, ok: Bool, view: HintDeliveryView, cancel: Bool
    ) -> [Action] {
        guard let target = requests[id], var session = sessions[target], session.waiting[id] == recipient
        else {
            return []
        }
        requests[id] = nil
        session.waiting[id] = nil
        if !ok { session.currentFailed = true }
        sessions[target] = session
        let cancelled: [Action] = cancel && recipient != view.node ? [.cancelTimer(id: id)] : []
        guard session.waiting.isEmpty else { return cancelled }
        return cancelled + hintDone(target, view: view)
    }

    /// Every recipient of the current hint answered (or could not be asked).
    private mutating func hintDone(_ target: NodeID, view: HintDeliveryView) -> [Action] {
        guard var session = sessions[target] else { return [] }
        let hint = session.queue.removeFirst()
        if session.currentFailed {
            session.removal.failed += 1
            session.queue = []
        } else {
            session.removal.delivered.append(hint)
            session.removal.recipients.append(session.currentRecipients)
            if session.currentRerouted { session.removal.rerouted += 1 }
        }
        sessions[target] = session
        return sendNext(target, view: view)
    }

    /// Ends a delivery: removes what it may, or ends at once when there is nothing.
    private mutating func finish(_ target: NodeID) -> [Action] {
        guard var session = sessions[target] else { return [] }
        if session.removal.delivered.isEmpty && session.removal.dropped.isEmpty && session.removal.failed == 0
        {
            sessions[target] = nil
            return []
        }
        session.removing = true
        sessions[target] = session
        return [.remove(session.removal)]
    }
}
