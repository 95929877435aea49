import KVCore

/// Settings of ``PartitionTransfers``.
public struct TransferSettings: Hashable, Sendable {
    /// The most bytes of rows one pull asks for.
    public var batchBytes: Int
    /// How long a pull waits for its batch.
    public var requestTimeoutMilliseconds: Int64
    /// The pause after the n-th failure in a row is n times this.
    public var retryMilliseconds: Int64
    /// Failures in a row after which a transfer stops until a later tick.
    public var maximumFailures: Int
    /// The pause after writing receipts, during which new ones wait to be written
    /// together (``ProgressRecords``).
    public var receiptCoolDownMilliseconds: Int64

    /// Creates settings.
    public init(
        batchBytes: Int = 4 << 20, requestTimeoutMilliseconds: Int64 = 10_000, retryMilliseconds: Int64 = 200,
        maximumFailures: Int = 6, receiptCoolDownMilliseconds: Int64 = 100
    ) {
        self.batchBytes = batchBytes
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        self.retryMilliseconds = retryMilliseconds
        self.maximumFailures = maximumFailures
        self.receiptCoolDownMilliseconds = receiptCoolDownMilliseconds
    }
}

/// What a node knows when it runs its transfers.
public struct TransferView: Sendable {
    /// This node.
    public var node: NodeID
    /// The formed layout, or `nil` before the cluster formed.
    public var layout: Layout?
    /// The layout change in progress towards `layout`.
    public var transition: LayoutTransition?
    /// The operator's limits.
    public var control: HandoffControl
    /// Members that are connected and believed alive: the sources a pull may go to.
    public var reachable: Set<NodeID>
    /// Members not believed down (connected or not): new owners whose transfers count
    /// against the cluster-wide limit.
    public var believedUp: Set<NodeID>
    /// The shell's monotonic time, for the byte rate.
    public var nowMilliseconds: Int64

    /// Creates a view.
    public init(
        node: NodeID, layout: Layout?, transition: LayoutTransition?, control: HandoffControl,
        reachable: Set<NodeID>, believedUp: Set<NodeID>, nowMilliseconds: Int64
    ) {
        self.node = node
        self.layout = layout
        self.transition = transition
        self.control = control
        self.reachable = reachable
        self.believedUp = believedUp
        self.nowMilliseconds = nowMilliseconds
    }

    /// Whether `node` should still receive `partition` for layout `version`.
    func wants(_ partition: PartitionID, version: UInt64) -> Bool {
        guard let layout, layout.version == version, let transition else { return false }
        return transition.destinations(of: partition, in: layout).contains(node)
            && !transition.received.contains(TransferSlot(partition: partition, node: node))
    }
}

/// Where a new owner is in receiving one partition, as it persists it: either all of it
/// is here, or every row up to and including `after` is (nothing yet when `nil`).
public struct TransferCursor: Hashable, Sendable {
    /// Whether the whole partition is here.
    public var done: Bool
    /// The last row key stored, in the partition's key order.
    public var after: [UInt8]?

    /// Creates a cursor.
    public init(done: Bool, after: [UInt8]?) {
        self.done = done
        self.after = after
    }

    /// The stored form: `1` when done, else `0` and the last key.
    public var encoded: [UInt8] { done ? [1] : [0] + (after ?? []) }

    /// Reads a stored cursor; an unknown form starts over.
    public init(encoded: [UInt8]) {
        done = encoded.first == 1
        after = !done && encoded.count > 1 ? Array(encoded.dropFirst()) : nil
    }
}

/// Counters of ``PartitionTransfers``.
public struct TransferCounters: Hashable, Sendable {
    public var transfersStarted: Int64 = 0
    public var transfersCompleted: Int64 = 0
    public var batchesReceived: Int64 = 0
    public var rowsReceived: Int64 = 0
    public var bytesReceived: Int64 = 0
    public var pullsFailed: Int64 = 0

    /// Creates zero counters.
    public init() {}
}

