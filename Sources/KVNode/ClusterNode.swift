import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A cluster member: the ``KeyValueService`` that places every key on its partition's
/// replicas and coordinates reads and writes with them.
///
/// It is the shell around the pure ``Coordinator``: it turns client calls into
/// coordinator events, carries out the actions (messages over the ``PeerTransport``,
/// storage commands on the ``NodeStorage``'s thread pool under row locks, timers on an
/// event loop) and feeds the results back. The ``ClusterMetadata`` (members, layout,
/// tables, the context secret) is kept in the metadata keyspace and spread to every
/// member: pushed on each change and exchanged with one peer per gossip interval.
///
/// Nothing is served until the node belongs to a formed cluster: a node on its own
/// forms one at once, a node of a static member list once it knows every member (the
/// smallest node id forms it), and a joining node once a member's metadata reaches it.
public final class ClusterNode: KeyValueService, Sendable {
    /// The software version reported by ``nodeInfo()``.
    public static let version = "0.1.0"

    /// The node's storage and catalog.
    public let local: NodeStorage
    /// Its cluster settings.
    public let settings: ClusterSettings
    let transport: PeerTransport
    /// Operation, quorum and storage metrics (see ``refreshMetrics()``).
    let metrics = NodeMetrics()
    /// The most bytes of rows one node's scan page holds: a frame's worth, less room
    /// for the frame's other fields.
    let maximumScanPageBytes: Int
    let eventLoop: any EventLoop
    let logger: Logger

    // The core's machines live on one event loop (`coreLoop`, see `NodeCoreShell.swift`)
    // and take no lock. The locks that remain are each held only for a state update,
    // never across I/O or an await. Where two nest, the outer one comes first in this
    // order: `metadataLock` (a metadata change holds it while it takes the row locks to
    // adopt the catalog and then `state`), `state`. `NodeStorage`'s row locks,
    // `ReplicaStore`'s, the transport's and the engine's are innermost: nothing is called
    // back while they are held. Nothing is taken while the core steps but these, one at a
    // time, to build the step's view.
    let state: NIOLockedValueBox<State>
    /// The replica's storage: runs every storage command.
    let store: ReplicaStore
    /// Merkle trees and the row hash index (active anti-entropy).
    let antiEntropy: AntiEntropyIndex
    /// Hints held for down primaries.
    let hints: HintStore
    /// The coordinator, SWIM, hint delivery, anti-entropy exchanges, tombstone reaping,
    /// transfers, releases and gossip, composed, with their timers: touched only on `eventLoop`
    /// (see `NodeCoreShell.swift`).
    let coreLoop: NIOLoopBoundBox<CoreLoopState>
    /// The coordinator's latest ``LocalReadRule``, for reads answered where they arrive
    /// (see `LocalReads.swift`); `nil` until the core's first step.
    let localReadRule = NIOLockedValueBox<LocalReadRule?>(nil)
    /// The transfers this node serves.
    let rebalance = NIOLockedValueBox(RebalanceState())
    /// Serializes metadata changes with their storage, so a newer copy is never
    /// overwritten on disk by an older one.
    let metadataLock = NIOLock()
    private let peerAddressBox = NIOLockedValueBox("")
    let writeQueue = NIOLockedValueBox(WriteQueue())

    /// Write commands waiting for the drain (see ``enqueueWrite(_:_:)``).
    struct WriteQueue {
        /// Client writes and replicas' stores: every drain takes all of them.
        var pending: [(ticket: StorageTicket, command: StorageCommand)] = []
        /// The shell's maintenance writes (handoff batches, anti-entropy repairs,
        /// reaping): a drain takes at most ``ClusterNode/backgroundWritesPerDrain``, so a
        /// client write never waits behind thousands of rows of a transfer.
        var background: [(ticket: StorageTicket, command: StorageCommand)] = []
        /// Where the untaken background commands start in `background`.
        var backgroundStart = 0
        var draining = false

        var isEmpty: Bool { pending.isEmpty && backgroundStart == background.count }

        /// Queues a command: maintenance ones behind the background limit.
        mutating func add(_ ticket: StorageTicket, _ command: StorageCommand) {
            if case .maintenance = ticket {
                background.append((ticket, command))
            } else {
                pending.append((ticket, command))
            }
        }

