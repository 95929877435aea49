import KVCluster
import KVCore
import KVStorage

/// The hints a node holds for primary replicas that were down when it stood in for
/// them (sloppy quorum), kept in the hints keyspace so they survive restarts.
///
/// In memory it keeps only counts: hints per target (which targets to deliver to) and
/// per row (a tombstone may not be reaped while any node holds a hint for its row).
package final class HintStore: Sendable {
    private struct State: Sendable {
        var nextSequence: UInt64 = 1
        var perTarget: [NodeID: Int] = [:]
        var perRow: [[UInt8]: Int] = [:]
    }

    /// Counters, for status and tests.
    package struct Counters: Sendable {
        package var stored: Int64 = 0
        package var delivered: Int64 = 0
        package var dropped: Int64 = 0
        package var failedDeliveries: Int64 = 0
    }

    private let box = Locked(State())
    package let counters = Locked(Counters())

    /// Loads the counts of the hints `engine` holds. Blocks.
    package init(engine: any StorageEngine) throws(KVError) {
        var state = State()
        try storageWork("loading hints") {
            let cursor = try engine.cursor(over: .all, in: .hints, direction: .forward)
            while let entry = try cursor.next() {
                guard let (target, sequence) = StorageLayout.parseHintKey(entry.key),
                    let record = try? HintRecord.decode(entry.value)
                else { continue }
                // Sequences count hints from zero; one this large is a damaged key, which
                // new hints' sequences never reach.
                if sequence < 1 << 63 { state.nextSequence = max(state.nextSequence, sequence + 1) }
                state.perTarget[target, default: 0] += 1
                state.perRow[record.key.bytes, default: 0] += 1
            }
        }
        box.withLockedValue { $0 = state }
    }

    /// Puts a new hint into `batch`; call ``stored(_:)`` with the result once the batch
    /// is stored.
    package func add(_ record: HintRecord, into batch: inout WriteBatch) -> HintRecord {
        let sequence = box.withLockedValue { state in
            defer { state.nextSequence += 1 }
            return state.nextSequence
        }
        batch.put(
            StorageLayout.hintKey(target: record.target, sequence: sequence), record.encoded(), in: .hints)
        return record
    }

    /// Counts hints whose batch was stored.
    package func stored(_ records: [HintRecord]) {
        guard !records.isEmpty else { return }
        box.withLockedValue { state in
            for record in records {
                state.perTarget[record.target, default: 0] += 1
                state.perRow[record.key.bytes, default: 0] += 1
            }
        }
        counters.withLockedValue { $0.stored += Int64(records.count) }
    }

    /// Counts hints whose removal was stored.
    package func removed(_ records: [HintRecord], delivered: Bool) {
        guard !records.isEmpty else { return }
        box.withLockedValue { state in
            for record in records {
                state.perTarget[record.target, default: 0] -= 1
                if state.perTarget[record.target]! <= 0 { state.perTarget[record.target] = nil }
                state.perRow[record.key.bytes, default: 0] -= 1
                if state.perRow[record.key.bytes]! <= 0 { state.perRow[record.key.bytes] = nil }
            }
        }
        counters.withLockedValue { counters in
            if delivered {
                counters.delivered += Int64(records.count)
            } else {
                counters.dropped += Int64(records.count)
            }
        }
    }

    /// Targets for which hints are held, in node order.
    package var targets: [NodeID] { box.withLockedValue { $0.perTarget.keys.sorted() } }

    /// Whether any hint for the row is held.
    package func holdsHint(for key: [UInt8]) -> Bool { box.withLockedValue { $0.perRow[key] != nil } }

    /// Hints held, in total.
    package var pendingCount: Int { box.withLockedValue { $0.perTarget.values.reduce(0, +) } }

    /// The oldest `limit` hints for `target`, with their storage keys (`nil` for a hint
    /// that cannot be decoded, which delivery removes). Blocks.
    package static func oldest(for target: NodeID, limit: Int, engine: any StorageEngine) throws(KVError)
        -> [(storageKey: [UInt8], record: HintRecord?)]
    {
        try storageWork("reading hints") {
            let start = StorageLayout.hintKey(target: target, sequence: 0)
            let cursor = try engine.cursor(
                over: .prefixed(by: Array(start.prefix(8))), in: .hints, direction: .forward)
            var hints: [(storageKey: [UInt8], record: HintRecord?)] = []
            while hints.count < limit, let entry = try cursor.next() {
                hints.append((entry.key, try? HintRecord.decode(entry.value)))
            }
            return hints
        }
    }
}