/// The receiving side of rebalancing as a pure state machine: which partitions a new
/// owner pulls and when, from which previous owner, where it resumes, how failures back
/// off, how the byte rate paces it, and when a partition counts as received. The shell
/// reads and stores rows and cursors, carries pulls, fires timers and records the
/// receipt in the cluster metadata; this machine decides. Sources serve pulls from one
/// engine snapshot per transfer (``PartitionTransfers/refusal(partition:layoutVersion:view:)``
/// says when they refuse).
///
/// ## Rules
///
/// - **Which.** Each ``tick(_:)`` admits the pending transfers of the transition in the
///   order every node computes alike (``LayoutTransition/pendingTransfers(in:)``), the
///   first `clusterConcurrency` of those whose new owner is believed up, and of them
///   this node's own, at most `nodeConcurrency` pulling at once. A transfer whose rows
///   are all here frees its node slot at once, while its receipt waits to be written
///   (it counts against the cluster-wide limit until the receipt is in the metadata); a
///   written batch of receipts admits again at once, from a view that counts them.
///   While transfers are paused nothing starts, and a running transfer stops before its
///   next pull.
/// - **Resume.** A transfer first reads its stored cursor: a done cursor means the
///   partition is here (a crash came between the last batch and the receipt); otherwise
///   it pulls after the cursor's key. Rows are stored (synced) before the cursor after
///   them, and the cursor is written without a flush of its own, so a crash can lose
///   cursors but never rows before one: it re-sends the batches whose cursors it lost
///   (usually the last), which merging absorbs.
/// - **Pipelined.** When a batch that is not the last arrives, the pull after its last
///   key goes out at once to the same source (if reachable, the transfer still wanted and
///   unpaused, the byte budget unspent and both batches' cost within its debt bound), so
///   the next batch travels while this one is stored. A batch that arrives first waits
///   unstored until the cursor before it is saved; one that arrives later is the
///   transfer's next pull. A refused, lost or late pull ahead fails the pull after the
///   cursor, which backs off and moves to the next source as below. A batch that cannot
///   be stored drops what was pulled after it.
/// - **From whom.** A source is a previous owner the transition names
///   (``LayoutTransition/sources(of:in:)``, leavers first) that is reachable; each
///   failed pull moves to the next. With every previous owner abandoned there is nothing
///   to copy, and the partition counts as received at once. With none reachable the
///   transfer stops until a later tick.
/// - **Failures.** A refused, lost or late pull, or a batch that could not be stored,
///   pauses for `n × retryMilliseconds` after the n-th failure in a row, and after
///   `maximumFailures` of them the transfer stops until a later tick. A batch stored
///   resets the count.
/// - **Rate.** With a byte rate set, each batch stored costs its bytes against the
///   node's budget from when it was pulled (shared by its transfers, at most 2 s of
///   debt), and a pull waits, a second at most at a time, until the budget allows it.
///   A transfer slower than the rate therefore never waits.
/// - **Receipts.** A received partition is recorded in the cluster metadata in batches
///   (``ProgressRecords``, with ``TransferSettings/receiptCoolDownMilliseconds``): the
///   first at once, the rest of a handoff a batch per cool-down, so the cluster stores
///   and merges a few changes a second instead of one per partition. A batch that could
///   not be written stops its transfers; the next admission (at once when a slot is
///   free) finds their cursors done and records them again, with the next batch.
/// - **Stale.** A transfer whose slot is no longer wanted (another layout version, or
///   the receipt is recorded) stops at its next step; answers and timers of a stopped
///   transfer are ignored.
///
/// Message ids start at a value the shell draws for each life of the node, so a late
/// batch of a previous life is never taken for a new one.
public struct PartitionTransfers: Sendable {
    /// What the shell must do. Interpreters switch over it without a `default:`.
    public enum Action: Hashable, Sendable {
        /// Read the stored cursor of `partition` for `layoutVersion`, then report
        /// ``PartitionTransfers/cursorRead(_:layoutVersion:_:view:)``.
        case readCursor(PartitionID, layoutVersion: UInt64)
        /// Send a message (a ``TransferMessage/transferPull(id:partition:layoutVersion:after:maximumBytes:)``).
        /// If it cannot be sent, report ``PartitionTransfers/sendFailed(_:view:)``.
        case send(ReplicaMessage, to: NodeID)
        /// Merge the rows into storage (each as ``StorageCommand/reconcile(_:_:)``; a row
        /// of a dropped table counts as stored), then report
        /// ``PartitionTransfers/stored(id:ok:view:)``: `false` when a row's table is not
        /// in the catalog yet or the engine failed.
        case store(id: UInt64, PartitionID, rows: [ScanRow])
        /// Persist `cursor`, then report ``PartitionTransfers/cursorSaved(id:ok:view:)``.
        /// It need not be synced: the rows before it already are, and a cursor a crash
        /// loses costs its batch pulled again, which merging absorbs.
        case saveCursor(id: UInt64, PartitionID, layoutVersion: UInt64, TransferCursor)
        /// Record in the cluster metadata, as one change, that this node received each
        /// partition (for its layout version; a record of another version is moot and
        /// skipped), then report ``PartitionTransfers/receiptsRecorded(_:ok:view:)``.
        case recordReceipts([LayoutPartition])
        /// Report ``PartitionTransfers/timerFired(id:view:)`` after the given time, unless
        /// cancelled.
        case startTimer(id: UInt64, afterMilliseconds: Int64)
        /// Cancel the timer of `id`.
        case cancelTimer(id: UInt64)
        /// `peer` left a request unanswered in time (the shell counts it against the
        /// connection: ``PeerSilence``).
        case unanswered(NodeID)
    }

