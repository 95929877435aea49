import KVCore

/// How a replica changes a row's causal state. Both the node shell and the simulator
/// apply exactly these rules, under the row's lock.
public enum ReplicaRules {
    /// The timestamp just after `latest`, kept within what decoders accept
    /// (``Sibling/timestampRange``): a row at the top stays readable, its writes tied.
    static func after(_ latest: Int64) -> Int64 {
        latest < Sibling.timestampRange.upperBound ? latest + 1 : latest
    }

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
        var sibling = write.sibling
        var supersedes = write.context ?? (write.sibling.isTombstone ? object.context : VersionVector())
        if sibling.resolvesByLastWriter {
            // Last writer wins: the write replaces everything this replica holds, and its
            // hybrid logical timestamp is raised above every version it replaces, so a
            // write that follows another (through any node) also wins by timestamp over
            // concurrent versions that arrive later with the older one's clock.
            supersedes = supersedes.merging(object.context)
            if let latest = object.latestTimestampMilliseconds, sibling.timestampMilliseconds <= latest {
                sibling.timestampMilliseconds = Self.after(latest)
            }
        }
        updated.recordWrite(sibling, context: supersedes, actor: actor, minimumCounter: minimumCounter)
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
    ///
    /// In a last-writer-wins table (`lastWriterWins`, or a row already written as one)
    /// the increment starts from what a read sees, and a decimal integer stored as text
    /// counts as a counter (see ``startingCounter(_:visible:)``).
    public static func increment(
        _ object: StoredObject, by delta: Int64, actor: ActorID, timestampMilliseconds: Int64,
        requestID: String? = nil, lastWriterWins: Bool = false, minimumCounter: UInt64 = 1
    ) throws(KVError) -> StoredObject? {
        if let requestID, object.values.contains(where: { $0.requestID == requestID }) { return nil }
        var updated = object
        var state: CounterState
        var sibling = Sibling(value: nil, timestampMilliseconds: timestampMilliseconds, requestID: requestID)
        if lastWriterWins || object.resolvesByLastWriter {
            sibling.resolvesByLastWriter = true
            if let latest = object.latestTimestampMilliseconds, sibling.timestampMilliseconds <= latest {
                sibling.timestampMilliseconds = Self.after(latest)
            }
            let visible = object.visibleValues(at: timestampMilliseconds)
            // An increment keeps the row's expiry, as Redis's INCR keeps a key's TTL.
            sibling.expiresAtMilliseconds = visible.first?.expiresAtMilliseconds
            state = try startingCounter(object, visible: visible)
        } else {
            state = try CounterState.merged(object.visibleValues(at: timestampMilliseconds)) ?? CounterState()
        }
        state.add(delta, by: actor)
        sibling.value = RowValue(bytes: state.encoded(), contentType: CounterState.contentType)
        updated.recordWrite(sibling, context: object.context, actor: actor, minimumCounter: minimumCounter)
        return updated
    }

    /// The counter an increment of a last-writer-wins row starts from.
    ///
    /// - Counters (what a read sees): their merge, in their epoch.
    /// - Nothing visible (never written, deleted, expired): a new counter whose epoch is
    ///   the timestamp of the latest version held (0 for a row never written), so
    ///   increments made before the delete do not count again, while concurrent first
    ///   increments through different nodes share an epoch and merge.
    /// - A decimal integer stored as text (Redis's `SET k 10` before `INCR k`): a counter
    ///   in the epoch of that version, whose starting total is booked under an actor
    ///   derived from the version's dot: concurrent increments through other nodes derive
    ///   the same actor from the same version, so the merge counts the starting value once
    ///   and every increment once.
    static func startingCounter(_ object: StoredObject, visible: [Sibling]) throws(KVError) -> CounterState {
        if visible.isEmpty {
            return CounterState(epochMilliseconds: object.latestTimestampMilliseconds ?? 0)
        }
        guard visible.count == 1, let value = visible[0].value, value.contentType != CounterState.contentType
        else { return try CounterState.merged(visible) ?? CounterState() }
        guard value.largeValue == nil, value.bytes.count <= 20,
            let text = String(validating: value.bytes, as: UTF8.self), let number = Int64(text),
            String(number) == text
        else {
            throw KVError(.notACounter, "the row holds a value that is not an integer")
        }
        var state = CounterState(epochMilliseconds: visible[0].timestampMilliseconds)
        guard let dot = object.versions.first(where: { $0.value == visible[0] })?.dot else { return state }
        var hasher = SipHash24(key0: 0x6B76_636F_756E_7465, key1: 0x725F_6261_7365_0001)
        hasher.combine(contentsOf: withUnsafeBytes(of: dot.actor.node.rawValue.bigEndian, Array.init))
        hasher.combine(contentsOf: withUnsafeBytes(of: dot.actor.incarnation.bigEndian, Array.init))
        hasher.combine(contentsOf: withUnsafeBytes(of: dot.counter.bigEndian, Array.init))
        // Real actors never reach the last incarnation, so a derived actor cannot be one.
        let base = ActorID(node: NodeID(rawValue: hasher.finalize()), incarnation: UInt32.max)
        state.add(number, by: base)
        return state
    }
}
