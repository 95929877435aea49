import KVCluster
import KVCore
import KVStorage

/// The stored rows of a write pass, read with one cursor before the pass runs, when the
/// pass merges many replicated rows: a handoff batch, a hint delivery or an anti-entropy
/// repair of hundreds of rows of one span. A point read per row costs a lookup in every
/// memtable and level (and a round trip on a database engine); a cursor over the rows'
/// span finds them, and the absence of the others, in one pass.
///
/// It is only a cache of what point reads would return. The rows it names are the
/// pass's own: the node runs a pass holding every row lock (see ``ReplicaStore``'s
/// concurrency notes), so no other write to them lands meanwhile, and reading them a
/// moment before the pass's point reads would changes no answer. (A partition dropped
/// from the node is deleted outside the drain; a point read races with that the same
/// way.) Its reach is bounded in rows and bytes, so a span that holds far more than the
/// pass names (scattered repairs in a large partition, batches of several partitions)
/// costs little more than the point reads it replaces; keys past its reach are read
/// one by one as before. Only engines whose cursors can stop at any entry
/// (``StorageEngine/cursorsStopAnywhere``: RocksDB, memory) read ahead; the database
/// engines' cursors fetch pages of rows or copy the range first, whatever the bound.
package struct ReadAhead {
    /// Passes naming fewer merged rows than this read row by row.
    package static let minimumRows = 32
    /// Rows read per row the pass names, beyond ``extraRows``.
    package static let rowsPerNamedRow = 2
    /// Rows read beyond ``rowsPerNamedRow`` per named row.
    package static let extraRows = 64
    /// The stored bytes (keys and values) it holds at most: large-value chunks are
    /// megabytes each.
    package static let maximumBytes = 8 << 20

    /// The encoded rows found, by key.
    private var found: [[UInt8]: [UInt8]] = [:]
    /// The smallest key named: where the cursor started.
    private var lowerBound: [UInt8] = []
    /// Every key from ``lowerBound`` through this one was seen (`nil`: none was read
    /// ahead): a key in that span not in ``found`` is absent.
    private var coveredThrough: [UInt8]?

    /// Nothing read ahead: every row is read on its own.
    package init() {}

    /// Reads the span of the rows `commands` merge (replicated objects, repairs) when
    /// there are enough of them. A failed read leaves nothing read ahead, so each row's
    /// own read reports the error.
    package init(for commands: [StorageCommand], in engine: any StorageEngine) {
        var named = 0
        var smallest: [UInt8]?
        var largest: [UInt8]?
        for command in commands {
            let key: [UInt8]
            switch command {
            case .merge(let replicaKey, _), .reconcile(let replicaKey, _): key = replicaKey.bytes
            case .coordinate, .load, .storeHint, .reap: continue
            }
            named += 1
            if smallest.map({ key.lexicographicallyPrecedes($0) }) ?? true { smallest = key }
            if largest.map({ $0.lexicographicallyPrecedes(key) }) ?? true { largest = key }
        }
        guard named >= Self.minimumRows, engine.cursorsStopAnywhere, let smallest, let largest else { return }
        let rowLimit = named * Self.rowsPerNamedRow + Self.extraRows
        var rows: [[UInt8]: [UInt8]] = [:]
        var last: [UInt8]?
        var bytes = 0
        var reachedEnd = false
        do {
            let cursor = try engine.cursor(
                over: EncodedKeyRange(lowerBound: smallest, upperBound: largest + [0]), in: .data,
                direction: .forward)
            while true {
                guard rows.count < rowLimit, bytes < Self.maximumBytes else { break }
                guard let entry = try cursor.next() else {
                    reachedEnd = true
                    break
                }
                rows[entry.key] = entry.value
                bytes += entry.key.count + entry.value.count
                last = entry.key
            }
        } catch {
            return
        }
        found = rows
        lowerBound = smallest
        // Stopped early, the cursor vouches for the keys through the last one it returned
        // (none, if it returned nothing).
        coveredThrough = reachedEnd ? largest : last
    }

    /// The stored encoding under `key` as read ahead (`.some(nil)`: absent), or `nil`
    /// when the key lies beyond what was read.
    package func encoded(at key: [UInt8]) -> [UInt8]?? {
        guard let coveredThrough, !key.lexicographicallyPrecedes(lowerBound),
            !coveredThrough.lexicographicallyPrecedes(key)
        else { return nil }
        return .some(found[key])
    }
}
