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
    ///
    /// The new dot's counter is at least `minimumCounter` (see
    /// ``DottedVersionVectorSet/recordWrite(_:context:actor:minimumCounter:)``).
    public static func coordinate(
        _ object: StoredObject, _ write: ProposedWrite, actor: ActorID, minimumCounter: UInt64 = 1
    ) -> StoredObject? {
        // A retry of a write this row already holds (same client request id) is
        // answered with the row as it is: applying it again would add a second version.
        if let requestID = write.sibling.requestID,
            object.values.contains(where: { $0.requestID == requestID })
        {
            return nil
        }
        if write.sibling.isTombstone && write.context == nil && object.isDeleted { return nil }
        var updated = object
        let supersedes = write.context ?? (write.sibling.isTombstone ? object.context : VersionVector())
        updated.recordWrite(write.sibling, context: supersedes, actor: actor, minimumCounter: minimumCounter)
        return updated
    }

    /// Merges a replicated or repaired object into the local one. Returns `nil` when the
    /// local object already descends it, so nothing needs to be written.
    public static func merge(_ local: StoredObject, _ incoming: StoredObject) -> StoredObject? {
        let merged = local.merging(incoming)
        return merged == local ? nil : merged
    }

    /// Applies an increment at its coordinator: merges every counter sibling, adds
    /// `delta` under the coordinator's actor, and stores the result over everything
    /// the coordinator holds (the merged state includes every sibling, so nothing is
    /// lost by superseding them). Concurrent increments through other coordinators stay
    /// siblings and merge on the next read. Fails with `row.not_a_counter` when the
    /// row holds something else.
    public static func increment(
        _ object: StoredObject, by delta: Int64, actor: ActorID, timestampMilliseconds: Int64,
        requestID: String? = nil, minimumCounter: UInt64 = 1
    ) throws(KVError) -> StoredObject? {
        if let requestID, object.values.contains(where: { $0.requestID == requestID }) { return nil }
        var updated = object
        var state = try CounterState.merged(object.liveValues) ?? CounterState()
        state.add(delta, by: actor)
        let value = RowValue(bytes: state.encoded(), contentType: CounterState.contentType)
        updated.recordWrite(
            Sibling(value: value, timestampMilliseconds: timestampMilliseconds, requestID: requestID),
            context: object.context, actor: actor, minimumCounter: minimumCounter)
        return updated
    }
}
