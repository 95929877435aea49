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

    /// Feeds one event to the exchange machine and carries out what it asks. The
    /// machine's lock is released before anything is performed: a send can fail at
    /// once, which is another event.
    func runAntiEntropy(_ event: (inout AntiEntropyExchange, AntiEntropyView) -> [AntiEntropyExchange.Action])
    {
        guard !isStopped, antiEntropy.isEnabled else { return }
        let view = antiEntropyView()
        performAntiEntropy(antiEntropyExchange.withLockedValue { event(&$0, view) })
    }

    private func performAntiEntropy(_ actions: [AntiEntropyExchange.Action]) {
        for action in actions {
            switch action {
            case .readTree(let partition):
                let tree = antiEntropy.tree(of: partition)
                runAntiEntropy { machine, _ in machine.treeRead(tree) }
            case .send(let message, let target):
                transport.send(message, to: target)
            case .list(let id, let partition, let leaves, let after):
                local.threadPool.submit { [self] _ in
                    let listing = try? AntiEntropyIndex.keyHashes(
                        in: partition, leaves: leaves, after: after, engine: local.engine,
                        limit: Self.keysPerListing)
                    runAntiEntropy { machine, _ in
                        machine.listed(
                            id: id, listing.map { KeyListing(entries: $0.entries, truncated: $0.truncated) })
                    }
                }
            case .load(let id, let partition, let bytes):
                guard let generation = tableGeneration(of: bytes) else {
                    runAntiEntropy { machine, _ in machine.loaded(id: id, nil, .object(StoredObject())) }
                    continue
                }
                let key = ReplicaKey(partition: partition, bytes: bytes, generation: generation)
                storage(.load(key)) { [self] outcome in
                    runAntiEntropy { machine, _ in machine.loaded(id: id, key, outcome) }
                }
            case .reconcile(let id, let key, let object):
                storage(.reconcile(key, object)) { [self] outcome in
                    runAntiEntropy { machine, _ in machine.storageCompleted(id: id, outcome) }
                }
            case .startTimer(let id, let milliseconds):
                let timer = eventLoop.scheduleTask(in: .milliseconds(milliseconds)) { [self] in
                    antiEntropyTimers.withLockedValue { $0[id] = nil }
                    runAntiEntropy { machine, _ in machine.timerFired(id: id) }
                }
                antiEntropyTimers.withLockedValue { $0[id] = timer }
            case .unanswered(let peer):
                noteUnanswered(by: peer)
            case .cancelTimer(let id):
                antiEntropyTimers.withLockedValue { $0.removeValue(forKey: id) }?.cancel()
            }
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
