import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory

/// Something that happens at a virtual time.
enum SimulationEvent {
    case deliver(ReplicaMessage, from: Int, to: Int, life: Int)
    case sendFailed(ReplicaMessage, from: Int, to: Int, life: Int)
    case storageDone(node: Int, life: Int, StorageTicket, StorageOutcome)
    case timer(node: Int, life: Int, OperationID)
    case clientStep(Int)
    case crash(Int)
    /// Crash and lose the whole data directory (disk loss).
    case wipe(Int)
    case restart(Int)
    /// A node's membership tick (and hint delivery).
    case membershipTick(Int, life: Int)
    case partition([Int])
    case healPartition
    /// A node's connection to a peer goes silent.
    case silenceConnection(from: Int, to: Int)
    case layoutChange
    case rebalanceTick
    /// An input for a node's ``NodeCore``: a maintenance machine's storage work finished,
    /// or its timer fired (the coordinator's have events of their own above).
    case core(node: Int, life: Int, NodeCore.Input)
}

/// The whole simulated system and its event loop. Only ``Simulation`` uses it.
struct SimulatedWorld {
    let configuration: SimulationConfiguration
    let trace: ((String) -> Void)?
    var random: SeededRandom
    var now: Int64 = 0
    /// `now`, for the replica stores' anti-entropy index (tombstone ages).
    let clock = Locked<Int64>(0)
    var queue = EventQueue()
    var nodes: [SimulatedNode] = []
    var clients: [SimulatedClient] = []
    var keys: [ReplicaKey] = []
    /// The key the clients increment.
    var counterKey = ReplicaKey(partition: PartitionID(rawValue: 0), bytes: [])
    /// The key of the last-writer-wins workload (``SimulationConfiguration/lastWriterWins``).
    var lastWriterKey = ReplicaKey(partition: PartitionID(rawValue: 0), bytes: [])
    var increments: [Int: IncrementRecord] = [:]
    /// The partition side of each node while the network is split.
    var sides: [Int]?
    /// Connections on which everything sent vanishes (see `SimulatedConnections.swift`).
    var silentConnections: Set<Connection> = []
    var faultsActive: Bool
    var writes: [Int: WriteRecord] = [:]
    var nextWriteID = 1
    var nextOperation: UInt64 = 1
    var operationClients: [UInt64: Int] = [:]
    var finalReads: [Int: StoredObject] = [:]
    /// The tombstones reaped anywhere, by key: their write ids.
    var reaped: [Int: Set<Int>] = [:]
    var report: SimulationReport
    // Network character of this run, drawn from the seed.
    var dropProbability = 0.0
    var duplicateProbability = 0.0
    var slowProbability = 0.0

    static let requestTimeout: Int64 = 1_000
    static let membershipSettings = MembershipSettings(
        probeIntervalMilliseconds: 200, probeTimeoutMilliseconds: 60, indirectProbes: 2,
        suspicionTimeoutMilliseconds: 1_000)
    static let membershipTickInterval: Int64 = 50
    /// Membership ticks stop after this virtual time, so the run can end.
    var ticksUntil = Int64.max
    /// Anti-entropy repairs in the final passes (the second must be zero: P16).
    var antiEntropyRepairs: [Int] = []
    /// For the transfer checker: the rows of the source's snapshot each page served
    /// covers, by receiver and pull id, and those of the pages a receiver took, by
    /// transfer.
    var transferPagesServed: [ServedPage: CoveredRows] = [:]
    var transferRowsExpected: [TransferSession: [StorageEntry]] = [:]
    /// Pages whose store the receiver's machine asked for, by store id: they join
    /// `transferRowsExpected` once stored.
    var transferPagesStoring: [ServedPage: CoveredRows] = [:]
    /// A page the receiver's machine holds, unstored, until the cursor before it is saved
    /// (a pull ahead), with the rows it carried: linked to the store that carries the
    /// same rows. A machine holds at most one per transfer.
    var transferPagesHeld: [HeldPage: (rows: [PartitionTransfers.ScanRow], served: CoveredRows)] = [:]
    /// Metadata copies as decoded, by their binary form.
    var decodedMetadata: [[UInt8]: ClusterMetadata] = [:]
    /// Whether a disk loss is planned for this run (then no node is removed for good).
    var diskLossPlanned = false
    /// Nodes removed for good by a forced leave: their disk is gone, they never return.
    var gone: Set<Int> = []
    var quorum: Quorum {
        Quorum(n: configuration.replicationFactor, r: 2, w: 2, dw: 2, pr: 0, pw: 0)
    }

