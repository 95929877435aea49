import KVCore
import Testing

@testable import KVCluster

/// Hinted handoff, event in, actions out, written from the rules in ``HintDelivery``'s
/// documentation.
@Suite("Hint delivery")
struct HintDeliveryTests {
    static let me = NodeID(rawValue: 1)
    static let target = NodeID(rawValue: 2)
    static let other = NodeID(rawValue: 3)
    static let nodes = (1...4).map { NodeID(rawValue: UInt64($0)) }
    static let generation: UInt64 = 7
    /// Four nodes, N=3: node 4 is no replica of some partitions.
    static let layout = Layout.computed(
        members: nodes.map { LayoutMember(node: $0) }, replicationFactor: 3, partitionCount: 8)

    static func view(
        reachable: Set<NodeID> = [target, other], departed: Set<NodeID> = [], placement: Placement? = nil,
        targets: [NodeID] = [target]
    ) -> HintDeliveryView {
        HintDeliveryView(
            node: me, targetsWithHints: targets, reachable: reachable, departed: departed,
            placement: placement,
            knownGenerations: [generation])
    }

    static func hint(
        _ index: Int, for target: NodeID = target, generation: UInt64 = generation, partition: UInt32 = 0
    ) -> StoredHint {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: [UInt8(index)]), timestampMilliseconds: Int64(index)),
            context: VersionVector(), actor: ActorID(node: me, incarnation: 1))
        let key = ReplicaKey(
            partition: PartitionID(rawValue: partition), bytes: [UInt8(index)], generation: generation)
        // The machine treats storage keys as opaque; any distinct bytes do.
        var storageKey = BinaryWriter()
        storageKey.writeFixed(UInt64(index))
        return StoredHint(
            storageKey: storageKey.bytes,
            record: HintRecord(target: target, key: key, object: object))
    }

    /// The handoffs among `actions`: id, key bytes and recipient.
    static func handoffs(_ actions: [HintDelivery.Action]) -> [(id: UInt64, key: [UInt8], to: NodeID)] {
        actions.compactMap { action in
            guard case .send(.hints(.handoff(let id, let key, _)), let to) = action else { return nil }
            return (id, key.bytes, to)
        }
    }

    static func started(_ hints: [StoredHint]) -> (HintDelivery, [HintDelivery.Action]) {
        var machine = HintDelivery(firstMessageID: 100)
        _ = machine.tick(view())
        let actions = machine.hintsRead(target: target, hints, view: view())
        return (machine, actions)
    }

    @Test("a tick starts one delivery per reachable or departed target, sharing the rate")
    func tickStartsDeliveries() {
        var machine = HintDelivery(
            settings: HintDeliverySettings(ratePerSecond: 2_000, tickMilliseconds: 100), firstMessageID: 1)
        let gone = NodeID(rawValue: 9)
        let down = NodeID(rawValue: 4)
        let view = Self.view(departed: [gone], targets: [Self.target, down, gone])
        #expect(
            machine.tick(view) == [
                .readHints(target: Self.target, limit: 100), .readHints(target: gone, limit: 100),
            ])
        #expect(machine.delivering == [Self.target, gone])
        // A target already being delivered to gets no second delivery.
        #expect(machine.tick(view).isEmpty)
    }

    @Test("hints go one at a time in the order taken, and only acknowledged ones are removed")
    func oneAtATimeInOrder() {
        var (machine, actions) = Self.started([Self.hint(1), Self.hint(2)])
        let first = Self.handoffs(actions)
        #expect(first.map(\.key) == [[1]] && first.map(\.to) == [Self.target])
        #expect(actions.contains(.startTimer(id: first[0].id, afterMilliseconds: 1_000)))
        let next = machine.received(
            .handedOff(id: first[0].id, error: nil), from: Self.target, view: Self.view())
        #expect(next.first == .cancelTimer(id: first[0].id))
        let second = Self.handoffs(next)
        #expect(second.map(\.key) == [[2]])
        let end = machine.received(
            .handedOff(id: second[0].id, error: nil), from: Self.target, view: Self.view())
        #expect(
            end.last
                == .remove(
                    HintDelivery.HintRemoval(
                        target: Self.target, delivered: [Self.hint(1), Self.hint(2)],
                        recipients: [[Self.target], [Self.target]], dropped: [], failed: 0, rerouted: 0)))
        // The delivery lasts until its removal is stored.
        #expect(machine.tick(Self.view()).isEmpty)
        machine.removalStored(target: Self.target)
        #expect(machine.tick(Self.view()) == [.readHints(target: Self.target, limit: 200)])
    }

    @Test("a refusal, a failed send or a timeout stops the delivery; the rest stays for later")
    func firstFailureStops() {
        for failure in 0..<3 {
            var (machine, actions) = Self.started([Self.hint(1), Self.hint(2), Self.hint(3)])
            let first = Self.handoffs(actions)[0]
            let second = Self.handoffs(
                machine.received(.handedOff(id: first.id, error: nil), from: Self.target, view: Self.view()))[
                    0]
            let end: [HintDelivery.Action]
            switch failure {
            case 0:
                end = machine.received(
                    .handedOff(id: second.id, error: KVError(.storageIO, "disk")), from: Self.target,
                    view: Self.view())
            case 1:
                end = machine.sendFailed(
                    .handoff(id: second.id, key: Self.hint(2).record!.key, object: StoredObject()),
                    to: Self.target,
                    view: Self.view())
            default:
                end = machine.timerFired(id: second.id, view: Self.view())
                // The timeout counts against the target's connection.
                #expect(end.first == .unanswered(Self.target))
                // A late answer after the timeout changes nothing.
                #expect(
                    machine.received(
                        .handedOff(id: second.id, error: nil), from: Self.target, view: Self.view()
                    )
                    .isEmpty)
            }
            #expect(
                end.last
                    == .remove(
                        HintDelivery.HintRemoval(
                            target: Self.target, delivered: [Self.hint(1)], recipients: [[Self.target]],
                            dropped: [], failed: 1, rerouted: 0)),
                "failure \(failure): \(end)")
            #expect(Self.handoffs(end).isEmpty)
        }
    }

    @Test("an answer counts only from the node that was asked")
    func answersFromOthersAreIgnored() {
        var (machine, actions) = Self.started([Self.hint(1)])
        let first = Self.handoffs(actions)[0]
        #expect(
            machine.received(.handedOff(id: first.id, error: nil), from: Self.other, view: Self.view())
                .isEmpty)
        #expect(machine.delivering == [Self.target])
    }

    @Test("hints of a cleared or dropped table, and undecodable ones, are removed undelivered")
    func obsoleteHintsAreDropped() {
        let stale = Self.hint(1, generation: 99)
        let broken = StoredHint(storageKey: [1, 2, 3], record: nil)
        var (machine, actions) = Self.started([stale, broken, Self.hint(2)])
        let sent = Self.handoffs(actions)
        #expect(sent.map(\.key) == [[2]])
        let end = machine.received(
            .handedOff(id: sent[0].id, error: nil), from: Self.target, view: Self.view())
        #expect(
            end.last
                == .remove(
                    HintDelivery.HintRemoval(
                        target: Self.target, delivered: [Self.hint(2)], recipients: [[Self.target]],
                        dropped: [stale, broken], failed: 0, rerouted: 0)))
    }

    @Test(
        "a hint of a partition outside the layout is removed undelivered, not looked up",
        arguments: [UInt32(layout.partitionCount), UInt32.max])
    func hintOutsideTheLayoutIsDropped(partition: UInt32) {
        let placed = Self.view(placement: Placement(layout: Self.layout))
        let outside = Self.hint(1, partition: partition)
        var machine = HintDelivery(firstMessageID: 100)
        _ = machine.tick(placed)
        let actions = machine.hintsRead(target: Self.target, [outside, Self.hint(2)], view: placed)
        let sent = Self.handoffs(actions)
        #expect(sent.map(\.key) == [[2]])
        let end = machine.received(.handedOff(id: sent[0].id, error: nil), from: Self.target, view: placed)
        #expect(
            end.last
                == .remove(
                    HintDelivery.HintRemoval(
                        target: Self.target, delivered: [Self.hint(2)], recipients: [[Self.target]],
                        dropped: [outside], failed: 0, rerouted: 0)))
    }

    @Test("a delivery with nothing to send or remove ends at once")
    func emptyDeliveryEnds() {
        let (machine, actions) = Self.started([])
        #expect(actions.isEmpty)
        #expect(machine.delivering.isEmpty)
    }

    @Test(
        "a hint whose target no longer holds the row goes to every current replica, this node's own copy too")
    func reroutedToCurrentReplicas() throws {
        let partition = PartitionID(rawValue: 0)
        let replicas = Self.layout.replicas(of: partition)
        let outsider = try #require(Self.nodes.first { !replicas.contains($0) })
        let me = try #require(replicas.first)
        let placement = Placement(layout: Self.layout)
        let record = HintRecord(
            target: outsider, key: Self.hint(1).record!.key, object: Self.hint(1).record!.object)
        let hint = StoredHint(storageKey: Self.hint(1).storageKey, record: record)
        func view(reachable: Set<NodeID>) -> HintDeliveryView {
            HintDeliveryView(
                node: me, targetsWithHints: [outsider], reachable: reachable, departed: [outsider],
                placement: placement, knownGenerations: [Self.generation])
        }
        let everyone = view(reachable: Set(Self.nodes).subtracting([me, outsider]))
        var machine = HintDelivery(firstMessageID: 1)
        #expect(machine.tick(everyone) == [.readHints(target: outsider, limit: 200)])
        let actions = machine.hintsRead(target: outsider, [hint], view: everyone)
        let reconcile = actions.compactMap { action -> UInt64? in
            if case .reconcile(let id, record.key, record.object) = action { return id }
            return nil
        }
        let sent = Self.handoffs(actions)
        #expect(reconcile.count == 1)
        #expect(Set(sent.map(\.to)) == Set(replicas).subtracting([me]))
        var end = machine.storageCompleted(id: reconcile[0], .object(record.object), view: everyone)
        for handoff in sent {
            end = machine.received(.handedOff(id: handoff.id, error: nil), from: handoff.to, view: everyone)
        }
        #expect(
            end.last
                == .remove(
                    HintDelivery.HintRemoval(
                        target: outsider, delivered: [hint], recipients: [replicas], dropped: [], failed: 0,
                        rerouted: 1)))

        // With a current replica unreachable the hint cannot be handed on: it stays.
        var blocked = HintDelivery(firstMessageID: 1)
        let partial = view(reachable: [])
        _ = blocked.tick(view(reachable: []))
        let local = blocked.hintsRead(target: outsider, [hint], view: partial)
        #expect(Self.handoffs(local).isEmpty)
        guard case .reconcile(let id, _, _)? = local.first else {
            Issue.record("expected the local reconcile, got \(local)")
            return
        }
        #expect(
            blocked.storageCompleted(id: id, .object(record.object), view: partial).last
                == .remove(
                    HintDelivery.HintRemoval(
                        target: outsider, delivered: [], dropped: [], failed: 1, rerouted: 0)))
    }
}
