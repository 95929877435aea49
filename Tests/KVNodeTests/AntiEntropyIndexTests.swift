import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory
import Testing

@testable import KVNode

/// The anti-entropy index as the node keeps it: listings page through a partition, and
/// only differences that stay put count as divergence.
@Suite("Anti-entropy index")
struct AntiEntropyIndexTests {
    static let partition = PartitionID(rawValue: 3)

    static func key(_ index: Int) -> [UInt8] {
        StorageLayout.dataKey(partition: partition, namespace: "ns", table: "t", key: Array("k\(index)".utf8))
    }

    /// The leaves a listing may ask for: some, none, and every leaf both as
    /// ``MerkleTree/everyLeaf`` (which skips the table of wanted leaves) and in another
    /// order (which builds it).
    enum LeafChoice: CaseIterable, Sendable {
        case even, none, everyLeaf, everyLeafReversed

        var leaves: [Int] {
            switch self {
            case .even: Array(stride(from: 0, to: MerkleTree.leafCount, by: 2))
            case .none: []
            case .everyLeaf: MerkleTree.everyLeaf
            case .everyLeafReversed: MerkleTree.everyLeaf.reversed()
            }
        }
    }

    @Test(
        "listings page through every key of the chosen leaves exactly once, in key order",
        arguments: LeafChoice.allCases)
    func pagedListings(choice: LeafChoice) throws {
        let engine = MemoryStorageEngine()
        var batch = WriteBatch()
        for index in 0..<500 {
            batch.put(
                Self.key(index), AntiEntropyIndex.indexValue(hash: UInt64(index), goneSince: nil),
                in: .antiEntropy)
        }
        // A row of another partition is never listed.
        batch.put(
            StorageLayout.dataKey(partition: PartitionID(rawValue: 4), namespace: "ns", table: "t", key: [1]),
            AntiEntropyIndex.indexValue(hash: 1, goneSince: nil), in: .antiEntropy)
        try engine.write(batch)
        let leaves = choice.leaves
        let wanted = Set(leaves)
        let expected = (0..<500).map(Self.key).filter { wanted.contains(MerkleTree.leaf(of: $0)) }.sorted {
            $0.lexicographicallyPrecedes($1)
        }
        var listed: [[UInt8]] = []
        var after: [UInt8]?
        var pages = 0
        while true {
            let page = try AntiEntropyIndex.keyHashes(
                in: Self.partition, leaves: leaves, after: after, engine: engine, limit: 37)
            listed += page.entries.map(\.key)
            pages += 1
            guard page.truncated, let last = page.entries.last?.key else { break }
            after = last
        }
        #expect(listed == expected)
        #expect(pages == max(1, (expected.count + 36) / 37))
        if choice != .none { #expect(pages > 5) }
    }

    @Test("a difference counts only if neither side's hash moved during the settle delay")
    func settledDifferences() {
        let a: [UInt8] = [1]
        let b: [UInt8] = [2]
        let c: [UInt8] = [3]
        let d: [UInt8] = [4]
        let before = (
            ours: [KeyHash(key: a, hash: 1), KeyHash(key: b, hash: 1), KeyHash(key: c, hash: 1)],
            theirs: [KeyHash(key: a, hash: 2), KeyHash(key: b, hash: 2), KeyHash(key: d, hash: 5)]
        )
        let after = (
            // b caught up on our side (a write in flight), c changed on ours, d is as it was.
            ours: [KeyHash(key: a, hash: 1), KeyHash(key: b, hash: 2), KeyHash(key: c, hash: 9)],
            theirs: [KeyHash(key: a, hash: 2), KeyHash(key: b, hash: 2), KeyHash(key: d, hash: 5)]
        )
        let differing = MerkleTree.differingKeys(before.ours, before.theirs)
        #expect(differing == [a, b, c, d])
        #expect(AntiEntropyExchange.settledDifferences(differing, before: before, after: after) == [a, d])
    }
}