    /// The defect the run's injected bug plants in every replica store.
    var storageFaults: ReplicaStore.Faults {
        var faults = ReplicaStore.Faults()
        switch configuration.injectedBug {
        case .replicasIgnoreStores?: faults.merge = { _, _ in nil }
        case .mergeKeepsSupersededValues?: faults.merge = Self.unionKeepingEverything
        case .nothingIsStored?: faults.discardsWrites = true
        case .conditionsAreIgnored?: faults.ignoresConditions = true
        case .incrementsLoseTheirSign?:
            faults.incrementDelta = { $0.magnitude > Int64.max.magnitude ? $0 : abs($0) }
        case .amnesiaReusesIncarnation?, .handoffsAreIgnored?, .reapersIgnoreTheirCopy?, .transfersSkipARow?,
            .gossipPushesNothing?, .releasesPushNothing?, .silentConnectionsStay?,
            .failedStoresCountAsStored?, nil:
            break
        }
        return faults
    }

    init(_ configuration: SimulationConfiguration, trace: ((String) -> Void)?) {
        self.configuration = configuration
        self.trace = trace
        random = SeededRandom(seed: configuration.seed)
        faultsActive = configuration.faults
        report = SimulationReport(seed: configuration.seed)
        if configuration.keyCount != 3 { report.configurationFlags += " --keys \(configuration.keyCount)" }
        if !configuration.faults { report.configurationFlags += " --no-faults" }
        if !configuration.layoutChanges { report.configurationFlags += " --no-layout-changes" }
        if configuration.lastWriterWins { report.configurationFlags += " --last-writer-wins" }
        if configuration.failingWrites { report.configurationFlags += " --failing-writes" }
        if let bug = configuration.injectedBug { report.configurationFlags += " --inject \(bug)" }
        let ids = (1...configuration.nodeCount).map { NodeID(rawValue: UInt64($0)) }
        var layout = Layout.computed(
            members: ids.map { LayoutMember(node: $0) }, replicationFactor: configuration.replicationFactor,
            partitionCount: configuration.partitionCount)
        var initialMetadata: ClusterMetadata?
        if configuration.layoutChanges {
            // The last node starts as a member the layout does not place: it joins later.
            let members = ids.map { ClusterMember(node: $0, peerAddress: "n\($0)", httpAddress: "n\($0)") }
            var unformed = ClusterMetadata(
                member: members[0], partitionCount: configuration.partitionCount,
                replicationFactor: configuration.replicationFactor)
            for member in members.dropLast() { unformed.announce(member) }
            var formed = unformed.formed(
                by: ids[0], clusterID: 1, secret: Array(repeating: 1, count: 16),
                expectedMembers: ids.count - 1)!
            formed.announce(members[members.count - 1])
            initialMetadata = formed
            layout = formed.layout!
        }
        let settings = CoordinatorSettings(requestTimeoutMilliseconds: Self.requestTimeout)
        var nodes: [SimulatedNode] = []
        for id in ids {
            var node = SimulatedNode(
                id: id, members: ids, layout: layout, settings: settings,
                firstMessageID: Self.firstMessageID(&random), random: &random, faults: storageFaults,
                clock: clock)
            if configuration.faults {
                node.clockRate = Double.random(in: 0.8...1.25, using: &random)
                node.clockOffset = Int64.random(in: 0...100_000, using: &random)
            }
            node.metadata = initialMetadata
            nodes.append(node)
        }
        self.nodes = nodes
        keys = (0..<configuration.keyCount).map { index in
            Self.replicaKey([0x6B, UInt8(index)], partitionCount: configuration.partitionCount)
        }
        counterKey = Self.replicaKey([0x63], partitionCount: configuration.partitionCount)
        lastWriterKey = Self.replicaKey([0x6C], partitionCount: configuration.partitionCount)
        clients = Array(
            repeating: SimulatedClient(remaining: configuration.operationsPerClient),
            count: configuration.clientCount)
        if configuration.faults {
            dropProbability = Double.random(in: 0...0.05, using: &random)
            duplicateProbability = Double.random(in: 0...0.03, using: &random)
            slowProbability = Double.random(in: 0...0.05, using: &random)
        }
    }