    /// A row of a batch: its storage key and object.
    public struct ScanRow: Hashable, Sendable {
        public var key: [UInt8]
        public var object: StoredObject

        /// Creates a row.
        public init(key: [UInt8], object: StoredObject) {
            self.key = key
            self.object = object
        }
    }

    /// What this node shows of one partition it receives.
    public struct Inbound: Hashable, Sendable {
        /// The layout version it is received for.
        public var layoutVersion: UInt64
        /// The source of the last pull.
        public var source: NodeID?
        /// `waiting`, `running`, `paused` or `received`.
        public var state: String = "waiting"
        public var rows: UInt64 = 0
        public var bytes: UInt64 = 0
        public var estimatedRows: UInt64 = 0
        public var batches: UInt64 = 0
        /// Recent bytes per second (exponentially smoothed).
        public var bytesPerSecond: Double = 0
        /// When the last batch was stored, in the shell's time.
        public var lastBatchMilliseconds: Int64?
        /// Whether a step of it is under way.
        public var running = false
    }

    private enum Step: Hashable, Sendable {
        case readingCursor
        case pulling(id: UInt64, from: NodeID)
        case storing(id: UInt64, done: Bool, rows: Int, bytes: Int)
        case saving(id: UInt64, done: Bool, rows: Int, bytes: Int)
        case waiting(timer: UInt64)
        case recording
    }

    /// The pull sent while the batch before it is stored, or its batch, held until the
    /// cursor before it is saved.
    private enum Ahead: Hashable, Sendable {
        case pulling(id: UInt64, from: NodeID, at: Int64)
        case received(rows: [ScanRow], done: Bool, bytes: Int, last: [UInt8]?, pulledAt: Int64)
        /// Refused, lost or late: the pull after the cursor backs off as after any failure.
        case failed
    }

    private struct Transfer: Sendable {
        var version: UInt64
        var step: Step
        var after: [UInt8]?
        var failures = 0
        var sourceIndex = 0
        /// Only while a batch is stored or its cursor saved.
        var ahead: Ahead?
        /// When the pull of the batch in hand went out, in the shell's time: its bytes
        /// are charged to the budget from then.
        var pulledAt: Int64 = .min
    }

