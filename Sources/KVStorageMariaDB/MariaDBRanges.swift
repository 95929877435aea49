import Crypto
import KVCore
import KVStorage
import KVStorageDatabase

/// A key as stored: the indexed head, the rest, and the digest that keeps keys sharing a
/// head apart in the primary key.
struct SplitKey {
    var head: [UInt8]
    var tail: [UInt8]

    init(_ key: [UInt8]) {
        let cut = min(key.count, MariaDBConnection.headBytes)
        head = Array(key[..<cut])
        tail = Array(key[cut...])
    }

    /// Whether the head is full, so other keys may share it (and differ in their tails).
    var mayShareHead: Bool { head.count == MariaDBConnection.headBytes }

    var digest: [UInt8] {
        tail.isEmpty ? [UInt8](repeating: 0, count: 32) : Array(SHA256.hash(data: tail))
    }
}

extension MariaDBConnection {
    private func sql(_ parts: [SQLPart]) -> [UInt8] {
        var text: [UInt8] = []
        for part in parts {
            switch part {
            case .text(let string): text.append(contentsOf: Array(string.utf8))
            case .bytes(let bytes): appendLiteral(bytes, to: &text)
            }
        }
        return text
    }

    private func entries(_ rows: [[[UInt8]?]]) -> [StorageEntry] {
        rows.map { StorageEntry(key: ($0[0] ?? []) + ($0[1] ?? []), value: $0[2] ?? []) }
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        let split = SplitKey(key)
        let rows = try execute(
            sql([
                .text(
                    "SELECT head, tail, v FROM \(settings.table) WHERE ks = \(keyspace.storedNumber) AND head = "
                ),
                .bytes(split.head), .text(" AND tail_digest = "), .bytes(split.digest),
            ]), what: "get")
        return entries(rows).first { $0.key == key }?.value
    }

