import KVCluster
import KVCore
import KVReplica
import KVStorage
import Testing

/// Which writes a replica notes for compaction: chunk rows only, value by value, with
/// the bytes written deciding when a value is due before the collection pass.
@Suite("Pending compactions of chunk rows")
struct PendingCompactionsTests {
    static let first = UUIDValue(bytes: Array(repeating: 1, count: 16))!
    static let second = UUIDValue(bytes: Array(repeating: 2, count: 16))!

    static func chunkKey(_ value: UUIDValue, _ index: Int64, partition: UInt32 = 5) -> [UInt8] {
        StorageLayout.dataKey(
            partition: PartitionID(rawValue: partition), namespace: LargeValue.chunkTable.name.namespace,
            table: LargeValue.chunkTable.name.table, key: KeyEncoding.encode([.uuid(value), .int64(index)]))
    }

    @Test("chunk rows are told from every other row, in any partition")
    func chunkRowsAreRecognised() {
        #expect(PendingCompactions.isChunkRow(Self.chunkKey(Self.first, 0)))
        #expect(PendingCompactions.isChunkRow(Self.chunkKey(Self.first, -1, partition: 60)))
        let userRow = StorageLayout.dataKey(
            partition: PartitionID(rawValue: 5), namespace: "files", table: "chunks",
            key: KeyEncoding.encode([.uuid(Self.first), .int64(0)]))
        #expect(!PendingCompactions.isChunkRow(userRow))
        #expect(!PendingCompactions.isChunkRow(Array(Self.chunkKey(Self.first, 0).dropLast())))
    }

    @Test("each value has its own span, due once 64 MiB of it was written")
    func valuesAreNotedApart() {
        var pending = PendingCompactions()
        for index in 0..<63 { pending.note(Self.chunkKey(Self.first, Int64(index)), bytes: 1 << 20) }
        pending.note(Self.chunkKey(Self.second, 7), bytes: 0)
        #expect(!pending.hasDue)
        #expect(pending.take(minimumBytes: PendingCompactions.triggerBytes).isEmpty)

        pending.note(Self.chunkKey(Self.first, 63), bytes: 1 << 20)
        #expect(pending.hasDue)
        let due = pending.take(minimumBytes: PendingCompactions.triggerBytes)
        #expect(due.count == 1)
        #expect(due.first?.lowest == Self.chunkKey(Self.first, 0))
        #expect(due.first?.highest == Self.chunkKey(Self.first, 63))
        // The span ends just past the last chunk and does not reach the next value.
        #expect(due.first!.range.upperBound!.lexicographicallyPrecedes(Self.chunkKey(Self.second, -1)))

        // A pass takes what is left, whatever its size, and then nothing is noted.
        let rest = pending.take(minimumBytes: 0)
        #expect(rest.map(\.lowest) == [Self.chunkKey(Self.second, 7)])
        #expect(pending.take(minimumBytes: 0).isEmpty)
    }
}
