import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOCore

/// The shell of ``AntiEntropyExchange``: it reads trees, listings and rows, sends
/// requests over the transport, runs merges through the write drain and fires the
/// machine's timers. Every decision (which partition and peer, which keys differ, which
/// differences settled, what to copy where) is the machine's.
extension ClusterNode {
    /// What the exchange machine sees of this node now.
    func antiEntropyView() -> AntiEntropyView {
        let metadata = metadata
        return AntiEntropyView(
            node: nodeID, layout: metadata.isFormed ? metadata.layout : nil,
            reachable: Set(metadata.members.keys.filter { $0 != nodeID && isReachable($0) }))
    }

    /// Carries out one of the exchange machine's actions.
    func performAntiEntropy(_ action: AntiEntropyExchange.Action) {
        switch action {
        case .readTree(let partition):
            let tree = antiEntropy.tree(of: partition)
            runCore(.antiEntropy(.treeRead(tree)))
        case .send(let message, let target):
            transport.send(message, to: target)
        case .list(let id, let partition, let leaves, let after):
            local.threadPool.submit { [self] _ in
                let listing = store.keyListing(
                    partition, leaves: leaves, after: after, limit: Self.keysPerListing)
                runCore(.antiEntropy(.listed(id: id, listing)))
            }
        case .load(let id, let partition, let bytes):
            guard let generation = tableGeneration(of: bytes) else {
                runCore(.antiEntropy(.loaded(id: id, nil, .object(StoredObject()))))
                return
            }
            let key = ReplicaKey(partition: partition, bytes: bytes, generation: generation)
            storage(.load(key)) { [self] outcome in
                runCore(.antiEntropy(.loaded(id: id, key, outcome)))
            }
        case .reconcile(let id, let key, let object):
            storage(.reconcile(key, object)) { [self] outcome in
                runCore(.antiEntropy(.merged(id: id, outcome)))
            }
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.antiEntropy, id: id), afterMilliseconds: milliseconds)
        case .unanswered(let peer):
            noteUnanswered(by: peer)
        case .cancelTimer(let id):
            cancelCoreTimer(NodeCore.Timer(.antiEntropy, id: id))
        }
    }

    /// Runs a storage command through the write drain, then `completion` with its outcome
    /// (not at all once the node is stopping).
    func storage(_ command: StorageCommand, then completion: @escaping @Sendable (StorageOutcome) -> Void) {
        let ticket = takeID()
        let registered = state.withLockedValue { state in
            guard !state.stopped else { return false }
            state.maintenance[ticket] = completion
            return true
        }
        if registered { enqueueWrite(.maintenance(id: ticket), command) }
    }
}
