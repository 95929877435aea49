import KVCluster
import KVCore
import Testing

@Suite("Merging node scan pages")
struct ScanMergeTests {
    static let actor = ActorID(node: NodeID(rawValue: 1), incarnation: 1)

    static func object(_ text: String) -> StoredObject {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: Array(text.utf8)), timestampMilliseconds: 0),
            context: VersionVector(),
            actor: actor)
        return object
    }

    static func page(_ keys: [UInt8], truncated: Bool = false) -> PartitionScanPage {
        PartitionScanPage(rows: keys.map { ([$0], object("v\($0)")) }, truncated: truncated)
    }

    static func keys(_ merged: MergedScanPage) -> [UInt8] { merged.rows.map { $0.key[0] } }

    @Test("a truncated node page ends the merged page at its last key")
    func truncatedPageCutsOff() {
        let merged = MergedScanPage.merging(
            [Self.page([1, 3, 5, 7]), Self.page([2, 4], truncated: true)], limit: 100, reverse: false,
            nowMilliseconds: 0,
            maximumValueBytes: 1 << 20)
        #expect(Self.keys(merged) == [1, 2, 3, 4])
        #expect(merged.resumeAfter == [4])
        let complete = MergedScanPage.merging(
            [Self.page([1, 3]), Self.page([2, 4])], limit: 100, reverse: false, nowMilliseconds: 0,
            maximumValueBytes: 1 << 20)
        #expect(Self.keys(complete) == [1, 2, 3, 4] && complete.resumeAfter == nil)
    }

    @Test("the row limit and the value budget end a page where the next one resumes")
    func limitAndBudget() {
        let limited = MergedScanPage.merging(
            [Self.page([5, 1, 9]), Self.page([3, 7])], limit: 3, reverse: false, nowMilliseconds: 0,
            maximumValueBytes: 1 << 20)
        #expect(Self.keys(limited) == [1, 3, 5] && limited.resumeAfter == [5])
        // Each value takes 2 bytes: the page stops once 4 bytes are gathered.
        let budgeted = MergedScanPage.merging(
            [Self.page([1, 2, 3, 4])], limit: 100, reverse: false, nowMilliseconds: 0, maximumValueBytes: 4)
        #expect(Self.keys(budgeted) == [1, 2] && budgeted.resumeAfter == [2])
        let reversed = MergedScanPage.merging(
            [Self.page([9, 5, 1]), Self.page([7, 3])], limit: 2, reverse: true, nowMilliseconds: 0,
            maximumValueBytes: 1 << 20)
        #expect(Self.keys(reversed) == [9, 7] && reversed.resumeAfter == [7])
    }

    @Test("replicas of one key merge: a tombstone on one hides the older value on another")
    func replicasMerge() {
        let old = Self.object("old")
        var deleted = old
        deleted.recordWrite(.tombstone(at: 1), context: old.context, actor: Self.actor)
        let merged = MergedScanPage.merging(
            [
                PartitionScanPage(rows: [([1], old), ([2], Self.object("kept"))], truncated: false),
                PartitionScanPage(rows: [([1], deleted)], truncated: false),
            ], limit: 100, reverse: false, nowMilliseconds: 0, maximumValueBytes: 1 << 20)
        #expect(Self.keys(merged) == [2])
        #expect(merged.resumeAfter == nil)
        // A deleted row is still examined: a page that stops after it resumes past it.
        let stopped = MergedScanPage.merging(
            [
                PartitionScanPage(
                    rows: [([1], deleted), ([2], Self.object("a")), ([3], Self.object("b"))], truncated: false
                )
            ],
            limit: 1, reverse: false, nowMilliseconds: 0, maximumValueBytes: 1 << 20)
        #expect(Self.keys(stopped) == [2] && stopped.resumeAfter == [2])
    }
}
