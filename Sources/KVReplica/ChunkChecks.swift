import Crypto
import KVCore

/// How a replica tells a damaged chunk of a large value from a sound one.
///
/// Every chunk row holds a ``ChunkRecord`` with the SHA-256 of its data. A replica reads
/// a chunk row whose checksum fails (or that is not a chunk record at all) as absent:
/// the coordinator then reads the chunk from another replica, and the read repair that
/// follows stores the sound copy over the damaged one, because the damaged one no longer
/// counts as holding the version.
package enum ChunkChecks {
    /// The engine-key bytes after the partition that every chunk row starts with.
    static let tablePrefix = KeyEncoding.encode([
        .string(LargeValue.chunkTable.name.namespace), .string(LargeValue.chunkTable.name.table),
    ])

    /// Whether `dataKey` is a chunk's row in the chunk table (not an upload record).
    package static func isChunkRow(_ dataKey: [UInt8]) -> Bool {
        guard dataKey.count > 4 + tablePrefix.count, dataKey[4...].starts(with: tablePrefix),
            let parts = try? KeyEncoding.decode(
                Array(dataKey[(4 + tablePrefix.count)...]), schema: LargeValue.chunkTable.schema),
            case .int64(let index) = parts.last
        else { return false }
        return index >= 0
    }

    /// The SHA-256 of `data`.
    package static func checksum(_ data: ArraySlice<UInt8>) -> [UInt8] {
        Array(SHA256.hash(data: data))
    }

    /// Whether every live version of a chunk row holds a chunk record whose data
    /// matches its checksum.
    package static func isSound(_ object: StoredObject) -> Bool {
        object.liveValues.allSatisfy { sibling in
            let bytes = sibling.value?.bytes ?? []
            guard let record = ChunkRecord.header(of: bytes) else { return false }
            return checksum(bytes[ChunkRecord.headerBytes...]).elementsEqual(record.checksum)
        }
    }
}
