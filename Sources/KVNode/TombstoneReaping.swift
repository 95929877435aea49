import KVCluster
import KVCore
import KVReplica
import KVStorage
import NIOCore

/// The shell of ``TombstoneReaper``: it reads candidates and row holdings from the
/// anti-entropy index on the storage thread pool, sends queries and reaps over the
/// transport, runs its own reaps through the write drain and fires the machine's timers.
/// Every decision (which tombstones, whom to ask, when a tombstone may go) is the
/// machine's.
extension ClusterNode {
    /// What the reaper sees of this node now.
    func reaperView() -> ReaperView {
        let metadata = metadata
        // A member that left may still run and hold hints it has yet to hand back, older
        // than the tombstone: while it is reachable it is asked too (once it is gone its
        // hints go with it, so it holds up nothing).
        let others =
            metadata.activeMembers.filter { $0 != nodeID }
            + metadata.departed.filter { $0 != nodeID && isReachable($0) }.sorted()
        return ReaperView(
            node: nodeID, members: others, reachable: Set(others.filter(isReachable)),
            layout: metadata.isFormed ? metadata.layout : nil,
            moving: Set(metadata.placement.map { Array($0.previousOwners.keys) } ?? []),
            indexComplete: antiEntropy.indexComplete)
    }

    /// Carries out one of the reaper's actions.
    func performReaping(_ action: TombstoneReaper.Action) {
        switch action {
        case .readCandidates(let partition, let limit, let minimumAge, let start):
            local.threadPool.submit { [self] _ in
                let candidates = store.reapCandidates(
                    of: partition, limit: limit, minimumAge: minimumAge, start: start)
                runCore(.reaper(.candidatesRead(candidates)))
            }
        case .send(let message, let target):
            transport.send(message, to: target)
        case .reap(let id, let key, let hash):
            storage(.reap(key, objectHash: hash)) { [self] outcome in
                runCore(.reaper(.reaped(id: id, outcome)))
            }
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.reaper, id: id), afterMilliseconds: milliseconds)
        case .unanswered(let peer):
            noteUnanswered(by: peer)
        case .cancelTimer(let id):
            cancelCoreTimer(NodeCore.Timer(.reaper, id: id))
        }
    }
}
