import KVCore
import Testing

@testable import KVCluster

/// ``LocalReadRule`` against the coordinator it stands in for: a read the rule lets a
/// node answer alone must be one the coordinator answers from that node's replica alone,
/// with the replica's object unchanged, and every other read must need the coordinator.
@Suite("Local read rule")
struct LocalReadRuleTests {
    /// What the coordinator does with a read of `key`: `true` when it only loads the
    /// local replica and answers with the loaded object as it is.
    static func coordinatorAnswersAlone(
        _ coordinator: Coordinator, _ key: ReplicaKey, _ quorum: Quorum, object: StoredObject
    ) -> Bool {
        var coordinator = coordinator
        let operation = OperationID.local(1)
        let start = coordinator.read(operation, key: key, quorum: quorum)
        guard
            Set(start) == [
                .startTimer(operation, afterMilliseconds: 100), .storage(.operation(operation), .load(key)),
            ],
            start.count == 2
        else { return false }
        let answer = coordinator.storageCompleted(.operation(operation), .object(object))
        return Set(answer) == [.reply(operation, .read(object)), .cancelTimer(operation)] && answer.count == 2
            && coordinator.operationsInFlight == 0
    }

    @Test("the rule holds exactly where the coordinator reads the local replica alone", arguments: 0..<300)
    func matchesTheCoordinator(seed: Int) {
        var random = SeededRandom(seed: UInt64(seed))
        let count = Int.random(in: 1...5, using: &random)
        let nodes = (1...count).map { NodeID(rawValue: UInt64($0)) }
        let layout = Layout.computed(
            members: nodes.map { LayoutMember(node: $0) },
            replicationFactor: Int.random(in: 1...min(3, count), using: &random), partitionCount: 8)
        var placement = Placement(layout: layout)
        // Some partitions move, and some of those are still read from their previous owners.
        for index in 0..<layout.partitionCount where random.chance(0.3) {
            let partition = PartitionID(rawValue: UInt32(index))
            placement.previousOwners[partition] = Array(
                nodes.shuffled(using: &random).prefix(Int.random(in: 1...count, using: &random)))
            if random.chance(0.5) { placement.readsFromPrevious.insert(partition) }
        }
        let object = CoordinatorTests.object("v", by: nodes[0])
        var answeredAlone = 0
        for node in nodes + [NodeID(rawValue: 99)] {
            var coordinator = Coordinator(
                actor: ActorID(node: node, incarnation: 1),
                layout: Layout.computed(
                    members: [LayoutMember(node: node)], replicationFactor: 1, partitionCount: 8),
                settings: CoordinatorSettings(requestTimeoutMilliseconds: 100), firstMessageID: 1)
            let before = coordinator.localReads.revision
            coordinator.placementChanged(placement)
            let rule = coordinator.localReads
            #expect(rule.revision != before, "a new placement makes a new rule")
            for index in 0..<(layout.partitionCount + 1) {
                let key = ReplicaKey(partition: PartitionID(rawValue: UInt32(index)), bytes: [1])
                for n in 1...3 {
                    for r in 1...n {
                        let quorum = Quorum(
                            n: n, r: r, w: 1, dw: 1, pr: Int.random(in: 0...r, using: &random))
                        let alone = rule.answersAlone(key, quorum)
                        #expect(
                            alone == Self.coordinatorAnswersAlone(coordinator, key, quorum, object: object))
                        if alone { answeredAlone += 1 }
                    }
                }
            }
        }
        // One layout keeps n=1 reads on their replica: the rule is not vacuous.
        #expect(answeredAlone > 0)
    }
}