        /// Queues a command with the client writes, whatever its ticket: a client write
        /// the node applies without its coordinator (see ``ClusterNode/startPut``).
        mutating func addClientWrite(_ ticket: StorageTicket, _ command: StorageCommand) {
            pending.append((ticket, command))
        }

        /// Whether the caller must start a drain (none runs); marks one as running.
        mutating func startsDrain() -> Bool {
            guard !draining else { return false }
            draining = true
            return true
        }

        /// The next drain's commands: every pending one, then background ones up to `limit`.
        mutating func take(backgroundLimit limit: Int) -> [(ticket: StorageTicket, command: StorageCommand)] {
            var taken = pending
            pending = []
            let end = min(background.count, backgroundStart + limit)
            taken += background[backgroundStart..<end]
            backgroundStart = end
            if backgroundStart == background.count {
                background = []
                backgroundStart = 0
            } else if backgroundStart > 4096, backgroundStart * 2 > background.count {
                background.removeFirst(backgroundStart)
                backgroundStart = 0
            }
            return taken
        }
    }

    /// The most maintenance writes one drain applies (see ``WriteQueue``).
    static let backgroundWritesPerDrain = 256

    struct State {
        var metadata: ClusterMetadata
        /// Requests of the node's own maintenance (anti-entropy, reaping, hint delivery)
        /// awaiting their reply, by id; `nil` is resumed when the send fails or times out.
        var requests: [UInt64: CheckedContinuation<ReplicaMessage?, Never>] = [:]
        /// What to do when a maintenance storage command finishes, by ticket id.
        var maintenance: [UInt64: @Sendable (StorageOutcome) -> Void] = [:]
        /// What to do when a client write the node applies alone finishes, by ticket id
        /// (see ``ClusterNode/startPut(_:value:options:completion:)``).
        var localWrites: [UInt64: @Sendable (StorageOutcome) -> Void] = [:]
        /// When each of `localWrites` times out, as the coordinator's writes do.
        var localWriteDeadlines: [UInt64: NIODeadline] = [:]
        /// What SWIM says of each member.
        var liveness: [NodeID: MemberState.Status] = [:]
        /// The digest of `metadata`, carried on every probe.
        var metadataDigest: UInt64 = 0
        /// `metadata` in its binary form: what pushes carry, and what a peer's push is
        /// compared with before it is decoded.
        var encodedMetadata: [UInt8] = []
        var maintenanceTasks: [RepeatedTask] = []
        /// The chunk collector's state (``ChunkCollection``).
        var chunkCollection = ChunkCollectionState()
        /// Maintenance requests each peer left unanswered, for status.
        var maintenanceTimeouts: [NodeID: Int64] = [:]
        /// Which peers' connections are silent.
        var silence = PeerSilence()

        var operations: [UInt64: @Sendable (OperationOutcome) -> Void] = [:]
        var timerTask: RepeatedTask?
        var scans: [UInt64: CheckedContinuation<PartitionScanPage, Never>] = [:]
        var metadataAcks: [UInt64: (waiting: Set<NodeID>, continuation: CheckedContinuation<Void, Never>)] =
            [:]
        var unreachable: Set<NodeID> = []
        var nextID: UInt64
        var gossipTask: RepeatedTask?
        var stopped = false
        /// Members to know before forming (see ``ClusterSettings/expectedMembers``),
        /// lowered when a static list turns out to name this node under another spelling.
        var expectedMembers: Int?

        /// Whether `node` counts as up: connected, and not suspected or declared dead
        /// by SWIM.
        func believesUp(_ node: NodeID) -> Bool {
            !unreachable.contains(node) && (liveness[node] ?? .alive) == .alive
        }
    }

    static let metadataKey = MetadataKeys.clusterMetadata
    /// How late an operation timer may fire.
    static let timerResolution = TimeAmount.milliseconds(20)

