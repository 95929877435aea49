import KVCore
import Testing

@testable import KVCluster

/// Staged layout changes, plans and commits, the phases of a transition, and the
/// coordinator's quorums while partitions move.
@Suite("Layout changes")
struct RebalanceTests {
    static let members = (0..<6).map(clusterMember)
    static let committer = members[0].node

    /// A formed cluster of the first `count` members, knowing all six.
    static func cluster(of count: Int, partitions: Int = 64) -> ClusterMetadata {
        var metadata = ClusterMetadata(member: members[0], partitionCount: partitions, replicationFactor: 3)
        for member in members.prefix(count) { metadata.announce(member) }
        let smallest = members.prefix(count).map(\.node).min()!
        var formed = metadata.formed(
            by: smallest, clusterID: 7, secret: Array(repeating: 1, count: 16), expectedMembers: count)!
        for member in members.dropFirst(count) { formed.announce(member) }
        return formed
    }

    static func commit(_ metadata: ClusterMetadata, _ changes: [LayoutChange]) throws -> ClusterMetadata {
        var staged = metadata
        for change in changes { try staged.stage(change, by: committer) }
        return try staged.committed(plan: try staged.plan().id, by: committer)
    }

    /// Marks every transfer received and every release made.
    static func finish(_ metadata: inout ClusterMetadata) {
        guard let transition = metadata.transition, let layout = metadata.layout else { return }
        for index in 0..<layout.partitionCount {
            let partition = PartitionID(rawValue: UInt32(index))
            for node in transition.destinations(of: partition, in: layout) {
                metadata.markReceived(partition, by: node)
            }
            for node in transition.leavers(of: partition, in: layout) {
                metadata.markReleased(partition, by: node)
            }
        }
    }

    @Test("a plan shows the staged changes; a commit of a stale plan is refused")
    func planAndStaleCommit() throws {
        var metadata = Self.cluster(of: 4)
        #expect(throws: KVError.self) { _ = try metadata.plan() }
        try metadata.stage(.join(Self.members[4].node), by: Self.committer)
        let plan = try metadata.plan()
        #expect(plan.proposed.version == 2)
        #expect(plan.proposed.check().isEmpty)
        // Adding a fifth of five equal nodes moves about a fifth of the replicas.
        let total = 64 * 3
        #expect(plan.movedReplicas == plan.proposed.replicaCounts[Self.members[4].node])
        #expect(Double(plan.movedReplicas) <= 1.1 * Double(total) / 5, "\(plan.movedReplicas) of \(total)")
        // Another staged change makes the shown plan stale.
        try metadata.stage(.setZone(Self.members[1].node, "b"), by: Self.committer)
        do {
            _ = try metadata.committed(plan: plan.id, by: Self.committer)
            Issue.record("a stale plan was committed")
        } catch {
            #expect(error.code == .staleLayoutPlan)
        }
        let fresh = try metadata.plan()
        #expect(fresh.id != plan.id)
        let committed = try metadata.committed(plan: fresh.id, by: Self.committer)
        #expect(committed.layout?.version == 2)
        #expect(committed.staged.changes.isEmpty)
        #expect(committed.transition != nil)
    }