    /// A fresh message id space for one life of a node, as the shell draws at random.
    static func firstMessageID(_ random: inout SeededRandom) -> UInt64 {
        UInt64.random(in: 1...(UInt64.max >> 1), using: &random)
    }

    // MARK: - Running

    mutating func run() -> SimulationReport {
        for client in clients.indices {
            schedule(.clientStep(client), after: Int64.random(in: 0...5, using: &random))
        }
        for node in nodes.indices {
            schedule(.membershipTick(node, life: 0), after: Int64.random(in: 1...50, using: &random))
        }
        if configuration.faults { scheduleFaults() }
        if configuration.layoutChanges {
            let horizon = Int64(configuration.operationsPerClient) * 15
            for _ in 0..<2 { queue.push(.layoutChange, at: Int64.random(in: 0...horizon, using: &random)) }
            schedule(.rebalanceTick, after: 50)
        }
        drain { world in world.clients.allSatisfy { $0.remaining == 0 && $0.pending == nil } }
        // Healing: faults stop, everyone comes back, membership settles and hints are
        // handed back for a while, in-flight work ends.
        faultsActive = false
        if sides != nil { handle(.healPartition) }
        for node in nodes.indices where !nodes[node].isUp && !gone.contains(node) { handle(.restart(node)) }
        ticksUntil = now + 15_000
        drain()
        for client in clients.indices where clients[client].pending != nil {
            report.violations.append("client \(client)'s operation never ended")
        }
        checkMembershipSettled()
        checkHintsDelivered()
        checkGossipConverged()
        // Anti-entropy, two full rounds by the nodes' own machines: the first repairs,
        // the second must find nothing.
        antiEntropyRepairs = [antiEntropyRound(), antiEntropyRound()]
        if antiEntropyRepairs[1] != 0 {
            report.violations.append(
                "anti-entropy repaired \(antiEntropyRepairs[1]) keys in a second pass right after the first: repair does not stop when replicas agree"
            )
        }
        finalReadsAndChecks()
        report.virtualMilliseconds = now
        return report
    }

    /// Processes events until none are left (or `done` holds).
    mutating func drain(until done: ((SimulatedWorld) -> Bool)? = nil) {
        var processed = 0
        while done.map({ !$0(self) }) ?? true, let (time, event) = queue.pop() {
            now = time
            clock.withLockedValue { $0 = time }
            handle(event)
            processed += 1
            if processed > 5_000_000 {
                report.violations.append("the run did not quiesce after 5,000,000 events (livelock)")
                return
            }
        }
    }

    mutating func schedule(_ event: SimulationEvent, after delay: Int64) {
        queue.push(event, at: now + delay)
    }

    func log(_ line: @autoclosure () -> String) {
        if let trace { trace("[\(now) ms] \(line())") }
    }