    /// The machine's settings.
    public let settings: TransferSettings
    /// The partitions this node receives, for reports.
    public private(set) var inbound: [PartitionID: Inbound] = [:]
    /// Counters.
    public private(set) var counters = TransferCounters()
    private var running: [PartitionID: Transfer] = [:]
    /// Which transfer each pull or timer belongs to.
    private var owners: [UInt64: PartitionID] = [:]
    /// When the byte budget next allows a batch, in the shell's time.
    private var throttleUntil: Int64 = .min
    /// Receipts written and waiting to be.
    private var receipts: ProgressRecords
    private var nextID: UInt64

    /// Creates the machine; `firstMessageID` must differ for every life of the node.
    public init(settings: TransferSettings = TransferSettings(), firstMessageID: UInt64) {
        self.settings = settings
        self.nextID = firstMessageID
        self.receipts = ProgressRecords(coolDownMilliseconds: settings.receiptCoolDownMilliseconds)
    }

    /// Partitions with a transfer under way.
    public var receiving: Set<PartitionID> { Set(running.keys) }

    /// Why a source refuses a pull of `partition` for `layoutVersion`, or `nil` when it
    /// serves it: only a node the transition names as a source serves, and only for the
    /// layout version it knows.
    public static func refusal(partition: PartitionID, layoutVersion: UInt64, view: TransferView) -> KVError?
    {
        guard let layout = view.layout, layout.version == layoutVersion, let transition = view.transition,
            transition.sources(of: partition, in: layout).contains(view.node)
        else {
            return KVError(
                .unavailable, "this node is not a source of partition \(partition) in layout \(layoutVersion)"
            )
        }
        return nil
    }

    // MARK: - Events

    /// Starts the transfers the limits admit.
    public mutating func tick(_ view: TransferView) -> [Action] {
        guard let layout = view.layout else { return [] }
        // Progress of another layout version is over.
        inbound = inbound.filter { $0.value.layoutVersion == layout.version || running[$0.key] != nil }
        guard let transition = view.transition else { return [] }
        let pending = transition.pendingTransfers(in: layout)
        for slot in pending where slot.node == view.node {
            if inbound[slot.partition]?.layoutVersion != layout.version, running[slot.partition] == nil {
                inbound[slot.partition] = Inbound(layoutVersion: layout.version)
            }
        }
        guard !view.control.paused else {
            for (partition, entry) in inbound where running[partition] == nil && entry.state != "received" {
                inbound[partition]?.state = "paused"
            }
            return []
        }
        // A node whose copy of the metadata lags sees more pending, so it admits fewer,
        // never more; transfers to a node believed down cannot start and hold no slot.
        let admitted = pending.filter { $0.node == view.node || view.believedUp.contains($0.node) }
            .prefix(view.control.clusterConcurrency).filter { $0.node == view.node }
        var actions: [Action] = []
        // A transfer whose receipt waits to be written holds no slot.
        var pulling = running.values.count(where: { $0.step != .recording })
        for slot in admitted where running[slot.partition] == nil {
            guard pulling < view.control.nodeConcurrency else { break }
            pulling += 1
            running[slot.partition] = Transfer(version: layout.version, step: .readingCursor)
            inbound[slot.partition]?.state = "running"
            inbound[slot.partition]?.running = true
            counters.transfersStarted += 1
            actions.append(.readCursor(slot.partition, layoutVersion: layout.version))
        }
        return actions
    }

    /// The stored cursor of a transfer was read (`nil`: none, or it could not be read).
    public mutating func cursorRead(
        _ partition: PartitionID, layoutVersion: UInt64, _ cursor: TransferCursor?, view: TransferView
    ) -> [Action] {
        guard var transfer = running[partition], transfer.version == layoutVersion,
            transfer.step == .readingCursor
        else { return [] }
        if cursor?.done == true { return recordReceipt(partition, &transfer, view: view) }
        transfer.after = cursor?.after
        return pull(partition, transfer, view: view)
    }