    /// Opens the cluster side of `local`: loads its stored cluster metadata (or starts
    /// unformed metadata that knows only itself). With `tls`, peer connections are
    /// mutual TLS.
    public init(
        local: NodeStorage, settings: ClusterSettings, group: any EventLoopGroup, logger: Logger,
        tls: PeerTLS? = nil
    )
        throws(KVError)
    {
        let problems = settings.problems()
        guard problems.isEmpty else { throw KVError(.invalidRequest, problems.joined(separator: "; ")) }
        self.local = local
        self.settings = settings
        self.logger = logger
        eventLoop = group.next()
        // A frame must hold the largest row with room for its key and causal history,
        // and a peer's queue at least two such frames, or a large row could never be
        // replicated.
        let frameBytes = max(WireCodec.defaultMaximumFrameBytes, local.settings.maximumRowBytes + (1 << 20))
        maximumScanPageBytes = frameBytes - (1 << 20)
        var transportSettings = PeerTransportSettings(
            cluster: settings.name, secret: settings.secret, maximumFrameBytes: frameBytes,
            maximumQueuedBytesPerPeer: max(64 << 20, 2 * frameBytes))
        transportSettings.maximumClockSkewMilliseconds = settings.maximumClockSkewMilliseconds
        transport = PeerTransport(
            node: local.identity.nodeID,
            settings: transportSettings,
            // Every peer connection lives on the core's loop: a peer's answer is then
            // taken by the core where it arrives, and a send goes out without a hop.
            group: eventLoop, logger: logger, tls: tls)
        let me = ClusterMember(
            node: local.identity.nodeID, peerAddress: "", httpAddress: settings.httpAddress,
            zone: settings.zone,
            capacity: settings.capacity)
        var metadata = ClusterMetadata(
            member: me, partitionCount: local.identity.partitionCount,
            replicationFactor: settings.replicationFactor)
        if let stored = try local.metadataRecord(Self.metadataKey) {
            metadata = try ClusterMetadata.decode(stored)
        } else {
            // A data directory from before clusters (or of a node on its own): its tables
            // become the first cluster metadata, so they are neither lost nor dropped.
            for (name, descriptor) in local.catalog.withLockedValue({ $0 }).sorted(by: { $0.key < $1.key })
            where !name.isSystem {
                metadata.record(name, descriptor, by: local.identity.nodeID)
            }
        }
        var random = SystemRandomNumberGenerator()
        let firstID = random.next() >> 1
        let layout =
            metadata.layout
            ?? Layout.empty(
                partitionCount: metadata.partitionCount, replicationFactor: metadata.replicationFactor)
        var coordinator = Coordinator(
            actor: local.identity.actor, layout: layout,
            settings: CoordinatorSettings(requestTimeoutMilliseconds: settings.requestTimeoutMilliseconds),
            firstMessageID: firstID)
        // A node restarted during a layout change resumes the change's placement at once:
        // reads of moving partitions keep going to the owners that have everything.
        if let placement = metadata.placement { coordinator.placementChanged(placement) }
        var initial = State(
            metadata: metadata, nextID: random.next() >> 1, expectedMembers: settings.expectedMembers)
        initial.encodedMetadata = metadata.encoded()
        initial.metadataDigest = StableHash.hash(initial.encodedMetadata)
        state = NIOLockedValueBox(initial)
        let membership = Membership(
            node: local.identity.nodeID, members: Array(metadata.members.keys),
            // Above every incarnation of earlier lives (the identity's incarnation grows
            // with every start), with room for a million refutations.
            incarnation: UInt64(local.identity.incarnation) << 20, settings: settings.membership,
            random: SeededRandom(seed: random.next()))
        hints = try HintStore(engine: local.engine)
        let hintDelivery = HintDelivery(
            settings: HintDeliverySettings(ratePerSecond: settings.hintDeliveryRatePerSecond),
            firstMessageID: random.next() >> 1)
        let exchanges = AntiEntropyExchange(
            settings: AntiEntropySettings(
                requestTimeoutMilliseconds: Int64(Self.maintenanceTimeout.nanoseconds / 1_000_000)),
            firstMessageID: random.next() >> 1)
        let transfers = PartitionTransfers(
            settings: TransferSettings(batchBytes: settings.transferBatchBytes),
            firstMessageID: random.next() >> 1)
        let release = PartitionRelease(
            settings: ReleaseSettings(
                requestTimeoutMilliseconds: Int64(Self.maintenanceTimeout.nanoseconds / 1_000_000)),
            firstMessageID: random.next() >> 1)
        let reaper = TombstoneReaper(
            settings: TombstoneReaperSettings(
                tombstonesPerPass: Self.tombstonesPerPass, graceMilliseconds: Self.tombstoneGrace,
                requestTimeoutMilliseconds: Int64(Self.maintenanceTimeout.nanoseconds / 1_000_000)),
            firstMessageID: random.next() >> 1)
        coreLoop = NIOLoopBoundBox.makeBoxSendingValue(
            CoreLoopState(
                core: NodeCore(
                    coordinator: coordinator, membership: membership, hintDelivery: hintDelivery,
                    exchanges: exchanges, reaper: reaper,
                    transfers: transfers,
                    release: release, gossip: MetadataGossip(node: local.identity.nodeID),
                    exchangesEnabled: settings.antiEntropyIntervalMilliseconds > 0)),
            eventLoop: eventLoop)
        antiEntropy = AntiEntropyIndex(
            isEnabled: settings.antiEntropyIntervalMilliseconds > 0, clock: Self.monotonicMilliseconds,
            wallClock: NodeStorage.wallClockMilliseconds)
        store = ReplicaStore(
            engine: local.engine, actor: local.identity.actor, catalog: local.catalog,
            sealer: local.sealerBox,
            antiEntropy: antiEntropy, hints: hints,
            limits: RowLimits(
                maximumRowBytes: local.settings.maximumRowBytes,
                maximumSiblings: local.settings.maximumSiblings))
        if antiEntropy.isEnabled {
            antiEntropy.markIndexComplete(try local.metadataRecord(AntiEntropyIndex.completeKey) != nil)
        } else if try local.metadataRecord(AntiEntropyIndex.completeKey) != nil {
            // Rows written while anti-entropy is off get no index entries, so the index
            // must be rebuilt from the rows when it is turned on again.
            var batch = WriteBatch()
            batch.delete(AntiEntropyIndex.completeKey, in: .metadata)
            try local.write(batch)
        }
        if metadata.isFormed {
            local.sealerBox.withLockedValue { $0 = ContextSealer(secret: metadata.contextSecret) }
        }
    }

