import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory

/// One simulated node: the production coordinator and the production replica store over
/// an in-memory engine whose volume survives crashes.
struct SimulatedNode {
    /// The one table the workload writes to.
    static let table = TableDescriptor(
        name: try! TableName(namespace: "sim", table: "rows"), schema: try! KeySchema([.bytes]),
        generation: 0x5157)

    /// Seals the contexts every node of the simulated cluster accepts.
    static let sealer = ContextSealer(secret: Array(repeating: 7, count: 16))

    let id: NodeID
    /// Partitions of the cluster's layouts (they never change it).
    let partitionCount: Int
    /// The node's disk: it survives crashes, not disk loss (which replaces it).
    var volume = MemoryVolume()
    var engine: MemoryStorageEngine
    /// The replica's storage over `engine`, as the node runs it.
    var store: ReplicaStore
    var isUp = true
    /// Bumped by every crash, so messages, timers and storage completions addressed to
    /// the previous life are lost with it.
    var life = 0
    var cancelledTimers: Set<OperationID> = []
    /// This node's clock: `offset + rate × virtual time` (clock skew: its timers and
    /// probes run fast or slow).
    var clockRate = 1.0
    var clockOffset: Int64 = 0
    /// The coordinator, SWIM, hint delivery, anti-entropy exchanges, reaping, transfers and
    /// releases, as the node runs them.
    var core: NodeCore
    /// The core's timers cancelled before they fired.
    var cancelledCoreTimers: Set<NodeCore.Timer> = []
    /// Membership ticks so far (exchanges and reaping passes start every few).
    var membershipTicks = 0
    /// The snapshot each transfer this node serves reads from (lost with a crash).
    var transferSnapshots: [TransferSession: [StorageEntry]] = [:]
    /// Which peers' connections are silent, as the node tells.
    var silence = PeerSilence()
    /// What each partition's copy held when its push started (for the release checker).
    var pushesStarted: [PartitionID: PushStart] = [:]
    /// Disk losses so far: a hint checked against a recipient that lost its disk since
    /// the delivery started proves nothing.
    var disksLost = 0
    /// Every node's disk losses when each target's delivery started (see `disksLost`).
    var hintEpochs: [NodeID: [Int]] = [:]
    /// The cluster metadata as this node has it (layout changes reach it late).
    var metadata: ClusterMetadata?
    /// Its binary form, once encoded (cleared by every change).
    var encodedMetadata: [UInt8]?
    /// The digest of its binary form, which the node's probes carry, once computed
    /// (cleared by every change).
    var metadataDigest: UInt64?

    init(
        id: NodeID, members: [NodeID], layout: Layout, settings: CoordinatorSettings, firstMessageID: UInt64,
        random: inout SeededRandom, faults: ReplicaStore.Faults, clock: Locked<Int64>
    ) {
        self.id = id
        let actor = ActorID(node: id, incarnation: 1)
        let coordinator = Coordinator(
            actor: actor, layout: layout, settings: settings, firstMessageID: firstMessageID)
        partitionCount = layout.partitionCount
        (engine, store) = Self.storage(
            on: volume, partitionCount: layout.partitionCount, actor: actor, faults: faults, clock: clock)
        // The machines' first ids are drawn in this order at every start, so a seed's
        // random stream stays what it was before they were composed.
        let hintDelivery = HintDelivery(
            settings: SimulatedWorld.hintSettings, firstMessageID: SimulatedWorld.firstMessageID(&random))
        let exchanges = AntiEntropyExchange(
            settings: SimulatedWorld.antiEntropySettings,
            firstMessageID: SimulatedWorld.firstMessageID(&random))
        let transfers = PartitionTransfers(
            settings: SimulatedWorld.transferSettings, firstMessageID: SimulatedWorld.firstMessageID(&random))
        let reaper = TombstoneReaper(
            settings: SimulatedWorld.reaperSettings, firstMessageID: SimulatedWorld.firstMessageID(&random))
        let release = PartitionRelease(
            settings: SimulatedWorld.releaseSettings, firstMessageID: SimulatedWorld.firstMessageID(&random))
        let membership = Membership(
            node: id, members: members, incarnation: 1 << 20, settings: SimulatedWorld.membershipSettings,
            random: SeededRandom(seed: random.next()))
        core = NodeCore(
            coordinator: coordinator, membership: membership, hintDelivery: hintDelivery,
            exchanges: exchanges,
            reaper: reaper, transfers: transfers, release: release, gossip: MetadataGossip(node: id))
    }

    func localTime(_ now: Int64) -> Int64 { clockOffset + Int64(Double(now) * clockRate) }

    /// Opens the node's volume again after a restart, as the node shell opens its data
    /// directory: a new engine, hints counted from disk, anti-entropy trees rebuilt.
    mutating func openStorage(actor: ActorID, faults: ReplicaStore.Faults, clock: Locked<Int64>) {
        (engine, store) = Self.storage(
            on: volume, partitionCount: partitionCount, actor: actor, faults: faults, clock: clock)
    }

    private static func storage(
        on volume: MemoryVolume, partitionCount: Int, actor: ActorID, faults: ReplicaStore.Faults,
        clock: Locked<Int64>
    ) -> (MemoryStorageEngine, ReplicaStore) {
        let engine = MemoryStorageEngine(volume: volume)
        let antiEntropy = AntiEntropyIndex(
            isEnabled: true, clock: { clock.withLockedValue { $0 } },
            wallClock: { clock.withLockedValue { $0 } })
        let store = ReplicaStore(
            engine: engine, actor: actor, catalog: Locked([table.name: table]),
            sealer: Locked(sealer), antiEntropy: antiEntropy,
            // The in-memory engine cannot fail to read its own hints.
            hints: try! HintStore(engine: engine),
            limits: RowLimits(maximumRowBytes: 1 << 20, maximumSiblings: 64), faults: faults)
        // As the node shell does at start, inline: every partition's tree, rebuilt from
        // the rows (the index is not trusted until this is done), then the index is
        // complete. The in-memory engine cannot fail.
        for partition in 0..<partitionCount {
            try! antiEntropy.rebuild(PartitionID(rawValue: UInt32(partition)), engine: engine)
        }
        antiEntropy.markIndexComplete(true)
        return (engine, store)
    }
}
