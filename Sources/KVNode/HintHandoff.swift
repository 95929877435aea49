import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOCore

/// The shell of ``HintDelivery``: it reads and removes hints on the storage thread pool,
/// sends handoffs over the transport and fires the machine's timers. Every decision
/// (who, what, in which order, when to stop, what to remove) is the machine's.
extension ClusterNode {
    /// What the machine sees of this node now.
    func hintView() -> HintDeliveryView {
        let metadata = metadata
        return HintDeliveryView(
            node: nodeID, targetsWithHints: hints.targets,
            reachable: Set(metadata.members.keys.filter { $0 != nodeID && isReachable($0) }),
            departed: metadata.departed, placement: metadata.placement,
            knownGenerations: Set(local.catalog.withLockedValue { $0.values.map(\.generation) }))
    }

    /// Carries out one of the hint machine's actions.
    func performHints(_ action: HintDelivery.Action) {
        switch action {
        case .readHints(let target, let limit):
            local.threadPool.submit { [self] _ in
                let hints = (try? HintStore.oldest(for: target, limit: limit, engine: local.engine)) ?? []
                let stored = hints.map { StoredHint(storageKey: $0.storageKey, record: $0.record) }
                runCore(.hints(.read(target: target, stored)))
            }
        case .send(let message, let target):
            transport.send(message, to: target)
        case .reconcile(let id, let key, let object):
            storage(.reconcile(key, object)) { [self] outcome in
                runCore(.hints(.reconciled(id: id, outcome)))
            }
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.hints, id: id), afterMilliseconds: milliseconds)
        case .unanswered(let peer):
            noteUnanswered(by: peer)
        case .cancelTimer(let id):
            cancelCoreTimer(NodeCore.Timer(.hints, id: id))
        case .remove(let removal):
            local.threadPool.submit { [self] _ in removeHints(removal) }
        }
    }

    /// Removes a delivery's delivered and obsolete hints with one synced write. Synced: a
    /// removal lost in a crash would deliver the hint again, which a merge absorbs, unless
    /// the row's tombstone was reaped in between (a node agrees to reap only once it holds
    /// no hint, counted in memory). Runs on the thread pool.
    private func removeHints(_ removal: HintDelivery.HintRemoval) {
        if removal.failed > 0 {
            hints.counters.withLockedValue { $0.failedDeliveries += Int64(removal.failed) }
        }
        var batch = WriteBatch()
        for hint in removal.delivered + removal.dropped { batch.delete(hint.storageKey, in: .hints) }
        do {
            if !batch.isEmpty {
                try storageWork("removing delivered hints") {
                    try local.engine.write(batch, durability: .synced)
                }
            }
        } catch {
            runCore(.hints(.removalFailed(target: removal.target)))
            return
        }
        hints.removed(removal.delivered.compactMap(\.record), delivered: true)
        hints.removed(removal.dropped.compactMap(\.record), delivered: false)
        if removal.rerouted > 0 {
            rebalance.withLockedValue { $0.counters.hintsRerouted += Int64(removal.rerouted) }
        }
        runCore(.hints(.removalStored(target: removal.target)))
    }
}