    /// A message for this machine arrived.
    public mutating func received(_ message: TransferMessage, from sender: NodeID, view: TransferView)
        -> [Action]
    {
        guard case .transferRows(let id, let page, let estimatedRows) = message,
            let partition = owners[id], var transfer = running[partition]
        else { return [] }
        if case .pulling(id, sender, _)? = transfer.ahead {
            return receivedAhead(id: id, page, estimatedRows: estimatedRows, partition, transfer)
        }
        guard case .pulling(id, sender) = transfer.step else { return [] }
        owners[id] = nil
        var actions: [Action] = [.cancelTimer(id: id)]
        if page.error != nil {
            counters.pullsFailed += 1
            transfer.sourceIndex += 1
            return actions + failed(partition, transfer, view: view)
        }
        if var entry = inbound[partition] {
            entry.estimatedRows = max(estimatedRows, entry.rows)
            inbound[partition] = entry
        }
        let storeID = takeID()
        owners[storeID] = partition
        let bytes = page.rows.reduce(0) { $0 + $1.key.count + StoredObjectCodec.encodedCount($1.object) }
        transfer.step = .storing(id: storeID, done: !page.truncated, rows: page.rows.count, bytes: bytes)
        if let last = page.rows.last?.key { transfer.after = last }
        running[partition] = transfer
        let rows = page.rows.map { ScanRow(key: $0.key, object: $0.object) }
        actions.append(.store(id: storeID, partition, rows: rows))
        if page.truncated { actions += pullAhead(partition, from: sender, storing: bytes, view: view) }
        return actions
    }

    /// The batch of a pull sent ahead: held until the cursor before it is saved. A
    /// refusal is a failure of the pull after the cursor, which then backs off.
    private mutating func receivedAhead(
        id: UInt64, _ page: PartitionScanPage, estimatedRows: UInt64, _ partition: PartitionID,
        _ transfer: Transfer
    ) -> [Action] {
        var transfer = transfer
        owners[id] = nil
        if page.error != nil {
            counters.pullsFailed += 1
            transfer.sourceIndex += 1
            transfer.ahead = .failed
        } else if case .pulling(_, _, let pulledAt)? = transfer.ahead {
            if var entry = inbound[partition] {
                entry.estimatedRows = max(estimatedRows, entry.rows)
                inbound[partition] = entry
            }
            let bytes = page.rows.reduce(0) { $0 + $1.key.count + StoredObjectCodec.encodedCount($1.object) }
            transfer.ahead = .received(
                rows: page.rows.map { ScanRow(key: $0.key, object: $0.object) }, done: !page.truncated,
                bytes: bytes, last: page.rows.last?.key, pulledAt: pulledAt)
        }
        running[partition] = transfer
        return [.cancelTimer(id: id)]
    }

    /// A message could not be sent.
    public mutating func sendFailed(_ message: TransferMessage, view: TransferView) -> [Action] {
        guard case .transferPull(let id, _, _, _, _) = message, let partition = owners[id],
            var transfer = running[partition]
        else { return [] }
        if case .pulling(id, _, _)? = transfer.ahead {
            owners[id] = nil
            counters.pullsFailed += 1
            transfer.sourceIndex += 1
            transfer.ahead = .failed
            running[partition] = transfer
            return [.cancelTimer(id: id)]
        }
        guard case .pulling(id, _) = transfer.step else { return [] }
        owners[id] = nil
        counters.pullsFailed += 1
        transfer.sourceIndex += 1
        return [.cancelTimer(id: id)] + failed(partition, transfer, view: view)
    }

