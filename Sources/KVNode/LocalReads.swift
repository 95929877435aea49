import KVCluster
import KVCore
import NIOCore

/// Reads answered where they arrive: a read that the coordinator would answer from this
/// node's replica alone (``LocalReadRule``), of a row the engine holds in memory, is
/// answered on the front end's event loop. It skips four thread hand-offs (to a task,
/// to the core's loop, back to the task, back to the connection's loop) and the
/// coordinator's bookkeeping, and answers exactly what the coordinator would: the local
/// replica's object, unmerged.
extension ClusterNode {
    /// The read of `key` with its table's quorum, if this node can answer it at once
    /// by itself; `nil` sends it through ``get(_:options:)``.
    public func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult? {
        guard let rule = localReadRule.withLockedValue({ $0 }) else { return nil }
        let started = NIODeadline.now()
        let (layout, row, replicaKey, quorum) = try resolveInLayout(key, QuorumOverrides())
        guard rule.answersAlone(replicaKey, quorum), !isStopped,
            (try? store.checkGeneration(replicaKey)) != nil,
            let object = cachedObject(replicaKey.bytes)
        else { return nil }
        // The rule must still hold after the row was read: had the placement changed
        // meanwhile, the row may have been read from a replica that no longer serves
        // the partition, and the coordinator decides instead.
        guard localReadRule.withLockedValue({ $0?.revision }) == rule.revision else { return nil }
        let result = local.readResult(object, identity: row.identity)
        // A large value is streamed by a task; the async path reads it.
        guard !result.siblings.contains(where: { $0.value?.largeValue != nil }) else { return nil }
        countRequest(partition: Int(replicaKey.partition.rawValue), in: layout)
        metrics.readsAnsweredLocally.add(1, ordering: .relaxed)
        metrics.recordRead(nanoseconds: (NIODeadline.now() - started).nanoseconds)
        return result
    }
}