    /// The node's id.
    public var nodeID: NodeID { local.identity.nodeID }

    /// Listens for peers, announces this node in its metadata and starts gossip.
    /// Returns the peer address it listens on.
    public func start() async throws -> String {
        transport.setDelegate(TransportEvents(node: self))
        let bound = try await transport.listen(host: settings.peerHost, port: settings.peerPort)
        let address =
            "\(settings.advertisedHost ?? settings.peerHost):\(settings.advertisedPeerPort ?? bound.port ?? settings.peerPort)"
        peerAddressBox.withLockedValue { $0 = address }
        transport.setAdvertisedAddress(address)
        // A restarted node knows its peers from its stored metadata: it must be able to
        // reach them before any of them reaches it.
        for member in metadata.members.values where member.node != nodeID {
            if let socket = Self.socketAddress(member.peerAddress) {
                transport.setAddress(socket, of: member.node)
            }
        }
        try await local.blocking { [self] () throws(KVError) in
            try changeMetadata { metadata in
                let known = metadata.members[nodeID]
                var me = ClusterMember(
                    node: nodeID, peerAddress: address, httpAddress: settings.httpAddress,
                    zone: settings.zone,
                    capacity: settings.capacity, revision: known?.revision ?? 1)
                if let known, known.differs(from: me) {
                    me.revision = ClusterMetadata.next(after: known.revision)
                }
                metadata.announce(me)
            }
        }
        let task = eventLoop.scheduleRepeatedTask(
            initialDelay: .milliseconds(settings.gossipIntervalMilliseconds),
            delay: .milliseconds(settings.gossipIntervalMilliseconds)
        ) { [self] _ in gossip() }
        let sweep = eventLoop.scheduleRepeatedTask(
            initialDelay: Self.timerResolution, delay: Self.timerResolution
        ) {
            [self] _ in fireExpiredOperationTimers()
        }
        state.withLockedValue {
            $0.gossipTask = task
            $0.timerTask = sweep
        }
        startMaintenance()
        return address
    }

    /// Where this node's peers reach it.
    public var peerAddress: String { peerAddressBox.withLockedValue { $0 } }

    /// How many members a static cluster waits for before it forms.
    public var expectedMembers: Int? { state.withLockedValue { $0.expectedMembers } }