    /// Crashes, restarts and partitions at random times while the workload runs.
    mutating func scheduleFaults() {
        let horizon = Int64(configuration.operationsPerClient) * 15
        for _ in 0..<Int.random(in: 0...3, using: &random) {
            let node = Int.random(in: 0..<nodes.count, using: &random)
            let at = Int64.random(in: 0...horizon, using: &random)
            queue.push(.crash(node), at: at)
            queue.push(.restart(node), at: at + Int64.random(in: 50...600, using: &random))
        }
        // At most one disk loss per run: two would be more than N=3, W=2 promises to
        // survive.
        if random.chance(0.3) || configuration.injectedBug == .amnesiaReusesIncarnation {
            diskLossPlanned = true
            let node = Int.random(in: 0..<nodes.count, using: &random)
            let at = Int64.random(in: 0...horizon, using: &random)
            queue.push(.wipe(node), at: at)
            queue.push(.restart(node), at: at + Int64.random(in: 50...600, using: &random))
        }
        for _ in 0..<Int.random(in: 0...2, using: &random) {
            let at = Int64.random(in: 0...horizon, using: &random)
            let split = (0..<nodes.count).map { _ in Int.random(in: 0...1, using: &random) }
            queue.push(.partition(split), at: at)
            queue.push(.healPartition, at: at + Int64.random(in: 50...600, using: &random))
        }
        // Sometimes a connection goes silent (drawn after the other faults, so that each
        // seed's crashes, disk losses and partitions stay as they were).
        if random.chance(0.3) {
            let from = Int.random(in: 0..<nodes.count, using: &random)
            let to = (from + Int.random(in: 1..<nodes.count, using: &random)) % nodes.count
            queue.push(
                .silenceConnection(from: from, to: to), at: Int64.random(in: 0...horizon, using: &random))
        }
    }

    // MARK: - Events

