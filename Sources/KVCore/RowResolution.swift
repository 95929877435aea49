/// What a read sees of a row: expiry and a table's conflict policy applied to its
/// stored versions.
///
/// Both rules depend only on the versions themselves (each carries its expiry and
/// whether it was written to a last-writer-wins table), so every replica, every repair
/// and every read resolves a row the same way without looking up its table.
extension DottedVersionVectorSet where Element == Sibling {
    /// The values a read at `nowMilliseconds` (wall clock) returns.
    ///
    /// - Versions of a table with siblings: every version that is neither a tombstone nor
    ///   expired.
    /// - Versions of a last-writer-wins table: the one version with the highest hybrid
    ///   logical timestamp (ties broken by its dot, the same on every replica), tombstones
    ///   included, so a later delete wins over an earlier write. When that version is a
    ///   counter, every concurrent counter version of the same epoch is returned with it,
    ///   so concurrent increments merge instead of overwriting each other. Nothing is
    ///   returned when the winner is a tombstone or has expired.
    public func visibleValues(at nowMilliseconds: Int64) -> [Sibling] {
        resolvedValues().filter { $0.isVisible(at: nowMilliseconds) }
    }

    /// Whether a read at `nowMilliseconds` finds nothing.
    public func isGone(at nowMilliseconds: Int64) -> Bool {
        visibleValues(at: nowMilliseconds).isEmpty
    }

    /// The wall-clock time from which this state reads as absent for good, or `nil` when
    /// it holds a value that never expires. A deleted row has been gone since `Int64.min`.
    /// Reaping treats a row as a tombstone from then on.
    public var goneSinceMilliseconds: Int64? {
        var latest = Int64.min
        for sibling in resolvedValues() where !sibling.isTombstone {
            guard let expiry = sibling.expiresAtMilliseconds else { return nil }
            latest = max(latest, expiry)
        }
        return latest
    }

    /// Whether the row was written to a last-writer-wins table.
    public var resolvesByLastWriter: Bool { values.contains(where: \.resolvesByLastWriter) }

    /// The highest timestamp of any version held: a last-writer-wins write coordinated
    /// here must be later than every version it replaces.
    public var latestTimestampMilliseconds: Int64? { values.map(\.timestampMilliseconds).max() }

    /// The versions left after the conflict policy, before expiry is applied.
    private func resolvedValues() -> [Sibling] {
        guard resolvesByLastWriter else { return values }
        let versions = self.versions
        guard
            let winner = versions.max(by: { earlier, later in
                Self.lastWriterOrder(earlier) < Self.lastWriterOrder(later)
            })
        else { return [] }
        guard let epoch = Self.counterEpoch(winner.value) else { return [winner.value] }
        // Concurrent counters of the winner's epoch merge; a counter from before a later
        // SET or DEL (another epoch) does not count again.
        return versions.map(\.value).filter { Self.counterEpoch($0) == epoch }
    }

    /// The epoch of a counter version (``CounterState/epochMilliseconds``), `nil` for
    /// anything else.
    private static func counterEpoch(_ sibling: Sibling) -> Int64? {
        guard let value = sibling.value, value.contentType == CounterState.contentType else { return nil }
        return (try? CounterState(decoding: value.bytes))?.epochMilliseconds ?? 0
    }

    /// The total order of last-writer-wins: hybrid logical timestamp, then the dot.
    private static func lastWriterOrder(_ version: (dot: Dot, value: Sibling)) -> (
        Int64, UInt64, UInt32, UInt64
    ) {
        (
            version.value.timestampMilliseconds, version.dot.actor.node.rawValue,
            version.dot.actor.incarnation,
            version.dot.counter
        )
    }
}
