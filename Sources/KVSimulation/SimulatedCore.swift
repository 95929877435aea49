import KVCluster
import KVCore
import KVReplica

/// The simulator's interpreter of ``NodeCore``, the same composition of the coordinator,
/// SWIM, the maintenance machines and gossip the node runs: every input goes through
/// ``runCore(_:at:)``, and each machine's actions go to its interpreter (`SimulatedWorld`
/// for the coordinator, `SimulatedMembership.swift`, `SimulatedHints.swift`,
/// `SimulatedAntiEntropy.swift`, `SimulatedReaping.swift`, `SimulatedTransfers.swift`,
/// `SimulatedRelease.swift`, `SimulatedGossip.swift`), which report completions back as
/// ``SimulationEvent/core(node:life:_:)`` or, for metadata stored at once, as inputs.
extension SimulatedWorld {
    /// Feeds one input to node `node`'s core and carries out what it asks.
    mutating func runCore(_ input: NodeCore.Input, at node: Int) {
        let view = coreView(for: input.procedure, at: node)
        let releasing = nodes[node].core.release.running
        let actions = nodes[node].core.handle(input, view: view)
        notePushes(since: releasing, at: node)
        if case .received(.transfers(.transferRows(let id, let page, _)), _) = input {
            // For the transfer checker: what the page covered, once the machine stores it
            // (a store that fails does not count: the machine pulls from its cursor again,
            // maybe from another source).
            let served = transferPagesServed.removeValue(forKey: ServedPage(receiver: node, id: id))
            let store = actions.lazy.compactMap { action -> UInt64? in
                if case .transfers(.store(let id, _, _)) = action { id } else { nil }
            }.first
            if let served, let store {
                transferPagesStoring[ServedPage(receiver: node, id: store)] = served
            } else if let served, page.error == nil, !actions.isEmpty {
                // Taken but not stored (an ignored late page answers nothing): a batch
                // pulled ahead, stored once the cursor before it is saved.
                transferPagesHeld[HeldPage(receiver: node, partition: served.session.partition)] = (
                    page.rows.map { PartitionTransfers.ScanRow(key: $0.key, object: $0.object) }, served
                )
            }
        }
        for case .transfers(.store(let store, let partition, let rows)) in actions
        where transferPagesStoring[ServedPage(receiver: node, id: store)] == nil {
            let held = HeldPage(receiver: node, partition: partition)
            if let page = transferPagesHeld[held], page.rows == rows {
                transferPagesStoring[ServedPage(receiver: node, id: store)] = page.served
                transferPagesHeld[held] = nil
            }
        }
        for action in actions {
            switch action {
            case .coordinator(let action): performCoordinator(action, at: node)
            case .membership(let action): performMembership(action, at: node)
            case .hints(let action): performHints(action, at: node)
            case .antiEntropy(let action): performAntiEntropy(action, at: node)
            case .reaper(let action): performReaping(action, at: node)
            case .transfers(let action): performTransfers(action, at: node)
            case .release(let action): performRelease(action, at: node)
            case .gossip(let action): performGossip(action, at: node)
            case .deliver(let message, let sender): deliver(message, from: index(of: sender), at: node)
            case .undeliverable:
                // Gossip repeats, and a lost answer or request served from storage times
                // out at its asker: nothing of the simulated node's other parts waits.
                break
            }
        }
    }

    /// The view `procedure` needs at `node` now.
    private mutating func coreView(for procedure: NodeCore.Procedure?, at node: Int) -> NodeCore.View {
        switch procedure {
        case .membership?: .membership(nowMilliseconds: nodes[node].localTime(now), gossipView(node))
        case .gossip?: gossipView(node).map { .gossip($0) } ?? .none
        case .hints?: .hints(hintView(node))
        case .antiEntropy?: .antiEntropy(antiEntropyView(node))
        case .reaper?: .reaper(reaperView(node))
        case .transfers?: .transfers(transferView(node))
        case .release?: .release(releaseView(node))
        case nil: .none
        }
    }

    /// Fires `timer` into node `node`'s core after `milliseconds` of its clock.
    mutating func startCoreTimer(_ timer: NodeCore.Timer, afterMilliseconds milliseconds: Int64, at node: Int)
    {
        schedule(
            .core(node: node, life: nodes[node].life, .timerFired(timer)),
            after: max(1, Int64(Double(milliseconds) / nodes[node].clockRate)))
    }

    /// Reports a finished piece of storage work to node `node`'s core after `delay`.
    mutating func complete(_ input: NodeCore.Input, after delay: Int64, at node: Int) {
        schedule(.core(node: node, life: nodes[node].life, input), after: delay)
    }

    /// For the release checker: what each copy held when its push started.
    private mutating func notePushes(since before: [PartitionID: PartitionRelease.Purpose], at node: Int) {
        let running = nodes[node].core.release.running
        guard running != before else { return }
        for partition in running.keys where before[partition] == nil {
            nodes[node].pushesStarted[partition] = PushStart(
                rows: rows(of: partition, at: node), disksLost: nodes.map(\.disksLost),
                owners: (nodes[node].metadata?.layout?.replicas(of: partition) ?? []).map(index(of:)))
        }
        for partition in before.keys where running[partition] == nil {
            nodes[node].pushesStarted[partition] = nil
        }
    }

    /// A message the core does not take: metadata for gossip, or a request the node serves
    /// from its storage.
    private mutating func deliver(_ message: ReplicaMessage, from sender: Int, at node: Int) {
        switch message {
        case .reaping, .antiEntropy:
            if let request = MaintenanceRequest(message) { serveMaintenance(request, from: sender, at: node) }
        case .transfers(let transfer):
            serveTransfer(transfer, from: sender, at: node)
        case .metadata(let metadata):
            receiveMetadata(metadata, from: sender, at: node)
        case .quorum, .scans, .hints, .membership:
            // The core's coordinator and machines take these; the simulator runs no scans.
            return
        }
    }

    /// A peer's anti-entropy or reaping request arrived at `node`: its replica store
    /// answers it, as the node shell's does, inline.
    private mutating func serveMaintenance(_ request: MaintenanceRequest, from sender: Int, at node: Int) {
        switch request.work {
        case .memory, .engineReads:
            guard
                var answer = nodes[node].store.answer(
                    request, keysPerListing: Self.keysPerListing, reaperView: { reaperView(node) })
            else { return }
            // The planted defect: a member agrees whatever its own copy holds.
            if configuration.injectedBug == .reapersIgnoreTheirCopy,
                case .reaping(.reapAnswer(let id, _)) = answer
            {
                answer = .reaping(.reapAnswer(id: id, agrees: true))
            }
            send(answer, from: node, to: sender)
        case .write(let command):
            let outcome: StorageOutcome
            if case .reap(let key, let hash) = request {
                outcome = reap(key, objectHash: hash, at: node)
            } else {
                outcome = execute(command, at: node)
            }
            if let answer = request.answer(to: outcome) { send(answer, from: node, to: sender) }
        }
    }
}
