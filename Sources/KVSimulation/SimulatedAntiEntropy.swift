import KVCluster
import KVCore
import KVReplica
import KVStorage

/// The simulator's interpreter of ``AntiEntropyExchange``: the same machine the node
/// runs, its tree reads, listings, loads and merges done inline on the node's replica
/// store and its completions, messages and timers delivered as events. Peers answer
/// from their own index, as the node shell does.
extension SimulatedWorld {
    static let antiEntropySettings = AntiEntropySettings(requestTimeoutMilliseconds: requestTimeout)
    /// The most keys one listing carries: one, so that exchanges page through their
    /// leaves even over the few keys of a run.
    static let keysPerListing = 1
    /// Exchanges start every this many membership ticks.
    static let antiEntropyTickEvery = 4

    /// What node `node`'s exchange machine sees.
    func antiEntropyView(_ node: Int) -> AntiEntropyView {
        let me = nodes[node].id
        return AntiEntropyView(
            node: me, layout: nodes[node].metadata?.layout ?? nodes[node].core.coordinator.layout,
            reachable: reachablePeers(of: node)
        )
    }

    func listing(_ partition: PartitionID, _ leaves: [Int], after: [UInt8]?, at node: Int) -> KeyListing? {
        nodes[node].store.keyListing(partition, leaves: leaves, after: after, limit: Self.keysPerListing)
    }

    /// Carries out one of the exchange machine's actions. The `switch` has no `default:`
    /// on purpose.
    mutating func performAntiEntropy(_ action: AntiEntropyExchange.Action, at node: Int) {
        let delay = Int64.random(in: 0...3, using: &random)
        switch action {
        case .readTree(let partition):
            let tree = nodes[node].store.antiEntropy.tree(of: partition)
            complete(.antiEntropy(.treeRead(tree)), after: delay, at: node)
        case .send(let message, let target):
            send(message, from: node, to: index(of: target))
        case .list(let id, let partition, let leaves, let after):
            let listing = listing(partition, leaves, after: after, at: node)
            complete(.antiEntropy(.listed(id: id, listing)), after: delay, at: node)
        case .load(let id, let partition, let bytes):
            let key = ReplicaKey(
                partition: partition, bytes: bytes, generation: SimulatedNode.table.generation)
            let outcome = execute(.load(key), at: node)
            complete(.antiEntropy(.loaded(id: id, key, outcome)), after: delay, at: node)
        case .reconcile(let id, let key, let object):
            log("n\(node) repairs a key with \(ids(object))")
            report.keysRepaired += 1
            let outcome = execute(.reconcile(key, object), at: node)
            complete(.antiEntropy(.merged(id: id, outcome)), after: delay, at: node)
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.antiEntropy, id: id), afterMilliseconds: milliseconds, at: node)
        case .unanswered(let peer):
            noteUnanswered(by: peer, at: node)
        case .cancelTimer(let id):
            nodes[node].cancelledCoreTimers.insert(NodeCore.Timer(.antiEntropy, id: id))
        }
    }

    /// One full round of anti-entropy by the nodes' own machines: every node exchanges
    /// every partition it replicates with every peer replica, one exchange at a time.
    /// Returns how many keys the round repaired.
    mutating func antiEntropyRound() -> Int {
        let before = nodes.map(\.core.exchanges.counters.keysRepaired).reduce(0, +)
        for node in nodes.indices where nodes[node].isUp {
            let view = antiEntropyView(node)
            guard let layout = view.layout else { continue }
            for partition in (0..<layout.partitionCount).map({ PartitionID(rawValue: UInt32($0)) })
            where layout.replicas(of: partition).contains(view.node) {
                for peer in layout.replicas(of: partition) where peer != view.node {
                    runCore(.startExchange(partition, with: peer), at: node)
                    drain()
                }
            }
        }
        return Int(nodes.map(\.core.exchanges.counters.keysRepaired).reduce(0, +) - before)
    }
}