    /// A timer fired: a pull went unanswered, or a pause ended.
    public mutating func timerFired(id: UInt64, view: TransferView) -> [Action] {
        if receipts.ownsTimer(id) { return perform(receipts.timerFired(id: id)) }
        guard let partition = owners.removeValue(forKey: id), var transfer = running[partition] else {
            return []
        }
        if case .pulling(id, let source, _)? = transfer.ahead {
            counters.pullsFailed += 1
            transfer.sourceIndex += 1
            transfer.ahead = .failed
            running[partition] = transfer
            return [.unanswered(source)]
        }
        switch transfer.step {
        case .pulling(id, let source):
            counters.pullsFailed += 1
            transfer.sourceIndex += 1
            return [.unanswered(source)] + failed(partition, transfer, view: view)
        case .waiting(id):
            return pull(partition, transfer, view: view)
        default:
            return []
        }
    }

    /// The rows of a batch were merged (`ok`) or could not all be.
    public mutating func stored(id: UInt64, ok: Bool, view: TransferView) -> [Action] {
        guard let partition = owners[id], var transfer = running[partition],
            case .storing(id, let done, let rows, let bytes) = transfer.step
        else { return [] }
        owners[id] = nil
        // The stored cursor stays where it was: the batch is pulled again, and whatever
        // was pulled after it is dropped.
        guard ok else {
            let dropped = dropAhead(&transfer)
            return dropped + restartFromCursor(partition, transfer, view: view)
        }
        transfer.failures = 0
        let saveID = takeID()
        owners[saveID] = partition
        transfer.step = .saving(id: saveID, done: done, rows: rows, bytes: bytes)
        running[partition] = transfer
        return [
            .saveCursor(
                id: saveID, partition, layoutVersion: transfer.version,
                TransferCursor(done: done, after: done ? nil : transfer.after))
        ]
    }

    /// The cursor after a batch was persisted (`ok`) or could not be.
    public mutating func cursorSaved(id: UInt64, ok: Bool, view: TransferView) -> [Action] {
        guard let partition = owners[id], var transfer = running[partition],
            case .saving(id, let done, let rows, let bytes) = transfer.step
        else { return [] }
        owners[id] = nil
        guard ok else { return stop(partition, state: "waiting") }
        counters.batchesReceived += 1
        counters.rowsReceived += Int64(rows)
        counters.bytesReceived += Int64(bytes)
        if var entry = inbound[partition] {
            entry.rows += UInt64(rows)
            entry.bytes += UInt64(bytes)
            entry.batches += 1
            entry.estimatedRows = max(entry.estimatedRows, entry.rows)
            if let last = entry.lastBatchMilliseconds {
                let seconds = max(0.001, Double(view.nowMilliseconds - last) / 1_000)
                let instant = Double(bytes) / seconds
                entry.bytesPerSecond =
                    entry.bytesPerSecond == 0 ? instant : 0.7 * entry.bytesPerSecond + 0.3 * instant
            }
            entry.lastBatchMilliseconds = view.nowMilliseconds
            inbound[partition] = entry
        }
        reserve(bytes: bytes, pulledAt: transfer.pulledAt, view: view)
        if done { return recordReceipt(partition, &transfer, view: view) }
        // A transfer no longer wanted or paused drops what it pulled ahead; `pull` stops it.
        guard view.wants(partition, version: transfer.version), !view.control.paused else {
            let dropped = dropAhead(&transfer)
            return dropped + pull(partition, transfer, view: view)
        }
        switch transfer.ahead {
        case .received(let rows, let done, let bytes, let last, let pulledAt)?:
            transfer.ahead = nil
            transfer.pulledAt = pulledAt
            let storeID = takeID()
            owners[storeID] = partition
            transfer.step = .storing(id: storeID, done: done, rows: rows.count, bytes: bytes)
            if let last { transfer.after = last }
            running[partition] = transfer
            var actions: [Action] = [.store(id: storeID, partition, rows: rows)]
            if !done, let source = inbound[partition]?.source {
                actions += pullAhead(partition, from: source, storing: bytes, view: view)
            }
            return actions
        case .pulling(let id, let source, let pulledAt)?:
            // Its batch, when it comes, is the transfer's next.
            transfer.ahead = nil
            transfer.pulledAt = pulledAt
            transfer.step = .pulling(id: id, from: source)
            running[partition] = transfer
            return []
        case .failed?:
            transfer.ahead = nil
            return failed(partition, transfer, view: view)
        case nil:
            return pull(partition, transfer, view: view)
        }
    }

