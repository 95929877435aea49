import KVCluster
import KVCore
import KVReplica
import KVStorage

/// The simulator's interpreter of ``HintDelivery``: the same machine the node runs, its
/// storage done inline on the node's replica store and its completions, messages and
/// timers delivered as events.
extension SimulatedWorld {
    static let hintSettings = HintDeliverySettings(tickMilliseconds: membershipTickInterval)

    /// What node `node`'s hint machine sees: SWIM's view of who is alive, its own copy of
    /// the metadata.
    func hintView(_ node: Int) -> HintDeliveryView {
        let me = nodes[node].id
        return HintDeliveryView(
            node: me, targetsWithHints: nodes[node].store.hints.targets, reachable: reachablePeers(of: node),
            departed: nodes[node].metadata?.departed ?? [],
            // The coordinator holds the placement of the node's metadata.
            placement: nodes[node].metadata == nil ? nil : nodes[node].core.coordinator.placement,
            knownGenerations: [SimulatedNode.table.generation])
    }

    /// Carries out one of the hint machine's actions. The `switch` has no `default:` on
    /// purpose.
    mutating func performHints(_ action: HintDelivery.Action, at node: Int) {
        switch action {
        case .readHints(let target, let limit):
            let hints =
                (try? HintStore.oldest(for: target, limit: limit, engine: nodes[node].engine))?.map {
                    StoredHint(storageKey: $0.storageKey, record: $0.record)
                } ?? []
            nodes[node].hintEpochs[target] = nodes.map(\.disksLost)
            complete(
                .hints(.read(target: target, hints)), after: Int64.random(in: 0...3, using: &random), at: node
            )
        case .send(let message, let target):
            send(message, from: node, to: index(of: target))
        case .reconcile(let id, let key, let object):
            let outcome = execute(.reconcile(key, object), at: node)
            complete(
                .hints(.reconciled(id: id, outcome)), after: Int64.random(in: 0...3, using: &random), at: node
            )
        case .startTimer(let id, let delay):
            startCoreTimer(NodeCore.Timer(.hints, id: id), afterMilliseconds: delay, at: node)
        case .unanswered(let peer):
            noteUnanswered(by: peer, at: node)
        case .cancelTimer(let id):
            nodes[node].cancelledCoreTimers.insert(NodeCore.Timer(.hints, id: id))
        case .remove(let removal):
            log(
                "n\(node) removes \(removal.delivered.count) delivered and \(removal.dropped.count) obsolete hints for \(removal.target)"
            )
            checkDelivered(removal, at: node)
            var batch = WriteBatch()
            for hint in removal.delivered + removal.dropped { batch.delete(hint.storageKey, in: .hints) }
            if (try? nodes[node].engine.write(batch, durability: .synced)) != nil {
                nodes[node].store.hints.removed(removal.delivered.compactMap(\.record), delivered: true)
                nodes[node].store.hints.removed(removal.dropped.compactMap(\.record), delivered: false)
            }
            report.hintsDelivered += removal.delivered.count
            complete(
                .hints(.removalStored(target: removal.target)),
                after: Int64.random(in: 0...3, using: &random),
                at: node)
        }
    }

    /// Hints are delivered exactly once in effect: a hint removed as delivered is held by
    /// every recipient (merging it there would change nothing), unless the recipient is
    /// down, lost its disk since the delivery started, or has since dropped the partition
    /// because its layout no longer places it there.
    mutating func checkDelivered(_ removal: HintDelivery.HintRemoval, at node: Int) {
        let epochs = nodes[node].hintEpochs[removal.target] ?? nodes.map(\.disksLost)
        for (hint, recipients) in zip(removal.delivered, removal.recipients) {
            guard let record = hint.record else { continue }
            for recipient in recipients.map(index(of:))
            where nodes[recipient].isUp && nodes[recipient].disksLost == epochs[recipient]
                && PartitionRelease.holds(
                    record.key.partition, node: nodes[recipient].id,
                    layout: nodes[recipient].metadata?.layout,
                    transition: nodes[recipient].metadata?.transition)
            {
                guard case .object(let held) = execute(.load(record.key), at: recipient) else { continue }
                if ReplicaRules.merge(held, record.object) != nil {
                    report.violations.append(
                        "n\(node) removed a hint for \(record.target) as delivered, but n\(recipient) does not hold it: it holds \(ids(held)), the hint \(ids(record.object))"
                    )
                }
            }
        }
    }
}
