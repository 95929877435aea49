import KVCore
import PropertyBased
import Testing

@testable import KVCluster

/// The Merkle tree replicas compare, and the hint records fallbacks keep.
@Suite("Anti-entropy trees and hints")
struct AntiEntropyTests {
    static let actor = ActorID(node: NodeID(rawValue: 1), incarnation: 1)

    static func object(_ text: String) -> StoredObject {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: Array(text.utf8)), timestampMilliseconds: 0),
            context: VersionVector(), actor: actor)
        return object
    }

    /// Rows `key i -> hash`, drawn from a seed.
    static func rows(seed: Int, count: Int) -> [[UInt8]: UInt64] {
        var random = SeededRandom(seed: UInt64(seed))
        var rows: [[UInt8]: UInt64] = [:]
        for _ in 0..<count {
            rows[Array("key-\(random.next() % 5_000)".utf8)] = random.next() % 4
        }
        return rows
    }

    static func tree(_ rows: [[UInt8]: UInt64]) -> MerkleTree {
        var tree = MerkleTree()
        for (key, hash) in rows { tree.update(key, from: nil, to: hash) }
        return tree
    }

    @Test("a tree depends only on its rows, not on the order or history of its updates")
    func orderIndependence() async {
        await propertyCheck(count: 200, input: Gen.int(in: 0...1_000_000)) { seed in
            let rows = Self.rows(seed: seed, count: 200)
            var random = SeededRandom(seed: UInt64(seed) &+ 7)
            // The same rows, written in another order, with detours: some rows first get
            // another hash and are then changed back, some are written and deleted.
            var tree = MerkleTree()
            for (key, hash) in rows.shuffled(using: &random) {
                if random.next() % 3 == 0 {
                    tree.update(key, from: nil, to: hash &+ 100)
                    tree.update(key, from: hash &+ 100, to: hash)
                } else {
                    tree.update(key, from: nil, to: hash)
                }
                if random.next() % 5 == 0 {
                    let extra = Array("extra-\(random.next())".utf8)
                    tree.update(extra, from: nil, to: 1)
                    tree.update(extra, from: 1, to: nil)
                }
            }
            #expect(tree == Self.tree(rows))
            #expect(tree.count == rows.count)
        }
    }

    @Test("descending from differing segments to leaves to keys finds exactly the rows that differ")
    func descentFindsTheDifference() async {
        await propertyCheck(count: 200, input: Gen.int(in: 0...1_000_000), Gen.int(in: 0...30)) {
            seed, changes in
            let mine = Self.rows(seed: seed, count: 300)
            var theirs = mine
            var random = SeededRandom(seed: UInt64(seed) &+ 1)
            var expected: Set<[UInt8]> = []
            for _ in 0..<changes {
                switch random.next() % 3 {
                case 0:
                    let key = Array("new-\(random.next())".utf8)
                    theirs[key] = 1
                    expected.insert(key)
                case 1:
                    if let key = theirs.keys.randomElement(using: &random) {
                        theirs[key] = nil
                        if mine[key] != nil { expected.insert(key) } else { expected.remove(key) }
                    }
                default:
                    if let key = theirs.keys.randomElement(using: &random) {
                        theirs[key] = theirs[key]! &+ 1
                        if theirs[key] != mine[key] { expected.insert(key) } else { expected.remove(key) }
                    }
                }
            }
            let myTree = Self.tree(mine)
            let theirTree = Self.tree(theirs)
            let segments = myTree.differingSegments(theirTree.segmentHashes)
            if expected.isEmpty {
                #expect(segments.isEmpty)
                #expect(myTree.root == theirTree.root)
                return
            }
            #expect(myTree.root != theirTree.root)
            let leaves = Set(myTree.differingLeaves(in: segments, theirTree.leafHashes(of: segments)))
            func listing(_ rows: [[UInt8]: UInt64]) -> [KeyHash] {
                rows.filter { leaves.contains(MerkleTree.leaf(of: $0.key)) }.map {
                    KeyHash(key: $0.key, hash: $0.value)
                }
            }
            #expect(Set(MerkleTree.differingKeys(listing(mine), listing(theirs))) == expected)
        }
    }

    @Test("an object's hash ignores value bytes but not dots, tombstones or content types")
    func objectHash() {
        let a = Self.object("a")
        var other = StoredObject()
        other.recordWrite(
            Sibling(value: RowValue(bytes: Array("a".utf8)), timestampMilliseconds: 0),
            context: VersionVector(),
            actor: ActorID(node: NodeID(rawValue: 2), incarnation: 1))
        #expect(MerkleTree.objectHash(a) == MerkleTree.objectHash(a.withoutValueBytes))
        #expect(MerkleTree.objectHash(a) != MerkleTree.objectHash(other))
        var deleted = a
        deleted.recordWrite(.tombstone(at: 1), context: a.context, actor: Self.actor)
        #expect(MerkleTree.objectHash(deleted) != MerkleTree.objectHash(a))
    }

    @Test("hint records round-trip, and a damaged one is refused")
    func hintRecords() throws {
        let target = NodeID(rawValue: 0xABCD)
        let record = HintRecord(
            target: target,
            key: ReplicaKey(partition: PartitionID(rawValue: 300), bytes: [1, 2, 3], generation: 77),
            object: Self.object("hinted"))
        #expect(try HintRecord.decode(record.encoded()) == record)
        var corrupt = record.encoded()
        corrupt[0] = 9
        #expect(throws: KVError.self) { try HintRecord.decode(corrupt) }
        #expect(throws: KVError.self) { try HintRecord.decode(Array(record.encoded().prefix(5))) }
    }
}