    /// Lowers the members a static cluster waits for by one: an entry of the member list
    /// turned out to be this node under another address (say `localhost` for
    /// `127.0.0.1`). Forms the cluster if that was all it was waiting for.
    public func memberListNamesThisNodeTwice() async throws(KVError) {
        state.withLockedValue { state in state.expectedMembers = state.expectedMembers.map { max(1, $0 - 1) }
        }
        try await local.blocking { [self] () throws(KVError) in try changeMetadata { _ in } }
    }

    /// This node's member record as it is now (revision to be decided by the caller).
    func ownRecord() -> ClusterMember {
        ClusterMember(
            node: nodeID, peerAddress: peerAddress, httpAddress: settings.httpAddress, zone: settings.zone,
            capacity: settings.capacity)
    }

    /// Whether the node belongs to a formed cluster (it serves requests).
    public var isFormed: Bool { state.withLockedValue { $0.metadata.isFormed } }

    /// A copy of the node's cluster metadata.
    public var metadata: ClusterMetadata { state.withLockedValue { $0.metadata } }

    /// Sends this node's metadata to a node known only by its peer address (a seed or a
    /// static member); the answer arrives as that node's metadata.
    public func introduce(toPeerAt address: String) {
        guard let socket = Self.socketAddress(address) else {
            logger.warning("cannot resolve the peer address", metadata: ["address": "\(address)"])
            return
        }
        let encoded = state.withLockedValue { $0.metadata.encoded() }
        transport.introduce(to: socket, message: .metadata(.push(id: nil, encoded: encoded)))
    }

    /// Stops gossip, fails what is in flight, closes connections and the storage.
    public func shutdown() async {
        let (task, operations, scans, acks, requests, maintenance, localWrites) = state.withLockedValue {
            state in
            state.stopped = true
            state.timerTask?.cancel()
            for task in state.maintenanceTasks { task.cancel() }
            defer {
                state.operations = [:]
                state.scans = [:]
                state.metadataAcks = [:]
                state.requests = [:]
                state.maintenance = [:]
                state.localWrites = [:]
                state.localWriteDeadlines = [:]
            }
            return (
                state.gossipTask, state.operations, state.scans, state.metadataAcks, state.requests,
                state.maintenance, state.localWrites
            )
        }
        task?.cancel()
        for continuation in requests.values { continuation.resume(returning: nil) }
        for finish in maintenance.values {
            finish(.failed(KVError(.unavailable, "the node is shutting down")))
        }
        let stopping = KVError(.unavailable, "the node is shutting down")
        // An operation still running may have stored a write already: its outcome is
        // unknown, and a client must retry it where its request id is recognised.
        let interrupted = KVError(
            .writeIndeterminate,
            "the node shut down while the request ran; a write may or may not become visible")
        for finish in operations.values { finish(.failed(interrupted)) }
        for finish in localWrites.values { finish(.failed(interrupted)) }
        for continuation in scans.values {
            continuation.resume(returning: PartitionScanPage(rows: [], truncated: false, error: stopping))
        }
        for entry in acks.values { entry.continuation.resume() }
        await transport.shutdown()
        await local.shutdown()
    }

    // MARK: - Resolving requests

    /// Brings the metrics that are read rather than recorded up to date: the maintenance
    /// machines' counters, members by state, peer connections and the layout version.
    /// Called before the metrics are exported.
    public func refreshMetrics() async {
        let peers = transport.inboundConnections
        metrics.level(
            "kv_peer_inbound_connections", [("state", "authenticated")], peers.open - peers.handshaking)
        metrics.level("kv_peer_inbound_connections", [("state", "handshaking")], peers.handshaking)
        for (part, bytes) in local.engine.memoryReport() {
            metrics.level("kv_storage_memory_bytes", [("part", part)], Int(clamping: bytes))
        }
        guard let status = try? await clusterStatus() else { return }
        metrics.export(status.counters)
        for state in ["self", "up", "suspect", "down", "joining", "leaving", "left"] {
            metrics.level("kv_members", [("state", state)], status.members.count { $0.state == state })
        }
        metrics.level("kv_layout_version", [], Int(status.layoutVersion))
    }

    /// Not ready until the node belongs to a formed cluster: before that, data requests
    /// answer `server.unavailable`.
    public func readinessProblem() -> KVError? {
        do {
            _ = try formedLayout()
            return nil
        } catch {
            return error
        }
    }

