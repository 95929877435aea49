import KVCore
import KVStorage

/// Merges several sorted cursors (one per partition) into one stream in key order.
///
/// Each source's keys share a prefix of known length (its partition and table); rows
/// are compared by what follows it, the encoded row key. Sources are opened up front and
/// the head of each is kept; picking the next row scans the heads, which for a few
/// hundred partitions costs less than maintaining a heap.
struct SortedMerge {
    private struct Head {
        var cursor: any StorageCursor
        var prefixLength: Int
        var entry: StorageEntry?
    }

    private var heads: [Head] = []
    private let reverse: Bool

    init(reverse: Bool, source: (Int) throws -> (any StorageCursor, Int)?) throws {
        self.reverse = reverse
        var index = 0
        while let (cursor, prefixLength) = try source(index) {
            if let first = try cursor.next() {
                heads.append(Head(cursor: cursor, prefixLength: prefixLength, entry: first))
            }
            index += 1
        }
    }

    /// The next row key (without its source's prefix) and value, or `nil` at the end.
    mutating func next() throws -> ([UInt8], [UInt8])? {
        var best: Int? = nil
        var bestKey: ArraySlice<UInt8> = []
        for (index, head) in heads.enumerated() {
            guard let entry = head.entry else { continue }
            let key = entry.key[head.prefixLength...]
            if best != nil {
                let better =
                    reverse ? bestKey.lexicographicallyPrecedes(key) : key.lexicographicallyPrecedes(bestKey)
                if better {
                    best = index
                    bestKey = key
                }
            } else {
                best = index
                bestKey = key
            }
        }
        guard let best, let entry = heads[best].entry else { return nil }
        heads[best].entry = try heads[best].cursor.next()
        return (Array(bestKey), entry.value)
    }

    /// Whether any source has rows left.
    func hasMore() throws -> Bool {
        heads.contains { $0.entry != nil }
    }
}

/// The continuation token of a scan page: where the page stopped.
///
/// base64url of `0x01` (version), a flags byte (bit 0: reverse) and the length-prefixed
/// encoded key of the last row examined. The next page starts just past that key, so
/// rows written or deleted between pages are seen or not as at the time of each page,
/// and no row is returned twice.
enum ScanContinuation {
    static func encode(_ lastKey: [UInt8], reverse: Bool) -> String {
        var writer = BinaryWriter(capacity: lastKey.count + 4)
        writer.write(1)
        writer.write(reverse ? 1 : 0)
        writer.writeLengthPrefixed(lastKey)
        return Base64URL.encode(writer.bytes)
    }

    static func decode(_ token: String, reverse: Bool) throws(KVError) -> [UInt8] {
        guard token.utf8.count <= 8192, let bytes = Base64URL.decode(token) else {
            throw KVError(.invalidContinuation, "the continuation token is not valid")
        }
        var reader = BinaryReader(bytes)
        guard let version = try? reader.readByte(), version == 1, let flags = try? reader.readByte(),
            flags <= 1,
            let key = try? reader.readLengthPrefixed(maximumLength: 8192), reader.isAtEnd
        else {
            throw KVError(.invalidContinuation, "the continuation token is not valid")
        }
        guard (flags == 1) == reverse else {
            throw KVError(
                .invalidContinuation, "the continuation token belongs to a scan in the other direction")
        }
        return key
    }
}