    mutating func handle(_ event: SimulationEvent) {
        switch event {
        case .deliver(let message, let from, let to, let life):
            guard nodes[to].isUp, nodes[to].life == life else { return }
            log("n\(to) <- n\(from): \(summary(message))")
            if case .hints(.handoff(let id, _, _)) = message, configuration.injectedBug == .handoffsAreIgnored
            {
                // The planted defect: the target acknowledges a hint it never stores.
                send(.hints(.handedOff(id: id, error: nil)), from: to, to: from)
                return
            }
            if message.answersMaintenanceRequest { nodes[to].silence.answered(by: nodes[from].id) }
            runCore(.received(message, from: nodes[from].id), at: to)
        case .sendFailed(let message, let from, let to, let life):
            guard nodes[from].isUp, nodes[from].life == life else { return }
            log("n\(from): send to n\(to) failed: \(summary(message))")
            runCore(.sendFailed(message, to: nodes[to].id), at: from)
        case .storageDone(let node, let life, let ticket, let outcome):
            guard nodes[node].isUp, nodes[node].life == life else { return }
            runCore(.storageCompleted(ticket, outcome), at: node)
        case .timer(let node, let life, let operation):
            guard nodes[node].isUp, nodes[node].life == life else { return }
            guard nodes[node].cancelledTimers.remove(operation) == nil else { return }
            runCore(.operationTimerFired(operation), at: node)
        case .clientStep(let client):
            startNextOperation(of: client)
        case .crash(let node):
            guard faultsActive, nodes[node].isUp else { return }
            crash(node)
        case .wipe(let node):
            guard faultsActive, nodes[node].isUp else { return }
            crash(node)
            log("n\(node) loses its data directory")
            report.disksLost += 1
            nodes[node].volume = MemoryVolume()
            nodes[node].disksLost += 1
            // Its transfers start over, maybe from other sources.
            transferRowsExpected = transferRowsExpected.filter { $0.key.receiver != node }
        case .restart(let node):
            guard !nodes[node].isUp, !gone.contains(node) else { return }
            log("n\(node) restarts")
            nodes[node].isUp = true
            let layout = nodes[node].core.coordinator.layout
            // Every start takes a new incarnation, as the node shell does; the injected
            // bug keeps the old one after a disk loss, reusing its dots.
            var actor = nodes[node].core.coordinator.actor
            if configuration.injectedBug != .amnesiaReusesIncarnation { actor.incarnation += 1 }
            nodes[node].openStorage(actor: actor, faults: storageFaults, clock: clock)
            var coordinator = Coordinator(
                actor: actor, layout: layout,
                settings: nodes[node].core.coordinator.settings, firstMessageID: Self.firstMessageID(&random))
            if let placement = nodes[node].metadata?.placement { coordinator.placementChanged(placement) }
            let membership = Membership(
                node: nodes[node].id, members: nodes.map(\.id),
                incarnation: UInt64(nodes[node].life + 1) << 20, settings: Self.membershipSettings,
                random: SeededRandom(seed: random.next()))
            // Their random draws in the order a restart has always made them, so seeds
            // replay as they did before the machines were composed.
            let hintDelivery = HintDelivery(
                settings: Self.hintSettings, firstMessageID: Self.firstMessageID(&random))
            let reaper = TombstoneReaper(
                settings: Self.reaperSettings, firstMessageID: Self.firstMessageID(&random))
            let exchanges = AntiEntropyExchange(
                settings: Self.antiEntropySettings, firstMessageID: Self.firstMessageID(&random))
            let transfers = PartitionTransfers(
                settings: Self.transferSettings, firstMessageID: Self.firstMessageID(&random))
            nodes[node].transferSnapshots = [:]
            nodes[node].silence = PeerSilence()
            let release = PartitionRelease(
                settings: Self.releaseSettings, firstMessageID: Self.firstMessageID(&random))
            nodes[node].core = NodeCore(
                coordinator: coordinator, membership: membership, hintDelivery: hintDelivery,
                exchanges: exchanges, reaper: reaper,
                transfers: transfers,
                release: release, gossip: MetadataGossip(node: nodes[node].id))
            nodes[node].cancelledCoreTimers = []
            nodes[node].pushesStarted = [:]
            schedule(.membershipTick(node, life: nodes[node].life), after: 1)
        case .membershipTick(let node, let life):
            guard nodes[node].isUp, nodes[node].life == life, now < ticksUntil else { return }
            runCore(.tick(.membership), at: node)
            runCore(.tick(.hints), at: node)
            nodes[node].membershipTicks += 1
            if nodes[node].membershipTicks % Self.gossipTickEvery == 0, nodes[node].metadata != nil {
                runCore(.tick(.gossip), at: node)
            }
            if nodes[node].membershipTicks % Self.antiEntropyTickEvery == 0 {
                runCore(.tick(.antiEntropy), at: node)
                runCore(.tick(.reaper), at: node)
            }
            let interval = max(1, Int64(Double(Self.membershipTickInterval) / nodes[node].clockRate))
            schedule(.membershipTick(node, life: life), after: interval)
        case .partition(let split):
            guard faultsActive else { return }
            log("network partitioned: \(split)")
            sides = split
        case .healPartition:
            log("network healed")
            sides = nil
        case .silenceConnection(let from, let to):
            silence(from: from, to: to)
        case .layoutChange:
            changeLayout()
        case .core(let node, let life, let input):
            guard nodes[node].isUp, nodes[node].life == life else { return }
            if case .timerFired(let timer) = input, nodes[node].cancelledCoreTimers.remove(timer) != nil {
                return
            }
            runCore(input, at: node)
        case .rebalanceTick:
            let moving = nodes.contains { $0.metadata?.transition != nil }
            guard now < ticksUntil || (moving && now - 60_000 < ticksUntil) else {
                return
            }
            for node in nodes.indices where nodes[node].isUp {
                if nodes[node].metadata?.transition != nil { runCore(.tick(.transfers), at: node) }
                runCore(.tick(.release), at: node)
            }
            schedule(.rebalanceTick, after: 50)
        }
    }

    mutating func crash(_ node: Int) {
        log("n\(node) crashes")
        report.crashes += 1
        nodes[node].isUp = false
        nodes[node].life += 1
        closeConnections(of: node)
        nodes[node].cancelledTimers = []
        // The held batches died with the machine.
        transferPagesHeld = transferPagesHeld.filter { $0.key.receiver != node }
        try? nodes[node].engine.close()
        // Clients connected to it see their connection reset: the outcome is unknown.
        for client in clients.indices {
            guard let pending = clients[client].pending, pending.node == node else { continue }
            finishClientOperation(client, outcome: nil)
        }
    }

