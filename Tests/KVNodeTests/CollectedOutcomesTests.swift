import KVCluster
import KVCore
import Testing

@testable import KVNode

/// The outcomes of a batch of maintenance commands (a transfer's rows), gathered as the
/// write drain reports them one by one.
@Suite("Collected outcomes")
struct CollectedOutcomesTests {
    static func outcome(_ byte: UInt8) -> StorageOutcome {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: [byte]), timestampMilliseconds: 1), context: VersionVector(),
            actor: ActorID(node: NodeID(rawValue: 1), incarnation: 1))
        return .object(object)
    }

    @Test("all outcomes come back once, in the commands' order, whatever order they arrive in")
    func order() {
        var collected = CollectedOutcomes(count: 3)
        #expect(collected.record(Self.outcome(2), at: 2) == nil)
        #expect(collected.record(Self.outcome(0), at: 0) == nil)
        // A second report for a command is ignored.
        #expect(collected.record(Self.outcome(9), at: 0) == nil)
        let failure = StorageOutcome.failed(KVError(.unavailable, "the node is shutting down"))
        #expect(collected.record(failure, at: 1) == [Self.outcome(0), failure, Self.outcome(2)])
        // Nothing more once complete.
        #expect(collected.record(Self.outcome(1), at: 1) == nil)
    }
}
