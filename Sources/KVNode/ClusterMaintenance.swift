import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOConcurrencyHelpers
import NIOCore

/// What a node does on its own to survive failures: SWIM probes, hinted handoff,
/// active anti-entropy and tombstone reaping. Each runs on its own timer and is bounded
/// per tick, so together they cost a small, steady share of the node.
extension ClusterNode {
    /// How often the membership state machine is ticked.
    static let membershipTick = TimeAmount.milliseconds(50)
    /// How often hint delivery looks for targets that are back.
    static let hintTick = TimeAmount.milliseconds(100)
    /// How long a maintenance request waits for its answer: short, because a lost
    /// answer stalls the exchange or reaping pass that waits for it, and every request is
    /// repeated by a later pass anyway.
    static let maintenanceTimeout = TimeAmount.seconds(1)
    /// The most keys one anti-entropy exchange repairs.
    static let repairsPerExchange = 256
    /// The most keys one listing carries.
    static let keysPerListing = 4_096
    /// The most listing pages one exchange compares.
    static let pagesPerExchange = 4
    /// The most tombstones one reaping pass considers.
    static let tombstonesPerPass = 64
    /// How long a difference between two replicas' keys must stay unchanged before it is
    /// repaired (writes in flight are not divergence).
    static let settleDelay = Duration.milliseconds(250)
    /// How long (milliseconds) a node holds a tombstone before it proposes to reap it:
    /// twice the longest a frame may wait in a peer's send queue
    /// (``PeerTransportSettings/maximumFrameAgeMilliseconds``), so no replication of a
    /// value the tombstone covers can still be on its way when the row goes.
    static let tombstoneGrace = 2 * PeerTransportSettings.defaultMaximumFrameAgeMilliseconds

