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
    /// The most keys one listing carries.
    static let keysPerListing = 4_096
    /// The most tombstones one reaping pass considers.
    static let tombstonesPerPass = 64
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
                runCore(.tick(.hints))
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
        let collection = TimeAmount.milliseconds(settings.chunkCollectionIntervalMilliseconds)
        tasks.append(
            eventLoop.scheduleRepeatedTask(initialDelay: collection, delay: collection) { [self] _ in
                startChunkCollection()
            })
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
        let answer = await withCheckedContinuation { continuation in
            let stopped = state.withLockedValue { state in
                if !state.stopped { state.requests[id] = continuation }
                return state.stopped
            }
            if stopped {
                continuation.resume(returning: nil)
                return
            }
            eventLoop.scheduleTask(in: timeout) { [self] in
                guard let expired = state.withLockedValue({ $0.requests.removeValue(forKey: id) }) else {
                    return
                }
                expired.resume(returning: nil)
                noteUnanswered(by: node)
            }
            transport.send(message, to: node)
        }
        return answer
    }

    /// Counts a maintenance request `node` left unanswered (in `maintenance.timeouts`
    /// when `counted`), and reopens the connections with it once it has been silent long
    /// enough (``PeerSilence``).
    func noteUnanswered(by node: NodeID, counted: Bool = true) {
        let silent = state.withLockedValue { state in
            if counted { state.maintenanceTimeouts[node, default: 0] += 1 }
            return state.silence.unanswered(by: node, nowMilliseconds: Self.monotonicMilliseconds())
        }
        if silent { reconnectSilentPeer(node) }
    }

    /// `node` answered a maintenance request: it is not silent.
    func noteAnswered(by node: NodeID) {
        state.withLockedValue { $0.silence.answered(by: node) }
    }

    /// Reopens the connection to a peer that answers nothing on it. A connection can stay
    /// open while nothing sent on it arrives (a proxy, or a path that drops everything
    /// without a reset); the peer still looks alive, because others probe it for us, so
    /// nothing else would ever reopen it.
    private func reconnectSilentPeer(_ node: NodeID) {
        guard transport.isConnected(to: node) else { return }
        logger.info(
            "a peer left requests unanswered; reconnecting",
            metadata: [
                "peer": "\(node)", "seconds": "\(PeerSilenceSettings().milliseconds / 1_000)",
            ])
        transport.reconnect(to: node)
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

    /// Runs storage commands through the write drain, enqueued together, and waits for
    /// all their outcomes, in the commands' order: one continuation for the lot instead of
    /// a task and a continuation per row (a handoff's batch is hundreds of rows).
    func maintenanceStorage(_ commands: [StorageCommand]) async -> [StorageOutcome] {
        guard !commands.isEmpty else { return [] }
        return await withCheckedContinuation { continuation in
            let collected = NIOLockedValueBox(CollectedOutcomes(count: commands.count))
            let stopped = state.withLockedValue { state in
                guard !state.stopped else { return nil as UInt64? }
                let first = state.nextID
                state.nextID &+= UInt64(commands.count)
                for index in commands.indices {
                    state.maintenance[first &+ UInt64(index)] = { outcome in
                        if let all = collected.withLockedValue({ $0.record(outcome, at: index) }) {
                            continuation.resume(returning: all)
                        }
                    }
                }
                return first
            }
            guard let first = stopped else {
                continuation.resume(
                    returning: commands.map { _ in .failed(KVError(.unavailable, "the node is shutting down"))
                    })
                return
            }
            enqueueWrites(
                commands.enumerated().map { (.maintenance(id: first &+ UInt64($0.offset)), $0.element) })
        }
    }

    // MARK: - Membership

    private func membershipTick() {
        runCore(.tick(.membership))
    }

    /// Carries out one of SWIM's actions.
    func performMembership(_ action: Membership.Action) {
        switch action {
        case .send(let message, let target):
            let digest = state.withLockedValue { $0.metadataDigest }
            transport.send(.membership(message, metadataDigest: digest), to: target)
        case .statusChanged(let node, let status):
            state.withLockedValue { $0.liveness[node] = status }
            logger.info("member status changed", metadata: ["node": "\(node)", "status": "\(status)"])
            refreshReachability(node)
        case .unanswered(let node):
            // Probes are not maintenance timeouts: a dead member leaves every one
            // unanswered.
            noteUnanswered(by: node, counted: false)
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

    /// One exchange per interval (the machine never runs two at once), then a reaping
    /// pass: it needs the index the exchanges keep.
    private func antiEntropyTick() {
        runCore(.tick(.antiEntropy))
        runCore(.tick(.reaper))
    }

    /// The generation of the table a data key belongs to, in this node's catalog.
    func tableGeneration(of dataKey: [UInt8]) -> UInt64? {
        store.tableGeneration(of: dataKey)
    }

    /// Answers a peer's anti-entropy or reaping request: the replica store makes the
    /// answer, this shell runs the reads off the event loop and the writes through the
    /// drain.
    func serveMaintenance(_ request: MaintenanceRequest, from sender: NodeID) {
        switch request.work {
        case .memory:
            answer(request, to: sender)
        case .engineReads:
            local.threadPool.submit { [self] _ in answer(request, to: sender) }
        case .write(let command):
            storage(command) { [self] outcome in
                if case .reap = request, case .object(let object) = outcome, object.entries.isEmpty {
                    antiEntropy.counters.withLockedValue { $0.tombstonesReaped += 1 }
                }
                if let message = request.answer(to: outcome) { transport.send(message, to: sender) }
            }
        }
    }

    private func answer(_ request: MaintenanceRequest, to sender: NodeID) {
        guard
            let message = store.answer(
                request, keysPerListing: Self.keysPerListing, reaperView: reaperView)
        else { return }
        transport.send(message, to: sender)
    }

    // MARK: - Status

    /// This node's maintenance counters, by stable name.
    func maintenanceCounters() async throws(KVError) -> [String: Int64] {
        let (exchanges, reaping, received, released) = try await readCore {
            ($0.exchanges.counters, $0.reaper.counters, $0.transfers.counters, $0.release.counters)
        }
        let aae = antiEntropy.counters.withLockedValue { $0 }
        let hinted = hints.counters.withLockedValue { $0 }
        // Every machine's unanswered requests, counted as they are reported (see
        // `noteUnanswered(by:)`).
        let timeouts = state.withLockedValue { $0.maintenanceTimeouts }
        var counters: [String: Int64] = [
            "maintenance.timeouts": timeouts.values.reduce(0, +),
            "anti_entropy.enabled": antiEntropy.isEnabled ? 1 : 0,
            "anti_entropy.trees_ready": Int64(antiEntropy.readyCount),
            "anti_entropy.exchanges": exchanges.exchanges,
            "anti_entropy.exchanges_in_sync": exchanges.exchangesInSync,
            "anti_entropy.divergent_segments": exchanges.divergentSegments,
            "anti_entropy.keys_compared": exchanges.keysCompared,
            "anti_entropy.keys_repaired": exchanges.keysRepaired,
            "anti_entropy.keys_in_flight": exchanges.keysInFlight,
            "anti_entropy.rounds": exchanges.rounds,
            "anti_entropy.divergent_partitions_last_round": exchanges.divergentLastRound,
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
            "chunks.collected": state.withLockedValue { $0.chunkCollection.collected },
            "chunks.damaged_found": Int64(store.damagedChunksFound.withLockedValue { $0 }),
            "chunks.compactions": state.withLockedValue { $0.chunkCollection.compactions },
            "requests.at_replica": metrics.requestsAtReplica.load(ordering: .relaxed),
            "requests.not_at_replica": metrics.requestsElsewhere.load(ordering: .relaxed),
            "reads.answered_locally": metrics.readsAnsweredLocally.load(ordering: .relaxed),
            "writes.applied_locally": metrics.writesAppliedLocally.load(ordering: .relaxed),
            "reads.repairs_sent": metrics.readRepairsSent.load(ordering: .relaxed),
            "reads.repairs_applied": metrics.readRepairsApplied.load(ordering: .relaxed),
        ]
        counters.merge(transferCounters(received: received, released: released)) { first, _ in first }
        // Which peers leave this node's requests unanswered.
        for (node, count) in timeouts { counters["maintenance.timeouts.\(node)"] = count }
        return counters
    }
}

/// The outcomes of a batch of maintenance commands, as they arrive.
struct CollectedOutcomes {
    private var outcomes: [StorageOutcome?]
    private var missing: Int

    init(count: Int) {
        outcomes = Array(repeating: nil, count: count)
        missing = count
    }

    /// Records the outcome of command `index`; all of them once it was the last.
    mutating func record(_ outcome: StorageOutcome, at index: Int) -> [StorageOutcome]? {
        guard outcomes[index] == nil else { return nil }
        outcomes[index] = outcome
        missing -= 1
        return missing == 0 ? outcomes.map { $0! } : nil
    }
}