    func formedLayout() throws(KVError) -> Layout {
        // Only the layout is copied out of the lock: every request asks for it, and a copy
        // of the whole metadata retains every table and member.
        guard let layout = state.withLockedValue({ $0.metadata.isFormed ? $0.metadata.layout : nil }) else {
            let known = metadata.members.count
            let expected = state.withLockedValue { $0.expectedMembers }.map { " of \($0)" } ?? ""
            throw KVError(
                .unavailable,
                "this node has not joined a formed cluster yet (it knows \(known)\(expected) members); retry shortly"
            )
        }
        return layout
    }

    static func width(of layout: Layout) -> Int {
        min(layout.replicationFactor, layout.members.count { $0.capacity > 0 })
    }

    /// Adds a row request to the count of those that arrived at a replica of their key
    /// (by `layout`'s assignments), or to the count of those that did not.
    func countRequest(partition: Int, in layout: Layout) {
        if partition < layout.assignments.count, layout.assignments[partition].contains(local.identity.nodeID)
        {
            metrics.requestsAtReplica.add(1, ordering: .relaxed)
        } else {
            metrics.requestsElsewhere.add(1, ordering: .relaxed)
        }
    }

    /// The row, its replica key and the quorum the request runs with; `counted` adds the
    /// request to the at-replica or elsewhere count.
    func resolve(_ key: RowKey, _ overrides: QuorumOverrides, counted: Bool = true) throws(KVError) -> (
        NodeStorage.ResolvedRow, ReplicaKey, Quorum
    ) {
        let (layout, row, replicaKey, quorum) = try resolveInLayout(key, overrides)
        if counted { countRequest(partition: Int(row.partition.rawValue), in: layout) }
        return (row, replicaKey, quorum)
    }

    /// ``resolve(_:_:counted:)`` without counting, with the layout it was resolved in.
    func resolveInLayout(_ key: RowKey, _ overrides: QuorumOverrides) throws(KVError) -> (
        Layout, NodeStorage.ResolvedRow, ReplicaKey, Quorum
    ) {
        let layout = try formedLayout()
        let row = try local.resolve(key)
        let quorum = overrides.applied(to: row.descriptor.defaults, availableReplicas: Self.width(of: layout))
        try quorum.validate()
        return (
            layout, row,
            ReplicaKey(partition: row.partition, bytes: row.dataKey, generation: row.descriptor.generation),
            quorum
        )
    }

    // MARK: - Rows

    public func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult {
        let (row, replicaKey, quorum) = try resolve(key, options.quorum)
        switch await operate("read", { .read($0, key: replicaKey, quorum: quorum) }) {
        case .read(let object), .written(let object):
            return local.readResult(object, identity: row.identity)
        case .failed(let error): throw error
        }
    }