    /// The receipts were recorded in the metadata (`ok`) or could not be.
    public mutating func receiptsRecorded(_ records: [LayoutPartition], ok: Bool, view: TransferView)
        -> [Action]
    {
        guard !records.isEmpty, records == receipts.writing else { return [] }
        for record in records {
            guard let transfer = running[record.partition], transfer.version == record.layoutVersion,
                transfer.step == .recording
            else { continue }
            if ok { counters.transfersCompleted += 1 }
            _ = stop(record.partition, state: ok ? "received" : "waiting")
        }
        // Admitting now: waiting for the shell's next tick bounded a handoff of small
        // partitions to a few per tick.
        return perform(receipts.written(timerID: takeID())) + tick(view)
    }

    // MARK: - Steps

    private mutating func pull(_ partition: PartitionID, _ transfer: Transfer, view: TransferView) -> [Action]
    {
        var transfer = transfer
        guard view.wants(partition, version: transfer.version), let layout = view.layout,
            let transition = view.transition
        else { return stop(partition, state: "waiting") }
        if view.control.paused { return stop(partition, state: "paused") }
        let candidates = transition.sources(of: partition, in: layout)
        // Every previous owner was abandoned: nothing is left to copy.
        if candidates.isEmpty { return recordReceipt(partition, &transfer, view: view) }
        let sources = candidates.filter(view.reachable.contains)
        guard !sources.isEmpty else {
            inbound[partition]?.source = nil
            return stop(partition, state: "waiting")
        }
        if view.control.bytesPerSecond > 0, throttleUntil > view.nowMilliseconds {
            let timer = takeID()
            owners[timer] = partition
            transfer.step = .waiting(timer: timer)
            running[partition] = transfer
            // A second at most at a time: a lowered limit or a pause is seen within it.
            return [
                .startTimer(id: timer, afterMilliseconds: min(throttleUntil - view.nowMilliseconds, 1_000))
            ]
        }
        let source = sources[transfer.sourceIndex % sources.count]
        inbound[partition]?.source = source
        let id = takeID()
        owners[id] = partition
        transfer.step = .pulling(id: id, from: source)
        transfer.pulledAt = view.nowMilliseconds
        running[partition] = transfer
        return pullActions(id: id, partition, transfer, to: source)
    }

    /// Sends the pull after the batch being stored (`storing` bytes), to the source of
    /// that batch, so the next batch travels while this one is merged. Not while the byte
    /// budget is spent (the ordinary pull waits for it), nor when paying for both batches
    /// would pass the debt's bound (the bound would forgive one of them), nor when the
    /// source is no longer reachable.
    private mutating func pullAhead(
        _ partition: PartitionID, from source: NodeID, storing bytes: Int, view: TransferView
    ) -> [Action] {
        let rate = view.control.bytesPerSecond
        guard var transfer = running[partition], transfer.ahead == nil,
            view.wants(partition, version: transfer.version), !view.control.paused,
            view.reachable.contains(source),
            rate == 0 || (throttleUntil <= view.nowMilliseconds && 2 * cost(bytes, rate) <= Self.maximumDebt)
        else { return [] }
        let id = takeID()
        owners[id] = partition
        transfer.ahead = .pulling(id: id, from: source, at: view.nowMilliseconds)
        running[partition] = transfer
        return pullActions(id: id, partition, transfer, to: source)
    }