    @Test("staging checks each change against the members and the layout")
    func stagingValidation() throws {
        var metadata = Self.cluster(of: 3)
        let stranger = NodeID(rawValue: 12345)
        let placed = Self.members[0].node
        let unplaced = Self.members[4].node
        #expect(throws: KVError.self) { try metadata.stage(.join(stranger), by: Self.committer) }
        #expect(throws: KVError.self) { try metadata.stage(.join(placed), by: Self.committer) }
        #expect(throws: KVError.self) {
            try metadata.stage(.leave(unplaced, force: false), by: Self.committer)
        }
        #expect(throws: KVError.self) {
            try metadata.stage(.replace(placed, with: placed, force: false), by: Self.committer)
        }
        #expect(throws: KVError.self) { try metadata.stage(.setCapacity(placed, 0), by: Self.committer) }
        #expect(throws: KVError.self) { try metadata.stage(.setZone(placed, ""), by: Self.committer) }
        #expect(metadata.staged.changes.isEmpty, "refused changes are not staged")
        try metadata.stage(.leave(placed, force: false), by: Self.committer)
        #expect(throws: KVError.self) { try metadata.stage(.leave(placed, force: false), by: Self.committer) }
        metadata.clearStaged(by: Self.committer)
        #expect(metadata.staged.changes.isEmpty)
    }

    @Test("a partition moves through moving, releasing and retired, and the transition then ends")
    func transitionPhases() throws {
        var metadata = try Self.commit(Self.cluster(of: 4), [.join(Self.members[4].node)])
        let layout = metadata.layout!
        let transition = try #require(metadata.transition)
        let moving = (0..<64).map { PartitionID(rawValue: UInt32($0)) }.first {
            !transition.destinations(of: $0, in: layout).isEmpty
        }!
        let previous = transition.previous.replicas(of: moving)
        var placement = metadata.placement!
        #expect(placement.readReplicas(of: moving) == previous, "reads go to the owners that have everything")
        #expect(placement.writeSets(of: moving) == [layout.replicas(of: moving), previous])
        for node in transition.destinations(of: moving, in: layout) {
            metadata.markReceived(moving, by: node)
        }
        placement = metadata.placement!
        #expect(
            placement.readReplicas(of: moving) == previous,
            "received but not released: the new owners may lack writes their source lacked")
        for node in transition.leavers(of: moving, in: layout) { metadata.markReleased(moving, by: node) }
        placement = metadata.placement!
        #expect(placement.readReplicas(of: moving) == layout.replicas(of: moving), "retired: new owners read")
        #expect(
            placement.writeSets(of: moving).count == 2, "writes reach the old owners until the change is over"
        )
        Self.finish(&metadata)
        #expect(metadata.transition == nil)
        #expect(metadata.placement!.writeSets(of: moving) == [layout.replicas(of: moving)])
    }

    @Test("a replacing node takes exactly the partitions of the node it replaces")
    func replaceTakesExactlyThePartitions() throws {
        let before = Self.cluster(of: 4)
        let old = Self.members[2].node
        let new = Self.members[4].node
        let after = try Self.commit(before, [.replace(old, with: new, force: false)])
        let layout = after.layout!
        for index in 0..<64 {
            let partition = PartitionID(rawValue: UInt32(index))
            let was = before.layout!.replicas(of: partition)
            let now = layout.replicas(of: partition)
            #expect(Set(now) == Set(was.map { $0 == old ? new : $0 }))
        }
        #expect(after.departing == [old])
        var finished = after
        Self.finish(&finished)
        #expect(finished.departed == [old])
        #expect(!finished.activeMembers.contains(old))
    }

    @Test("a leave moves only the leaving node's replicas; forced leaves are not waited for")
    func leaveMovesOnlyItsShare() throws {
        let before = Self.cluster(of: 5)
        let leaving = Self.members[3].node
        let held = before.layout!.replicaCounts[leaving]!
        var after = try Self.commit(before, [.leave(leaving, force: true)])
        #expect(after.layout!.movedReplicas(from: before.layout!) == held)
        let transition = after.transition!
        for index in 0..<64 {
            let partition = PartitionID(rawValue: UInt32(index))
            #expect(!transition.leavers(of: partition, in: after.layout!).contains(leaving))
            #expect(!transition.sources(of: partition, in: after.layout!).contains(leaving))
        }
        for index in 0..<64 {
            let partition = PartitionID(rawValue: UInt32(index))
            for node in transition.destinations(of: partition, in: after.layout!) {
                after.markReceived(partition, by: node)
            }
        }
        // Nothing waits for the forced node, but the owners that stay merge what they hold
        // into the new owners first: the one source each copied may lack writes the lost
        // node held.
        let waiting = try #require(after.transition)
        for index in 0..<64 {
            let partition = PartitionID(rawValue: UInt32(index))
            let releasers = waiting.releasers(of: partition, in: after.layout!)
            if before.layout!.replicas(of: partition).contains(leaving) {
                #expect(Set(releasers) == Set(before.layout!.replicas(of: partition)).subtracting([leaving]))
            } else {
                #expect(releasers.isEmpty)
            }
            for node in releasers { after.markReleased(partition, by: node) }
        }
        #expect(after.transition == nil)
    }

    @Test("a commit during a change keeps the owners that hold everything and what stays received")
    func commitDuringTransition() throws {
        var first = try Self.commit(Self.cluster(of: 4), [.join(Self.members[4].node)])
        let base = first.transition!.previous
        let layout = first.layout!
        var kept: TransferSlot?
        for index in 0..<64 {
            let partition = PartitionID(rawValue: UInt32(index))
            if let node = first.transition!.destinations(of: partition, in: layout).first {
                first.markReceived(partition, by: node)
                if node == Self.members[4].node, kept == nil {
                    kept = TransferSlot(partition: partition, node: node)
                }
            }
        }
        // One partition retires before the second commit: its owners now are the ones
        // that hold everything (its previous owners may have dropped it).
        let retired = (0..<64).map { PartitionID(rawValue: UInt32($0)) }.first {
            !first.transition!.destinations(of: $0, in: layout).isEmpty
        }!
        for node in first.transition!.destinations(of: retired, in: layout) {
            first.markReceived(retired, by: node)
        }
        for node in first.transition!.leavers(of: retired, in: layout) {
            first.markReleased(retired, by: node)
        }
        let second = try Self.commit(first, [.join(Self.members[5].node)])
        for index in 0..<64 {
            let partition = PartitionID(rawValue: UInt32(index))
            let expected =
                partition == retired ? layout.replicas(of: partition) : base.replicas(of: partition)
            #expect(second.transition?.previous.replicas(of: partition) == expected)
        }
        #expect(second.layout!.version == 3)
        for slot in second.transition!.received {
            #expect(second.layout!.replicas(of: slot.partition).contains(slot.node))
        }
        if let kept, second.layout!.replicas(of: kept.partition).contains(kept.node) {
            #expect(second.transition!.received.contains(kept))
        }
    }

    @Test("the cluster-wide limit admits the same first transfers on every node")
    func pendingOrderIsStable() throws {
        let metadata = try Self.commit(Self.cluster(of: 4), [.join(Self.members[4].node)])
        let pending = metadata.transition!.pendingTransfers(in: metadata.layout!)
        #expect(pending == metadata.transition!.pendingTransfers(in: metadata.layout!))
        #expect(Set(pending).count == pending.count)
        #expect(pending.allSatisfy { $0.node == Self.members[4].node })
        let copy = try ClusterMetadata.decode(metadata.encoded())
        #expect(copy == metadata, "the transition, staged changes and limits survive encoding")
    }

    @Test("while a partition moves, a write needs its quorum among the old and the new replicas")
    func unionQuorum() throws {
        let metadata = try Self.commit(Self.cluster(of: 3, partitions: 8), [.join(Self.members[3].node)])
        let layout = metadata.layout!
        let transition = metadata.transition!
        let partition = (0..<8).map { PartitionID(rawValue: UInt32($0)) }.first {
            !transition.destinations(of: $0, in: layout).isEmpty
        }!
        let old = transition.previous.replicas(of: partition)
        let new = layout.replicas(of: partition)
        let coordinatorNode = old.first { new.contains($0) }!
        var coordinator = Coordinator(
            actor: ActorID(node: coordinatorNode, incarnation: 1), layout: layout,
            settings: CoordinatorSettings(requestTimeoutMilliseconds: 100), firstMessageID: 1)
        coordinator.placementChanged(metadata.placement!)
        let key = ReplicaKey(partition: partition, bytes: [9])
        let operation = OperationID.local(1)
        let quorum = Quorum(n: 3, r: 2, w: 3, dw: 0)
        _ = coordinator.write(
            operation, key: key,
            ProposedWrite(
                sibling: Sibling(value: RowValue(bytes: [1]), timestampMilliseconds: 0), context: nil),
            quorum: quorum)
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: [1]), timestampMilliseconds: 0), context: VersionVector(),
            actor: ActorID(node: coordinatorNode, incarnation: 1))
        let sends = coordinator.storageCompleted(.operation(operation), .object(object))
        var stores: [NodeID: UInt64] = [:]
        for action in sends {
            if case .send(.quorum(.store(let id, _, _)), let to) = action { stores[to] = id }
        }
        #expect(Set(stores.keys) == Set(old + new).subtracting([coordinatorNode]), "the union is written")
        // Every new replica acknowledges: the new set has its quorum, the old one not yet.
        var answers: [Coordinator.Action] = []
        for node in new where node != coordinatorNode {
            answers += coordinator.received(.quorum(.stored(id: stores[node]!, durable: true)), from: node)
        }
        #expect(!answers.contains { if case .reply = $0 { true } else { false } })
        for node in old where node != coordinatorNode && !new.contains(node) {
            answers += coordinator.received(.quorum(.stored(id: stores[node]!, durable: true)), from: node)
        }
        #expect(answers.contains { if case .reply(_, .written) = $0 { true } else { false } })
        // Reads go to the old replicas until the partition settles.
        let reads = coordinator.read(.local(2), key: key, quorum: quorum)
        let asked = reads.compactMap { action -> NodeID? in
            if case .send(.quorum(.fetch), let to) = action { return to }
            return nil
        }
        #expect(Set(asked + [coordinatorNode]) == Set(old))
    }
}
