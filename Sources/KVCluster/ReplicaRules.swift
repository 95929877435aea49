import KVCore

/// How a replica changes a row's causal state. Both the node shell and the simulator
/// apply exactly these rules, under the row's lock.
public enum ReplicaRules {
    /// Applies a client write at its coordinator, which makes the new dot with its own
    /// actor id. Returns `nil` when the write changes nothing.
    ///
    /// A delete without a context deletes what the coordinator holds (as Riak reads
    /// before deleting): users expect a delete to remove the value, not to add a
    /// tombstone beside it, and deleting an absent row changes nothing. A put without
    /// a context is concurrent with everything, so existing values stay as siblings.
    public static func coordinate(_ object: StoredObject, _ write: ProposedWrite, actor: ActorID)
        -> StoredObject?
    {
        if write.sibling.isTombstone && write.context == nil && object.isDeleted { return nil }
        var updated = object
        let supersedes = write.context ?? (write.sibling.isTombstone ? object.context : VersionVector())
        updated.recordWrite(write.sibling, context: supersedes, actor: actor)
        return updated
    }

    /// Merges a replicated or repaired object into the local one. Returns `nil` when the
    /// local object already descends it, so nothing needs to be written.
    public static func merge(_ local: StoredObject, _ incoming: StoredObject) -> StoredObject? {
        let merged = local.merging(incoming)
        return merged == local ? nil : merged
    }
}