    /// Carries out one of a node's coordinator's actions. The `switch` has no `default:`
    /// on purpose.
    mutating func performCoordinator(_ action: Coordinator.Action, at node: Int) {
        switch action {
        case .send(let message, let target):
            send(message, from: node, to: index(of: target))
        case .storage(let ticket, let command):
            let outcome = execute(command, at: node)
            schedule(
                .storageDone(node: node, life: nodes[node].life, ticket, outcome),
                after: Int64.random(in: 0...3, using: &random))
        case .startTimer(let operation, let delay):
            // A node whose clock runs fast fires its timers early, and late when slow.
            schedule(
                .timer(node: node, life: nodes[node].life, operation),
                after: max(1, Int64(Double(delay) / nodes[node].clockRate)))
        case .cancelTimer(let operation):
            nodes[node].cancelledTimers.insert(operation)
        case .reply(let operation, let outcome):
            guard case .local(let number) = operation, let client = operationClients[number] else {
                preconditionFailure("reply for an unknown operation \(operation)")
            }
            nodes[node].cancelledTimers.remove(operation)
            finishClientOperation(client, outcome: outcome)
        }
    }

    mutating func send(_ message: ReplicaMessage, from: Int, to: Int) {
        let life = nodes[to].life
        guard nodes[to].isUp else {
            // A crashed process refuses connections: the sender learns quickly.
            schedule(.sendFailed(message, from: from, to: to, life: nodes[from].life), after: 1)
            return
        }
        if let sides, sides[from] != sides[to] {
            report.messagesDropped += 1
            return
        }
        if isSilent(from: from, to: to) {
            report.messagesDropped += 1
            return
        }
        if faultsActive && random.chance(dropProbability) {
            report.messagesDropped += 1
            return
        }
        var delay = Int64.random(in: 1...10, using: &random)
        if faultsActive && random.chance(slowProbability) {
            delay += Int64.random(in: 20...400, using: &random)
        }
        schedule(.deliver(message, from: from, to: to, life: life), after: delay)
        if faultsActive && random.chance(duplicateProbability) {
            report.messagesDuplicated += 1
            schedule(
                .deliver(message, from: from, to: to, life: life),
                after: delay + Int64.random(in: 0...50, using: &random))
        }
    }

    func index(of node: NodeID) -> Int { Int(node.rawValue) - 1 }

    /// Runs a storage command on the node's replica store, as the node's write drain does.
    func execute(_ command: StorageCommand, at node: Int) -> StorageOutcome {
        switch command {
        case .load(let key): nodes[node].store.load(key)
        case .coordinate, .merge, .storeHint, .reconcile, .reap: nodes[node].store.apply([command])[0]
        }
    }

    /// The defective merge of ``SimulationConfiguration/InjectedBug/mergeKeepsSupersededValues``:
    /// the correct merge plus every value either side had.
    @Sendable static func unionKeepingEverything(_ left: StoredObject, _ right: StoredObject) -> StoredObject
    {
        let merged = left.merging(right)
        var entries = merged.entries
        for side in [left, right] {
            for entry in side.entries {
                guard let index = entries.firstIndex(where: { $0.actor == entry.actor }) else { continue }
                for value in entry.values
                where !entries[index].values.contains(value)
                    && entries[index].values.count < Int(entries[index].counter)
                {
                    entries[index].values.append(value)
                }
            }
        }
        return StoredObject(validatedEntries: entries) ?? merged
    }
}

extension SimulatedWorld {
    /// The replica key of the workload table's row with the encoded key `encoded`.
    static func replicaKey(_ encoded: [UInt8], partitionCount: Int) -> ReplicaKey {
        let partition = PartitionID.of(
            namespace: "sim", table: "rows", encodedPartitionKey: encoded, partitionCount: partitionCount)
        return ReplicaKey(
            partition: partition,
            bytes: StorageLayout.dataKey(partition: partition, namespace: "sim", table: "rows", key: encoded),
            generation: SimulatedNode.table.generation)
    }
}