    /// The pull `id` of the batch after `transfer.after`, and its timeout.
    private func pullActions(id: UInt64, _ partition: PartitionID, _ transfer: Transfer, to source: NodeID)
        -> [Action]
    {
        [
            .send(
                .transfers(
                    .transferPull(
                        id: id, partition: partition, layoutVersion: transfer.version, after: transfer.after,
                        maximumBytes: settings.batchBytes)), to: source),
            .startTimer(id: id, afterMilliseconds: settings.requestTimeoutMilliseconds),
        ]
    }

    /// Forgets what was pulled ahead (or that it failed); a late batch of it is then
    /// ignored.
    private mutating func dropAhead(_ transfer: inout Transfer) -> [Action] {
        defer { transfer.ahead = nil }
        guard case .pulling(let id, _, _)? = transfer.ahead else { return [] }
        owners[id] = nil
        return [.cancelTimer(id: id)]
    }

    /// After a failure: a pause that grows with the failures in a row, or a stop.
    private mutating func failed(_ partition: PartitionID, _ transfer: Transfer, view: TransferView)
        -> [Action]
    {
        var transfer = transfer
        transfer.failures += 1
        guard transfer.failures < settings.maximumFailures else { return stop(partition, state: "waiting") }
        let timer = takeID()
        owners[timer] = partition
        transfer.step = .waiting(timer: timer)
        running[partition] = transfer
        return [
            .startTimer(id: timer, afterMilliseconds: settings.retryMilliseconds * Int64(transfer.failures))
        ]
    }

    /// A batch that could not be stored: the cursor is read again after a pause.
    private mutating func restartFromCursor(
        _ partition: PartitionID, _ transfer: Transfer, view: TransferView
    ) -> [Action] {
        var transfer = transfer
        transfer.failures += 1
        guard transfer.failures < settings.maximumFailures else { return stop(partition, state: "waiting") }
        transfer.step = .readingCursor
        running[partition] = transfer
        return [.readCursor(partition, layoutVersion: transfer.version)]
    }

    /// The partition is here: its receipt is written (now or with the next batch), and
    /// its slot takes the next admitted transfer at once.
    private mutating func recordReceipt(
        _ partition: PartitionID, _ transfer: inout Transfer, view: TransferView
    )
        -> [Action]
    {
        transfer.step = .recording
        running[partition] = transfer
        return perform(receipts.add(LayoutPartition(partition, layoutVersion: transfer.version))) + tick(view)
    }

    /// The batcher's step as this machine's actions.
    private func perform(_ step: ProgressRecords.Step) -> [Action] {
        switch step {
        case .none: []
        case .write(let records): [.recordReceipts(records)]
        case .startTimer(let id, let milliseconds): [.startTimer(id: id, afterMilliseconds: milliseconds)]
        }
    }

    private mutating func stop(_ partition: PartitionID, state: String) -> [Action] {
        running[partition] = nil
        owners = owners.filter { $0.value != partition }
        inbound[partition]?.running = false
        inbound[partition]?.state = state
        return []
    }

    /// Charges `bytes`, of a batch pulled at `pulledAt`, to the node's byte budget from
    /// when it was pulled: a transfer slower than the rate then never waits, where
    /// charging from when the batch was stored made each pull wait a batch's cost on
    /// top of its round trip. The debt is bounded, so a rate raised after a tiny one
    /// takes effect soon.
    private mutating func reserve(bytes: Int, pulledAt: Int64, view: TransferView) {
        let rate = view.control.bytesPerSecond
        guard rate > 0 else { return }
        throttleUntil = min(
            max(throttleUntil, min(pulledAt, view.nowMilliseconds)) + cost(bytes, rate),
            view.nowMilliseconds + Self.maximumDebt)
    }

    /// The most milliseconds of byte budget the node may owe.
    private static let maximumDebt: Int64 = 2_000

    /// The milliseconds of budget `bytes` cost at `rate` bytes per second.
    private func cost(_ bytes: Int, _ rate: Int) -> Int64 {
        Int64(Double(bytes) / Double(rate) * 1_000)
    }

    private mutating func takeID() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }
}
