import KVCore

/// The rows of one client scan page, merged from the pages several nodes answered.
public struct MergedScanPage: Sendable {
    /// The page's live rows in scan order: the encoded row key (relative to the table
    /// prefix) and the merge of every replica's object of it.
    public var rows: [(key: [UInt8], object: StoredObject)]
    /// The last key the page examined, from which the next page continues; `nil` when
    /// the scan is complete.
    public var resumeAfter: [UInt8]?

    /// Merges node pages into one page of at most `limit` rows, ending early once the
    /// rows' values reach `maximumValueBytes`.
    ///
    /// A node that stopped early (its page is truncated) vouches only for keys up to its
    /// last one, so the merged page ends at the earliest such key: rows past it may be
    /// missing from that node's partitions. Rows of the same key from several replicas
    /// merge their versions, so a tombstone on one hides an older value on another;
    /// deleted rows, and rows expired at `nowMilliseconds`, are examined (the
    /// continuation moves past them) but not returned.
    public static func merging(
        _ pages: [PartitionScanPage], limit: Int, reverse: Bool, nowMilliseconds: Int64,
        maximumValueBytes: Int
    ) -> MergedScanPage {
        func before(_ a: [UInt8], _ b: [UInt8]) -> Bool {
            reverse ? b.lexicographicallyPrecedes(a) : a.lexicographicallyPrecedes(b)
        }
        var cutoff: [UInt8]?
        for page in pages where page.truncated {
            guard let last = page.rows.last?.key else { continue }
            if let current = cutoff, !before(last, current) { continue }
            cutoff = last
        }
        var objects: [[UInt8]: StoredObject] = [:]
        for page in pages {
            for row in page.rows {
                if let cutoff, before(cutoff, row.key) { continue }
                objects[row.key] = objects[row.key].map { $0.merging(row.object) } ?? row.object
            }
        }
        var rows: [(key: [UInt8], object: StoredObject)] = []
        var lastKey: [UInt8]?
        var stoppedEarly = false
        var valueBytes = 0
        for key in objects.keys.sorted(by: before) {
            if rows.count == limit || valueBytes >= maximumValueBytes {
                stoppedEarly = true
                break
            }
            lastKey = key
            guard let object = objects[key] else { continue }
            let visible = object.visibleValues(at: nowMilliseconds)
            guard !visible.isEmpty else { continue }
            valueBytes += visible.reduce(0) { $0 + ($1.value?.bytes.count ?? 0) }
            rows.append((key, object))
        }
        if cutoff != nil && !stoppedEarly { lastKey = cutoff }
        return MergedScanPage(rows: rows, resumeAfter: stoppedEarly || cutoff != nil ? lastKey : nil)
    }
}
