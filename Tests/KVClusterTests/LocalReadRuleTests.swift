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

    /// What the coordinator does with a write of `key`: `true` when it only applies
    /// ``StorageCommand/coordinate(_:_:)`` to the local replica and answers with its
    /// outcome as it is, the stored object or the failure, sending nothing to any peer.
    static func coordinatorWritesAlone(
        _ coordinator: Coordinator, _ key: ReplicaKey, _ write: ProposedWrite, _ quorum: Quorum,
        object: StoredObject
    ) -> Bool {
        let operation = OperationID.local(1)
        var started = coordinator
        let start = started.write(operation, key: key, write, quorum: quorum)
        guard
            Set(start) == [
                .startTimer(operation, afterMilliseconds: 100),
                .storage(.operation(operation), .coordinate(key, write)),
            ],
            start.count == 2
        else { return false }
        var stored = started
        let answer = stored.storageCompleted(.operation(operation), .object(object))
        guard
            Set(answer) == [.reply(operation, .written(object)), .cancelTimer(operation)], answer.count == 2,
            stored.operationsInFlight == 0
        else { return false }
        var failed = started
        let error = KVError(.storageIO, "the disk is full")
        let refusal = failed.storageCompleted(.operation(operation), .failed(error))
        return Set(refusal) == [.reply(operation, .failed(error)), .cancelTimer(operation)]
            && refusal.count == 2 && failed.operationsInFlight == 0
    }

    /// A layout of one to five nodes with some partitions moving (some of those still
    /// read from their previous owners), and its nodes.
    static func movingPlacement(using random: inout SeededRandom) -> (Placement, [NodeID]) {
        let count = Int.random(in: 1...5, using: &random)
        let nodes = (1...count).map { NodeID(rawValue: UInt64($0)) }
        let layout = Layout.computed(
            members: nodes.map { LayoutMember(node: $0) },
            replicationFactor: Int.random(in: 1...min(3, count), using: &random), partitionCount: 8)
        var placement = Placement(layout: layout)
        for index in 0..<layout.partitionCount where random.chance(0.3) {
            let partition = PartitionID(rawValue: UInt32(index))
            placement.previousOwners[partition] = Array(
                nodes.shuffled(using: &random).prefix(Int.random(in: 0...count, using: &random)))
            if random.chance(0.5) { placement.readsFromPrevious.insert(partition) }
        }
        return (placement, nodes)
    }

    /// A coordinator of `node` that has just taken `placement`.
    static func coordinator(of node: NodeID, under placement: Placement) -> Coordinator {
        var coordinator = Coordinator(
            actor: ActorID(node: node, incarnation: 1),
            layout: Layout.computed(
                members: [LayoutMember(node: node)], replicationFactor: 1, partitionCount: 8),
            settings: CoordinatorSettings(requestTimeoutMilliseconds: 100), firstMessageID: 1)
        let before = coordinator.localReads.revision
        coordinator.placementChanged(placement)
        #expect(coordinator.localReads.revision != before, "a new placement makes a new rule")
        return coordinator
    }

    @Test("the rule holds exactly where the coordinator reads the local replica alone", arguments: 0..<300)
    func matchesTheCoordinator(seed: Int) {
        var random = SeededRandom(seed: UInt64(seed))
        let (placement, nodes) = Self.movingPlacement(using: &random)
        let object = CoordinatorTests.object("v", by: nodes[0])
        var answeredAlone = 0
        for node in nodes + [NodeID(rawValue: 99)] {
            let coordinator = Self.coordinator(of: node, under: placement)
            let rule = coordinator.localReads
            for index in 0..<(placement.layout.partitionCount + 1) {
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

    @Test(
        "the rule writes alone exactly where the coordinator writes the local replica alone",
        arguments: 0..<300)
    func writesMatchTheCoordinator(seed: Int) {
        var random = SeededRandom(seed: UInt64(seed))
        let (placement, nodes) = Self.movingPlacement(using: &random)
        let object = CoordinatorTests.object("v", by: nodes[0])
        var writtenAlone = 0
        for node in nodes + [NodeID(rawValue: 99)] {
            var coordinator = Self.coordinator(of: node, under: placement)
            // Peers down or merely suspected change where the coordinator sends a write,
            // never whether it writes its own replica alone.
            for peer in nodes where peer != node && random.chance(0.3) {
                coordinator.reachabilityChanged(peer, isUp: false, isSuspected: random.chance(0.5))
            }
            let rule = coordinator.localReads
            for index in 0..<(placement.layout.partitionCount + 1) {
                let key = ReplicaKey(partition: PartitionID(rawValue: UInt32(index)), bytes: [1])
                for n in 1...3 {
                    let w = Int.random(in: 0...n, using: &random)
                    let quorum = Quorum(
                        n: n, r: 1, w: w, dw: Int.random(in: 0...w, using: &random),
                        pw: Int.random(in: 0...n, using: &random))
                    let conditions: [WriteCondition] = [.none, .ifAbsent]
                    let write = ProposedWrite(
                        sibling: Sibling(value: RowValue(bytes: [7]), timestampMilliseconds: 5), context: nil,
                        condition: conditions.randomElement(using: &random)!,
                        increment: random.chance(0.2) ? 1 : nil)
                    let alone = rule.writesAlone(key, quorum)
                    #expect(
                        alone
                            == Self.coordinatorWritesAlone(coordinator, key, write, quorum, object: object),
                        "node \(node), partition \(index), \(quorum)")
                    if alone { writtenAlone += 1 }
                }
            }
        }
        // Every layout of one node writes n=1 alone, and others now and then.
        #expect(nodes.count > 1 || writtenAlone > 0)
    }
}