    func startMaintenance() {
        var tasks: [RepeatedTask] = []
        tasks.append(
            eventLoop.scheduleRepeatedTask(initialDelay: Self.membershipTick, delay: Self.membershipTick) {
                [self] _ in membershipTick()
            })
        tasks.append(
            eventLoop.scheduleRepeatedTask(initialDelay: Self.hintTick, delay: Self.hintTick) { [self] _ in
                guard !isStopped else { return }
                runHints { $0.tick($1) }
            })
        if antiEntropy.isEnabled {
            let interval = TimeAmount.milliseconds(settings.antiEntropyIntervalMilliseconds)
            tasks.append(
                eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [self] _ in
                    antiEntropyTick()
                })
            Task { await rebuildTrees() }
        }
        tasks.append(startRebalancing())
        state.withLockedValue { $0.maintenanceTasks = tasks }
    }

    /// Milliseconds since an arbitrary start that never goes back.
    @Sendable static func monotonicMilliseconds() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
    }

    var isStopped: Bool { state.withLockedValue { $0.stopped } }

    /// Whether `node` is connected and SWIM believes it alive.
    func isReachable(_ node: NodeID) -> Bool {
        state.withLockedValue { $0.believesUp(node) } && transport.isConnected(to: node)
    }

    // MARK: - Requests

    /// Sends a maintenance request and waits for its answer; `nil` when it could not be
    /// sent or no answer came in time.
    func request(
        _ make: (UInt64) -> ReplicaMessage, to node: NodeID,
        timeout: TimeAmount = ClusterNode.maintenanceTimeout
    ) async -> ReplicaMessage? {
        let id = takeID()
        let message = make(id)
        return await withCheckedContinuation { continuation in
            let stopped = state.withLockedValue { state in
                if !state.stopped { state.requests[id] = continuation }
                return state.stopped
            }
            if stopped {
                continuation.resume(returning: nil)
                return
            }
            eventLoop.scheduleTask(in: timeout) { [self] in
                let expired = state.withLockedValue { state in
                    let continuation = state.requests.removeValue(forKey: id)
                    if continuation != nil { state.maintenanceTimeouts[node, default: 0] += 1 }
                    return continuation
                }
                expired?.resume(returning: nil)
            }
            transport.send(message, to: node)
        }
    }

    /// Runs a storage command through the write drain and waits for its outcome.
    func maintenanceStorage(_ command: StorageCommand) async -> StorageOutcome {
        let id = takeID()
        return await withCheckedContinuation { continuation in
            let stopped = state.withLockedValue { state in
                if !state.stopped { state.maintenance[id] = { continuation.resume(returning: $0) } }
                return state.stopped
            }
            if stopped {
                continuation.resume(returning: .failed(KVError(.unavailable, "the node is shutting down")))
                return
            }
            enqueueWrite(.maintenance(id: id), command)
        }
    }

    /// Runs a storage command and answers `sender` with the message `answer` makes of
    /// its outcome.
    private func storeThenAnswer(
        _ command: StorageCommand, to sender: NodeID,
        _ answer: @escaping @Sendable (StorageOutcome) -> ReplicaMessage?
    ) {
        let id = takeID()
        state.withLockedValue { state in
            state.maintenance[id] = { [transport] outcome in
                if let message = answer(outcome) { transport.send(message, to: sender) }
            }
        }
        enqueueWrite(.maintenance(id: id), command)
    }

    // MARK: - Membership

    private func membershipTick() {
        let actions = membership.withLockedValue { $0.tick(now: Self.monotonicMilliseconds()) }
        performMembership(actions)
    }

    func receivedProbe(_ probe: MembershipMessage, digest: UInt64, from sender: NodeID) {
        let actions = membership.withLockedValue {
            $0.received(probe, from: sender, now: Self.monotonicMilliseconds())
        }
        performMembership(actions)
        // The layout and member records ride on the probes: a peer whose metadata
        // differs gets this node's (at most twice a second), and merges it back if it
        // knows something newer.
        let now = NIODeadline.now()
        let (push, encoded): (Bool, [UInt8]?) = state.withLockedValue { state in
            guard digest != state.metadataDigest, state.metadata.isFormed || !state.metadata.members.isEmpty
            else { return (false, nil) }
            if let last = state.lastDigestPush[sender], now - last < .milliseconds(500) {
                return (false, nil)
            }
            state.lastDigestPush[sender] = now
            return (true, state.metadata.encoded())
        }
        if push, let encoded { transport.send(.metadata(.push(id: nil, encoded: encoded)), to: sender) }
    }

    private func performMembership(_ actions: [Membership.Action]) {
        guard !actions.isEmpty else { return }
        let digest = state.withLockedValue { $0.metadataDigest }
        for action in actions {
            switch action {
            case .send(let message, let target):
                transport.send(.membership(message, metadataDigest: digest), to: target)
            case .statusChanged(let node, let status):
                state.withLockedValue { $0.liveness[node] = status }
                logger.info("member status changed", metadata: ["node": "\(node)", "status": "\(status)"])
                refreshReachability(node)
            }
        }
    }

    // MARK: - Anti-entropy

    /// Builds every partition's tree, one partition at a time under the row locks, then
    /// records that the index is complete.
    private func rebuildTrees() async {
        while !isStopped {
            let pending = (0..<local.identity.partitionCount).map { PartitionID(rawValue: UInt32($0)) }.filter
            {
                !antiEntropy.isReady($0)
            }
            if pending.isEmpty {
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            for partition in pending where !isStopped {
                do {
                    try await local.blocking { [self] () throws(KVError) in
                        try local.withAllRowLocks { () throws(KVError) in
                            try antiEntropy.rebuild(partition, engine: local.engine)
                        }
                    }
                } catch {
                    logger.error(
                        "rebuilding an anti-entropy tree failed",
                        metadata: ["partition": "\(partition)", "error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            if !antiEntropy.indexComplete, antiEntropy.readyCount == local.identity.partitionCount {
                do {
                    try await local.blocking { [local] () throws(KVError) in
                        var batch = WriteBatch()
                        batch.put(AntiEntropyIndex.completeKey, [1], in: .metadata)
                        try local.write(batch)
                    }
                    antiEntropy.markIndexComplete(true)
                    logger.info("anti-entropy index complete")
                } catch {
                    logger.error("recording the anti-entropy index failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// One exchange per interval, never two at once.
    private func antiEntropyTick() {
        let start = state.withLockedValue { state -> Bool in
            guard !state.antiEntropyRunning, !state.stopped else { return false }
            state.antiEntropyRunning = true
            return true
        }
        guard start else { return }
        Task {
            await antiEntropyStep()
            state.withLockedValue { $0.antiEntropyRunning = false }
        }
    }

    /// Compares the next partition this node replicates with the next peer replica, then
    /// starts a reaping pass.
    private func antiEntropyStep() async {
        guard let layout = try? formedLayout() else { return }
        let mine = (0..<layout.partitionCount).map { PartitionID(rawValue: UInt32($0)) }.filter {
            layout.replicas(of: $0).contains(nodeID)
        }
        guard !mine.isEmpty else { return }
        let (index, peerIndex) = state.withLockedValue { state in
            defer { state.antiEntropyCursor += 1 }
            if state.antiEntropyCursor % mine.count == 0 { state.antiEntropyPeerCursor += 1 }
            return (state.antiEntropyCursor % mine.count, state.antiEntropyPeerCursor)
        }
        if index == 0 {
            antiEntropy.counters.withLockedValue { counters in
                if counters.exchanges > 0 {
                    counters.rounds += 1
                    counters.divergentLastRound = counters.divergentThisRound
                }
                counters.divergentThisRound = 0
            }
        }
        let partition = mine[index]
        let peers = layout.replicas(of: partition).filter { $0 != nodeID }
        if !peers.isEmpty {
            let peer = peers[peerIndex % peers.count]
            if isReachable(peer), antiEntropy.isReady(partition) {
                let divergent = await exchange(partition, with: peer)
                antiEntropy.counters.withLockedValue { counters in
                    counters.exchanges += 1
                    if divergent { counters.divergentThisRound += 1 } else { counters.exchangesInSync += 1 }
                }
            }
        }
        // Reaping rides on the same interval: it needs the index the exchanges keep.
        runReaper { $0.tick($1) }
    }

    /// Compares one partition's tree with `peer`'s and repairs the keys that differ by
    /// merging both ways. Returns whether the trees differed.
    private func exchange(_ partition: PartitionID, with peer: NodeID) async -> Bool {
        guard let tree = antiEntropy.tree(of: partition) else { return false }
        guard
            case .antiEntropy(.treeHashes(_, true, let segmentHashes))? = await request(
                { .antiEntropy(.treeRequest(id: $0, partition: partition, segments: [])) }, to: peer)
        else { return false }
        let segments = tree.differingSegments(segmentHashes)
        guard !segments.isEmpty else { return false }
        antiEntropy.counters.withLockedValue { $0.divergentSegments += Int64(segments.count) }
        guard
            case .antiEntropy(.treeHashes(_, true, let leafHashes))? = await request(
                { .antiEntropy(.treeRequest(id: $0, partition: partition, segments: segments)) }, to: peer)
        else { return true }
        let leaves = tree.differingLeaves(in: segments, leafHashes)
        guard !leaves.isEmpty else { return true }
        // The leaves' keys are compared a page at a time, in key order: a listing that
        // stopped at its limit bounds the page, and the next page starts after it.
        var after: [UInt8]?
        var repaired = 0
        for _ in 0..<Self.pagesPerExchange where repaired < Self.repairsPerExchange && !isStopped {
            guard let page = await differingPage(partition, leaves, after: after, with: peer) else { break }
            for key in page.settled.prefix(Self.repairsPerExchange - repaired) where !isStopped {
                guard let generation = tableGeneration(of: key) else { continue }
                let row = ReplicaKey(partition: partition, bytes: key, generation: generation)
                guard case .object(let object) = await maintenanceStorage(.load(row)) else { continue }
                // A tombstone is not copied onto a replica that holds nothing of the row:
                // both read as deleted, and that is what every replica holds once the
                // tombstone was reaped somewhere first. Copying it back would undo
                // reaping as fast as it happens.
                if object.isDeleted, !object.entries.isEmpty, !page.theirKeys.contains(key) { continue }
                guard
                    case .antiEntropy(.reconciled(_, .object(let merged)))? = await request(
                        { .antiEntropy(.reconcile(id: $0, key: row, object: object)) }, to: peer)
                else { continue }
                if object.entries.isEmpty, merged.isDeleted { continue }
                _ = await maintenanceStorage(.reconcile(row, merged))
                repaired += 1
                antiEntropy.counters.withLockedValue { $0.keysRepaired += 1 }
            }
            guard let bound = page.bound else { break }
            after = bound
        }
        return true
    }

    /// One page of the keys that differ between this node and `peer` in `leaves` of
    /// `partition`, after `after`: both listings, cut at the lower of their ends when
    /// either stopped at its limit (`bound`, where the next page starts), then listed
    /// again after the settle delay to keep only differences that did not move.
    private func differingPage(_ partition: PartitionID, _ leaves: [Int], after: [UInt8]?, with peer: NodeID)
        async -> (settled: [[UInt8]], bound: [UInt8]?, theirKeys: Set<[UInt8]>)?
    {
        func listings() async -> (ours: [KeyHash], theirs: [KeyHash], bound: [UInt8]?)? {
            await pairedListings(partition, leaves, after: after, with: peer)
        }
        guard let first = await listings() else { return nil }
        let differing = MerkleTree.differingKeys(first.ours, first.theirs)
        antiEntropy.counters.withLockedValue {
            $0.keysCompared += Int64(first.ours.count + first.theirs.count)
        }
        guard !differing.isEmpty else { return ([], first.bound, []) }
        // Under load the replicas of a key differ for the milliseconds its write is in
        // flight, so trees differ all the time. Only a difference that stays exactly as
        // it was for the settle delay is repaired; a key still being written is left
        // for a later pass (or for its write to finish).
        try? await Task.sleep(for: Self.settleDelay)
        guard let second = await listings() else { return nil }
        let settled = Self.settledDifferences(
            differing, before: (first.ours, first.theirs), after: (second.ours, second.theirs))
        antiEntropy.counters.withLockedValue { $0.keysInFlight += Int64(differing.count - settled.count) }
        return (settled, first.bound, Set(second.theirs.map(\.key)))
    }

    /// This node's and `peer`'s index entries of `partition` in `leaves` after `after`,
    /// cut at the lower of their ends when either listing stopped at its limit (`bound`,
    /// where the next page starts); `nil` when either could not be listed.
    func pairedListings(_ partition: PartitionID, _ leaves: [Int], after: [UInt8]?, with peer: NodeID) async
        -> (ours: [KeyHash], theirs: [KeyHash], bound: [UInt8]?)?
    {
        guard
            case .antiEntropy(.keyHashes(_, let theirs, let theirsTruncated))? = await request(
                {
                    .antiEntropy(
                        .keyHashesRequest(id: $0, partition: partition, leaves: leaves, after: after))
                },
                to: peer),
            let ours = await ownKeyHashes(partition, leaves, after: after)
        else { return nil }
        var ends: [[UInt8]] = []
        if theirsTruncated, let last = theirs.last?.key { ends.append(last) }
        if ours.truncated, let last = ours.entries.last?.key { ends.append(last) }
        let bound = ends.min { $0.lexicographicallyPrecedes($1) }
        func within(_ entries: [KeyHash]) -> [KeyHash] {
            guard let bound else { return entries }
            return entries.filter { !bound.lexicographicallyPrecedes($0.key) }
        }
        return (within(ours.entries), within(theirs), bound)
    }

    /// This node's index entries of `partition` in `leaves`, after `after`.
    private func ownKeyHashes(_ partition: PartitionID, _ leaves: [Int], after: [UInt8]?) async
        -> (entries: [KeyHash], truncated: Bool)?
    {
        let leafSet = Set(leaves)
        return try? await local.blocking({ [local] () throws(KVError) in
            try AntiEntropyIndex.keyHashes(
                in: partition, leaves: leafSet, after: after, engine: local.engine, limit: Self.keysPerListing
            )
        })
    }

    /// The keys of `differing` whose hashes on both sides are the same in both listings:
    /// real divergence, not a write in flight.
    static func settledDifferences(
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

    /// The generation of the table a data key belongs to, in this node's catalog.
    func tableGeneration(of dataKey: [UInt8]) -> UInt64? {
        local.catalog.withLockedValue { tables in
            Self.table(of: dataKey, among: tables.keys).flatMap { tables[$0]?.generation }
        }
    }

    /// Which of `names` the row with engine key `dataKey` belongs to.
    static func table(of dataKey: [UInt8], among names: some Sequence<TableName>) -> TableName? {
        guard dataKey.count > 4 else { return nil }
        let partition = PartitionID(
            rawValue: dataKey.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        return names.first { name in
            dataKey.starts(
                with: StorageLayout.tablePrefix(
                    partition: partition, namespace: name.namespace, table: name.table))
        }
    }

    /// Answers a peer's anti-entropy or reaping request.
    func serveMaintenance(_ message: ReplicaMessage, from sender: NodeID) {
        switch message {
        case .antiEntropy(.treeRequest(let id, let partition, let segments)):
            guard let tree = antiEntropy.tree(of: partition) else {
                transport.send(.antiEntropy(.treeHashes(id: id, ready: false, hashes: [])), to: sender)
                return
            }
            let hashes = segments.isEmpty ? tree.segmentHashes : tree.leafHashes(of: segments)
            transport.send(.antiEntropy(.treeHashes(id: id, ready: true, hashes: hashes)), to: sender)
        case .antiEntropy(.keyHashesRequest(let id, let partition, let leaves, let after)):
            local.threadPool.submit { [self] _ in
                let listing = try? AntiEntropyIndex.keyHashes(
                    in: partition, leaves: Set(leaves), after: after, engine: local.engine,
                    limit: Self.keysPerListing)
                transport.send(
                    .antiEntropy(
                        .keyHashes(
                            id: id, entries: listing?.entries ?? [], truncated: listing?.truncated ?? true)),
                    to: sender)
            }
        case .antiEntropy(.reconcile(let id, let key, let object)):
            storeThenAnswer(.reconcile(key, object), to: sender) {
                .antiEntropy(.reconciled(id: id, outcome: $0))
            }
        case .reaping(.reapQuery(let id, let key, let hash, let layoutVersion)):
            local.threadPool.submit { [self] _ in
                let agrees = TombstoneReaper.agrees(
                    objectHash: hash, layoutVersion: layoutVersion, partition: key.partition,
                    holding: holding(of: key), view: reaperView())
                transport.send(.reaping(.reapAnswer(id: id, agrees: agrees)), to: sender)
            }
        case .reaping(.reap(let key, let hash)):
            storeThenAnswer(.reap(key, objectHash: hash), to: sender) { [antiEntropy] outcome in
                if case .object(let object) = outcome, object.entries.isEmpty {
                    antiEntropy.counters.withLockedValue { $0.tombstonesReaped += 1 }
                }
                return nil
            }
        default:
            return
        }
    }

    // MARK: - Status

    /// This node's maintenance counters, by stable name.
    var maintenanceCounters: [String: Int64] {
        let aae = antiEntropy.counters.withLockedValue { $0 }
        let hinted = hints.counters.withLockedValue { $0 }
        let reaping = reaper.withLockedValue { $0.counters }
        let timeouts = state.withLockedValue { $0.maintenanceTimeouts }.merging(
            reaping.timeouts, uniquingKeysWith: +)
        var counters: [String: Int64] = [
            "maintenance.timeouts": timeouts.values.reduce(0, +),
            "anti_entropy.enabled": antiEntropy.isEnabled ? 1 : 0,
            "anti_entropy.trees_ready": Int64(antiEntropy.readyCount),
            "anti_entropy.exchanges": aae.exchanges,
            "anti_entropy.exchanges_in_sync": aae.exchangesInSync,
            "anti_entropy.divergent_segments": aae.divergentSegments,
            "anti_entropy.keys_compared": aae.keysCompared,
            "anti_entropy.keys_repaired": aae.keysRepaired,
            "anti_entropy.keys_in_flight": aae.keysInFlight,
            "anti_entropy.rounds": aae.rounds,
            "anti_entropy.divergent_partitions_last_round": aae.divergentLastRound,
            "tombstones.held": Int64(antiEntropy.tombstoneCount),
            // Reaped as proposer, and on a proposer's word.
            "tombstones.reaped": aae.tombstonesReaped + reaping.reaped,
            "tombstones.reaps_refused": reaping.refused,
            "tombstones.reap_passes_skipped": reaping.passesSkipped,
            "hints.pending": Int64(hints.pendingCount),
            "hints.stored": hinted.stored,
            "hints.delivered": hinted.delivered,
            "hints.dropped": hinted.dropped,
            "hints.failed_deliveries": hinted.failedDeliveries,
        ]
        counters.merge(transferCounters) { first, _ in first }
        // Which peers leave this node's requests unanswered.
        for (node, count) in timeouts { counters["maintenance.timeouts.\(node)"] = count }
        return counters
    }
}
