import KVCore

/// The limits one row's state must stay within.
package struct RowLimits: Hashable, Sendable {
    /// The most bytes of live values one row may hold (what one read returns).
    package var maximumRowBytes: Int
    /// The most siblings one row may hold.
    package var maximumSiblings: Int

    /// Creates limits.
    package init(maximumRowBytes: Int, maximumSiblings: Int) {
        self.maximumRowBytes = maximumRowBytes
        self.maximumSiblings = maximumSiblings
    }
}

/// The checks a replica makes of one row under its lock, and what a row's contexts and
/// entity tags are bound to. Shared by every write path, so they cannot drift apart.
package enum RowChecks {
    /// What contexts and ETags of a row are bound to: its table's generation, then
    /// namespace, table and key (without the partition, so a context stays valid whatever
    /// the partition count).
    package static func identity(generation: UInt64, tableAndKey: ArraySlice<UInt8>) -> [UInt8] {
        var identity = BinaryWriter(capacity: 8 + tableAndKey.count)
        identity.writeFixed(generation)
        identity.writeRaw(tableAndKey)
        return identity.bytes
    }

    /// The identity of the row stored under `dataKey` (a data key starts with its 4-byte
    /// partition).
    package static func identity(generation: UInt64, dataKey: [UInt8]) -> [UInt8] {
        identity(generation: generation, tableAndKey: dataKey.dropFirst(4))
    }

    /// The sealed context and entity tag of a row's state. The ETag is the context's
    /// seal tag in hexadecimal: it changes with every version of the row and differs
    /// between rows, and costs no second hash.
    package static func version(of object: StoredObject, identity row: [UInt8], sealer: ContextSealer)
        -> (context: String, etag: String)
    {
        let (context, tag) = sealer.sealWithTag(object.context, row: row)
        return (context, Hexadecimal.lowercase(tag))
    }

    /// Checks a write's precondition against the row's current state at `nowMilliseconds`
    /// (an expired row is absent). The caller holds the row's lock, so the check and the
    /// write are atomic.
    package static func check(
        _ condition: WriteCondition, against object: StoredObject, identity row: [UInt8],
        sealer: ContextSealer, nowMilliseconds: Int64
    ) throws(KVError) {
        switch condition {
        case .none:
            return
        case .ifAbsent:
            guard object.isGone(at: nowMilliseconds) else {
                throw KVError(.preconditionFailed, "the row exists (If-None-Match: *)")
            }
        case .ifMatch(let tag):
            if tag == version(of: object, identity: row, sealer: sealer).etag { return }
            if let given = try? sealer.open(tag, row: row), given == object.context { return }
            throw KVError(.preconditionFailed, "the row has changed since that version was read (If-Match)")
        }
    }

    /// Refuses a row state beyond the row's limits: too many value bytes (what one read
    /// would return) or too many siblings (which only a write with a context resolves).
    package static func checkLimits(_ object: StoredObject, _ limits: RowLimits) throws(KVError) {
        let rowBytes = object.liveValues.reduce(0) { $0 + ($1.value?.bytes.count ?? 0) }
        guard rowBytes <= limits.maximumRowBytes else {
            throw KVError(
                .rowTooLarge,
                "the row's values would take \(rowBytes) bytes (limit \(limits.maximumRowBytes)); resolve its siblings with a context"
            )
        }
        guard object.siblingCount <= limits.maximumSiblings else {
            throw KVError(
                .tooManySiblings,
                "the row would have \(object.siblingCount) siblings (limit \(limits.maximumSiblings)); read it and write back with its context to resolve them"
            )
        }
    }
}