    /// Every row whose head is `head` (rare: only keys longer than a head share one).
    private func group(_ head: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [StorageEntry] {
        entries(
            try execute(
                sql([
                    .text(
                        "SELECT head, tail, v FROM \(settings.table) WHERE ks = \(keyspace.storedNumber) AND head = "
                    ),
                    .bytes(head),
                ]), what: "range read"))
    }

    public func page(of range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection, limit: Int)
        throws(StorageError) -> RangePage
    {
        let lower = SplitKey(range.lowerBound)
        let upper = range.upperBound.map(SplitKey.init)
        func sorted(_ entries: [StorageEntry]) -> [StorageEntry] {
            let inRange = entries.filter { range.contains($0.key) }
            let ascending = inRange.sorted { $0.key.lexicographicallyPrecedes($1.key) }
            return direction == .forward ? ascending : ascending.reversed()
        }
        // The edge of the range where the walk starts may cut through a shared head: read
        // that head's rows on their own and walk the index strictly past it.
        var first: [StorageEntry] = []
        var conditions: [SQLPart] = [.text(" WHERE ks = \(keyspace.storedNumber)")]
        switch direction {
        case .forward:
            if lower.mayShareHead {
                first = sorted(try group(lower.head, in: keyspace))
                conditions += [.text(" AND head > "), .bytes(lower.head)]
            } else {
                conditions += [.text(" AND head >= "), .bytes(lower.head)]
            }
            if let upper { conditions += [.text(" AND head <= "), .bytes(upper.head)] }
        case .reverse:
            conditions += [.text(" AND head >= "), .bytes(lower.head)]
            if let upper {
                if upper.mayShareHead {
                    first = sorted(try group(upper.head, in: keyspace))
                    conditions += [.text(" AND head < "), .bytes(upper.head)]
                } else {
                    conditions += [.text(" AND head <= "), .bytes(upper.head)]
                }
            }
        }
        if first.count >= limit { return RangePage(entries: first, isLast: false) }
        let wanted = limit - first.count
        let order = direction == .forward ? "ASC" : "DESC"
        var rows = entries(
            try execute(
                sql(
                    [.text("SELECT head, tail, v FROM \(settings.table)")] + conditions + [
                        .text(" ORDER BY head \(order) LIMIT \(wanted)")
                    ]), what: "range read"))
        var isLast = rows.count < wanted
        // A full page may end inside a run of rows sharing one full head, ordered by
        // digest rather than tail: take that whole run on its own instead.
        if !isLast, let last = rows.last, SplitKey(last.key).mayShareHead {
            let head = SplitKey(last.key).head
            rows.removeAll { SplitKey($0.key).head == head }
            rows += try group(head, in: keyspace)
            // The run sits on the far edge of the range: nothing lies beyond it, and all
            // of it may be out of range, so the walk must end here rather than ask again.
            let farEdge = direction == .forward ? upper?.head : lower.head
            if head == farEdge { isLast = true }
        }
        return RangePage(entries: first + sorted(rows), isLast: isLast)
    }

    func writeOnce(_ batch: WriteBatch) throws(StorageError) {
        // The transaction starts in the same packet as the first statements.
        var pending: [UInt8] = Array("START TRANSACTION".utf8)
        func flush() throws(StorageError) {
            guard !pending.isEmpty else { return }
            try execute(pending, what: "writing a batch")
            pending = []
        }
        func queue(_ statement: [UInt8]) throws(StorageError) {
            // Statements travel together up to 1 MiB, so a batch costs few round trips.
            if !pending.isEmpty && pending.count + statement.count > 1 << 20 { try flush() }
            if !pending.isEmpty { pending.append(UInt8(ascii: ";")) }
            pending += statement
        }
        for operation in batch.operations {
            switch operation {
            case .put(let keyspace, let key, let value):
                let split = SplitKey(key)
                try queue(
                    sql([
                        .text(
                            "INSERT INTO \(settings.table) (ks, head, tail_digest, tail, v) VALUES (\(keyspace.storedNumber), "
                        ),
                        .bytes(split.head), .text(", "), .bytes(split.digest), .text(", "),
                        .bytes(split.tail),
                        .text(", "), .bytes(value), .text(") ON DUPLICATE KEY UPDATE v = VALUES(v)"),
                    ]))
            case .delete(let keyspace, let key):
                let split = SplitKey(key)
                try queue(
                    sql([
                        .text(
                            "DELETE FROM \(settings.table) WHERE ks = \(keyspace.storedNumber) AND head = "),
                        .bytes(split.head), .text(" AND tail_digest = "), .bytes(split.digest),
                    ]))
            case .deleteRange(let keyspace, let range):
                guard !range.isEmpty else { continue }
                // Rows strictly between the edge heads are all inside the range; rows on
                // an edge head are checked one by one. Earlier operations of the batch
                // must be applied first, since the edges are read.
                try flush()
                let lower = SplitKey(range.lowerBound)
                let upper = range.upperBound.map(SplitKey.init)
                var between: [SQLPart] = [
                    .text("DELETE FROM \(settings.table) WHERE ks = \(keyspace.storedNumber) AND head > "),
                    .bytes(lower.head),
                ]
                if let upper { between += [.text(" AND head < "), .bytes(upper.head)] }
                try queue(sql(between))
                var edges = [lower.head]
                if let upper, upper.head != lower.head { edges.append(upper.head) }
                for head in edges {
                    for entry in try group(head, in: keyspace) where range.contains(entry.key) {
                        let split = SplitKey(entry.key)
                        try queue(
                            sql([
                                .text(
                                    "DELETE FROM \(settings.table) WHERE ks = \(keyspace.storedNumber) AND head = "
                                ),
                                .bytes(split.head), .text(" AND tail_digest = "), .bytes(split.digest),
                            ]))
                    }
                }
            }
        }
        try queue(Array("COMMIT".utf8))
        try flush()
    }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        var conditions: [SQLPart] = [
            .text(" WHERE ks = \(keyspace.storedNumber) AND head >= "),
            .bytes(SplitKey(range.lowerBound).head),
        ]
        if let upper = range.upperBound {
            conditions += [.text(" AND head <= "), .bytes(SplitKey(upper).head)]
        }
        let rows = try execute(
            sql(
                [
                    .text(
                        "SELECT count(*), coalesce(sum(length(head) + length(tail) + length(v)), 0) FROM \(settings.table)"
                    )
                ]
                    + conditions), what: "size estimate")
        func number(_ column: Int) -> UInt64 {
            rows.first.flatMap { $0[column] }.flatMap { UInt64(String(decoding: $0, as: UTF8.self)) } ?? 0
        }
        return StorageSizeEstimate(bytes: number(1), keyCount: number(0))
    }
}

/// A piece of a statement: SQL text, or bytes to quote as a binary literal.
enum SQLPart {
    case text(String)
    case bytes([UInt8])
}