    public func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError)
        -> WriteResult
    {
        try NodeStorage.validate(value, maximumBytes: local.settings.maximumInlineValueBytes)
        return try await writeRow(
            key, Sibling(value: value, timestampMilliseconds: NodeStorage.wallClockMilliseconds()), options,
            increment: nil)
    }

    public func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult {
        try await writeRow(key, .tombstone(at: NodeStorage.wallClockMilliseconds()), options, increment: nil)
    }

    func writeRow(_ key: RowKey, _ sibling: Sibling, _ options: WriteOptions, increment: Int64?)
        async throws(KVError) -> WriteResult
    {
        try options.validateRequestID()
        let (row, replicaKey, quorum) = try resolve(key, options.quorum)
        let proposed = try proposedWrite(of: key, row, sibling, options, increment: increment)
        switch await operate("write", { .write($0, key: replicaKey, proposed, quorum: quorum) }) {
        case .written(let object), .read(let object): return local.writeResult(object, identity: row.identity)
        case .failed(let error): throw error
        }
    }

    /// The write a client's `sibling` and `options` propose for `row` (resolved from
    /// `key`), as the coordinator takes it.
    func proposedWrite(
        of key: RowKey, _ row: NodeStorage.ResolvedRow, _ sibling: Sibling, _ options: WriteOptions,
        increment: Int64?
    ) throws(KVError) -> ProposedWrite {
        let context = try options.context.map { (text) throws(KVError) in
            try local.sealer.open(text, row: row.identity)
        }
        var sibling = sibling
        sibling.requestID = options.requestID
        sibling.resolvesByLastWriter = row.descriptor.conflictPolicy == .lastWriterWins
        if !sibling.isTombstone, key.table != LargeValue.chunkTable.name {
            sibling.expiresAtMilliseconds = options.expiresAtMilliseconds
        }
        return ProposedWrite(
            sibling: sibling, context: context, condition: options.condition,
            generation: row.descriptor.generation, increment: increment)
    }

    public func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError)
        -> Int64
    {
        try options.validateRequestID()
        let (row, replicaKey, quorum) = try resolve(key, options.quorum)
        var sibling = Sibling.tombstone(at: NodeStorage.wallClockMilliseconds())
        sibling.requestID = options.requestID
        sibling.resolvesByLastWriter = row.descriptor.conflictPolicy == .lastWriterWins
        let proposed = ProposedWrite(
            sibling: sibling, context: nil, generation: row.descriptor.generation, increment: delta)
        switch await operate("write", { .write($0, key: replicaKey, proposed, quorum: quorum) }) {
        case .written(let object), .read(let object):
            return try CounterState.merged(object.visibleValues(at: NodeStorage.wallClockMilliseconds()))?
                .value ?? 0
        case .failed(let error): throw error
        }
    }

    public func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? {
        try CounterState.merged(try await get(key, options: options).siblings)?.value
    }

    // MARK: - The node and the cluster

    public func nodeInfo() async throws(KVError) -> NodeInfo {
        var info = local.nodeInfo()
        info.peerAddress = peerAddress
        return info
    }

    public func clusterStatus() async throws(KVError) -> ClusterStatus {
        let (metadata, unreachable, liveness) = state.withLockedValue {
            ($0.metadata, $0.unreachable, $0.liveness)
        }
        let swim = try await readCore { core in
            Dictionary(
                uniqueKeysWithValues: metadata.members.keys.map { ($0, core.membership.state(of: $0)) })
        }
        let layout = metadata.layout
        let counts = layout?.replicaCounts ?? [:]
        var primaries: [NodeID: Int] = [:]
        for list in layout?.assignments ?? [] {
            if let first = list.first { primaries[first, default: 0] += 1 }
        }
        let placed = Set(layout?.members.map(\.node) ?? [])
        let departed = metadata.departed
        let members = metadata.members.values.sorted { $0.node < $1.node }.map { member in
            let state: String
            if departed.contains(member.node) {
                state = "left"
            } else if metadata.departing.contains(member.node) {
                state = "leaving"
            } else if !placed.contains(member.node) {
                state = "joining"
            } else if member.node == nodeID {
                state = "self"
            } else if unreachable.contains(member.node) || liveness[member.node] == .dead {
                state = "down"
            } else if liveness[member.node] == .suspect {
                state = "suspect"
            } else {
                state = "up"
            }
            return ClusterStatus.Member(
                nodeID: member.node, httpAddress: member.httpAddress, peerAddress: member.peerAddress,
                zone: member.zone, capacity: member.capacity, replicas: counts[member.node] ?? 0,
                primaries: primaries[member.node] ?? 0, state: state,
                incarnation: swim[member.node]??.incarnation ?? 0)
        }
        return ClusterStatus(
            nodeID: nodeID, clusterID: metadata.isFormed ? String(metadata.clusterID, radix: 16) : "",
            layoutVersion: layout?.version ?? 0, partitionCount: metadata.partitionCount,
            replicationFactor: metadata.replicationFactor, members: members,
            counters: try await maintenanceCounters())
    }

    public func clusterLayout() async throws(KVError) -> LayoutDescription {
        let layout = try formedLayout()
        return LayoutDescription(
            version: layout.version, replicationFactor: layout.replicationFactor,
            partitions: layout.assignments)
    }

    // MARK: - Helpers

    /// Parses `host:port` (an IPv4 address or a name; `[v6]:port` for IPv6).
    static func socketAddress(_ text: String) -> SocketAddress? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if let address = try? SocketAddress(ipAddress: host, port: port) { return address }
        return try? SocketAddress.makeAddressResolvingHost(host, port: port)
    }
}
