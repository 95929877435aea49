import KVCore
import Testing

@testable import KVCluster

/// The coordinator state machine, event in, actions out.
@Suite("Coordinator")
struct CoordinatorTests {
    static let nodes = (1...4).map { NodeID(rawValue: UInt64($0)) }
    static let layout = Layout.computed(
        members: nodes.map { LayoutMember(node: $0) }, replicationFactor: 3, partitionCount: 8)
    static let quorum = Quorum(n: 3, r: 2, w: 2, dw: 2)

    /// A partition, its replicas, and a node that is not one of them.
    static var placement: (key: ReplicaKey, replicas: [NodeID], outsider: NodeID) {
        let partition = PartitionID(rawValue: 0)
        let replicas = layout.replicas(of: partition)
        let outsider = nodes.first { !replicas.contains($0) }!
        return (ReplicaKey(partition: partition, bytes: [1, 2, 3]), replicas, outsider)
    }

    static func coordinator(_ node: NodeID) -> Coordinator {
        Coordinator(
            actor: ActorID(node: node, incarnation: 1), layout: layout,
            settings: CoordinatorSettings(requestTimeoutMilliseconds: 100), firstMessageID: 1)
    }

    static func value(_ text: String, context: VersionVector? = nil) -> ProposedWrite {
        ProposedWrite(
            sibling: Sibling(value: RowValue(bytes: Array(text.utf8)), timestampMilliseconds: 0),
            context: context)
    }

    static func object(_ text: String, by node: NodeID) -> StoredObject {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: Array(text.utf8)), timestampMilliseconds: 0),
            context: VersionVector(),
            actor: ActorID(node: node, incarnation: 1))
        return object
    }

    /// The `store` messages among `actions`, by target.
    static func stores(_ actions: [Coordinator.Action]) -> [(id: UInt64, to: NodeID)] {
        actions.compactMap {
            if case .send(.quorum(.store(let id, _, _)), let to) = $0 { return (id, to) }
            return nil
        }
    }

    @Test("a replica writes locally, replicates, and answers after W acknowledgements")
    func writeQuorum() {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        let operation = OperationID.local(1)
        let start = coordinator.write(operation, key: key, Self.value("a"), quorum: Self.quorum)
        #expect(
            start == [
                .storage(.operation(operation), .coordinate(key, Self.value("a"))),
                .startTimer(operation, afterMilliseconds: 100),
            ])
        let written = Self.object("a", by: replicas[0])
        let replicate = coordinator.storageCompleted(.operation(operation), .object(written))
        let stores = Self.stores(replicate)
        #expect(stores.map(\.to) == Array(replicas.dropFirst()))
        #expect(replicate.count == 2, "nothing but the two stores: one acknowledgement is not W=2")
        let answer = coordinator.received(
            .quorum(.stored(id: stores[1].id, durable: true)), from: stores[1].to)
        #expect(answer == [.cancelTimer(operation), .reply(operation, .written(written))])
        // A late acknowledgement changes nothing.
        #expect(
            coordinator.received(.quorum(.stored(id: stores[0].id, durable: true)), from: stores[0].to)
                .isEmpty)
        #expect(coordinator.operationsInFlight == 0)
        #expect(coordinator.requestsInFlight == 0)
    }

    @Test("a reply counts only from the replica that was asked")
    func repliesMatchTheirReplica() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        _ = coordinator.write(.local(1), key: key, Self.value("a"), quorum: Self.quorum)
        let stores = Self.stores(
            coordinator.storageCompleted(.operation(.local(1)), .object(Self.object("a", by: replicas[0]))))
        // The right id from the wrong node (say, a late reply to another life of this
        // node that reused the id) is ignored, and the request stays open.
        #expect(
            coordinator.received(.quorum(.stored(id: stores[0].id, durable: true)), from: outsider).isEmpty)
        #expect(
            coordinator.received(.quorum(.stored(id: stores[0].id, durable: true)), from: stores[1].to)
                .isEmpty)
        #expect(
            coordinator.received(.quorum(.stored(id: stores[0].id, durable: true)), from: stores[0].to).count
                == 2)
    }

    @Test("replicas believed down are still asked, so they can be seen up again")
    func downReplicasAreStillAsked() {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        coordinator.reachabilityChanged(replicas[2], isUp: false)
        let start = coordinator.read(.local(1), key: key, quorum: Self.quorum)
        let targets: [NodeID] = start.compactMap {
            if case .send(.quorum(.fetch), let to) = $0 { return to }
            return nil
        }
        #expect(targets == [replicas[1], replicas[2]])
    }

    @Test("DW counts only durable acknowledgements")
    func durableQuorum() {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        let operation = OperationID.local(1)
        let quorum = Quorum(n: 3, r: 2, w: 2, dw: 2)
        _ = coordinator.write(operation, key: key, Self.value("a"), quorum: quorum)
        let stores = Self.stores(
            coordinator.storageCompleted(.operation(operation), .object(Self.object("a", by: replicas[0]))))
        #expect(
            coordinator.received(.quorum(.stored(id: stores[0].id, durable: false)), from: stores[0].to)
                .isEmpty)
        let failure = coordinator.received(
            .quorum(.replicaFailed(id: stores[1].id, error: KVError(.storageIO, "disk"))), from: stores[1].to)
        guard case .reply(_, .failed(let error)) = failure.last else {
            Issue.record("expected a failure, got \(failure)")
            return
        }
        #expect(error.code == .quorumUnavailable)
        #expect(
            error.message
                == "2 of 3 replicas acknowledged (1 durably, 2 primaries) and the write needs w=2, dw=2, pw=0; it is stored on 2 and may become visible"
        )
    }

    @Test("with too few replicas and stand-ins reachable, a write fails at once and writes nothing")
    func unavailableBeforeWriting() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        coordinator.reachabilityChanged(replicas[1], isUp: false)
        coordinator.reachabilityChanged(replicas[2], isUp: false)
        coordinator.reachabilityChanged(outsider, isUp: false)
        let actions = coordinator.write(.local(7), key: key, Self.value("a"), quorum: Self.quorum)
        #expect(actions.count == 1)
        guard case .reply(.local(7), .failed(let error)) = actions.first else {
            Issue.record("expected an immediate failure, got \(actions)")
            return
        }
        #expect(error.code == .quorumUnavailable)
        #expect(
            error.message
                == "1 of 3 replicas and 0 stand-ins are reachable and the write needs w=2, dw=2, pw=0; nothing was written"
        )
        // W=1 still works with one replica.
        let single = coordinator.write(
            .local(8), key: key, Self.value("a"), quorum: Quorum(n: 3, r: 1, w: 1, dw: 1))
        #expect(single.first == .storage(.operation(.local(8)), .coordinate(key, Self.value("a"))))
    }

    @Test("replicas only suspected by SWIM, with no stand-in free, are still written to and count towards W")
    func suspectedReplicasAreWritten() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        // A starved coordinator suspects everyone: the connections are up, the acks late.
        coordinator.reachabilityChanged(replicas[1], isUp: false, isSuspected: true)
        coordinator.reachabilityChanged(replicas[2], isUp: false, isSuspected: true)
        coordinator.reachabilityChanged(outsider, isUp: false, isSuspected: true)
        let operation = OperationID.local(9)
        let start = coordinator.write(operation, key: key, Self.value("a"), quorum: Self.quorum)
        #expect(start.first == .storage(.operation(operation), .coordinate(key, Self.value("a"))))
        let sends = coordinator.storageCompleted(
            .operation(operation), .object(Self.object("a", by: replicas[0])))
        let stores = Self.stores(sends)
        #expect(Set(stores.map(\.to)) == [replicas[1], replicas[2]])
        let answer = coordinator.received(
            .quorum(.stored(id: stores[0].id, durable: true)), from: stores[0].to)
        #expect(answer.contains { if case .reply(operation, .written) = $0 { true } else { false } })
        // A suspect that is disconnected (or declared dead) is down: nothing is written.
        coordinator.reachabilityChanged(replicas[1], isUp: false)
        coordinator.reachabilityChanged(replicas[2], isUp: false)
        let refused = coordinator.write(.local(10), key: key, Self.value("b"), quorum: Self.quorum)
        guard case .reply(.local(10), .failed(let error)) = refused.first else {
            Issue.record("expected an immediate failure, got \(refused)")
            return
        }
        #expect(error.code == .quorumUnavailable)
    }

    @Test("a down primary is stood in for by the next node, which keeps a hint; W counts it, PW does not")
    func sloppyQuorum() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        coordinator.reachabilityChanged(replicas[2], isUp: false)
        #expect(coordinator.fallbacks(of: key.partition, excluding: replicas) == [outsider])
        let operation = OperationID.local(1)
        _ = coordinator.write(operation, key: key, Self.value("a"), quorum: Self.quorum)
        let written = Self.object("a", by: replicas[0])
        let sends = coordinator.storageCompleted(.operation(operation), .object(written))
        var hintID: UInt64?
        var storeID: UInt64?
        for action in sends {
            switch action {
            case .send(.quorum(.storeHint(let id, _, _, let target)), let to):
                #expect(to == outsider && target == replicas[2])
                hintID = id
            case .send(.quorum(.store(let id, _, _)), let to):
                #expect(to == replicas[1])
                storeID = id
            default: Issue.record("unexpected \(action)")
            }
        }
        guard let hintID, let storeID else {
            Issue.record("expected a store and a hint, got \(sends)")
            return
        }
        // W=2: the coordinator and the stand-in are enough.
        #expect(
            coordinator.received(.quorum(.stored(id: hintID, durable: true)), from: outsider) == [
                .cancelTimer(operation), .reply(operation, .written(written)),
            ])
        _ = coordinator.received(.quorum(.stored(id: storeID, durable: true)), from: replicas[1])

        // PW=3 needs three primaries; with one down that is impossible up front.
        let strict = coordinator.write(
            .local(2), key: key, Self.value("b"), quorum: Quorum(n: 3, r: 2, w: 3, dw: 2, pw: 3))
        guard case .reply(.local(2), .failed(let error)) = strict.first else {
            Issue.record("expected a refusal, got \(strict)")
            return
        }
        #expect(error.code == .quorumUnavailable)

        // PW=2: the stand-in's ack does not count as a primary's.
        let operation3 = OperationID.local(3)
        _ = coordinator.write(
            operation3, key: key, Self.value("c"), quorum: Quorum(n: 3, r: 2, w: 2, dw: 2, pw: 2))
        let sends3 = coordinator.storageCompleted(.operation(operation3), .object(written))
        let hint3 = sends3.compactMap { action -> UInt64? in
            if case .send(.quorum(.storeHint(let id, _, _, _)), _) = action { return id }
            return nil
        }
        let store3 = Self.stores(sends3)
        #expect(coordinator.received(.quorum(.stored(id: hint3[0], durable: true)), from: outsider).isEmpty)
        #expect(
            coordinator.received(.quorum(.stored(id: store3[0].id, durable: true)), from: replicas[1]).count
                == 2)
        #expect(coordinator.requestsInFlight == 0)
    }

    @Test("a down primary nobody can stand in for gets its hint kept by the coordinator, outside W")
    func coordinatorKeepsHintsWithoutStandIns() {
        // Three nodes, N=3: every node is a primary, so there is no stand-in.
        let members = Array(Self.nodes.prefix(3))
        let layout = Layout.computed(
            members: members.map { LayoutMember(node: $0) }, replicationFactor: 3, partitionCount: 8)
        let key = ReplicaKey(partition: PartitionID(rawValue: 0), bytes: [1])
        let replicas = layout.replicas(of: key.partition)
        var coordinator = Coordinator(
            actor: ActorID(node: replicas[0], incarnation: 1), layout: layout,
            settings: CoordinatorSettings(requestTimeoutMilliseconds: 100), firstMessageID: 1)
        coordinator.reachabilityChanged(replicas[2], isUp: false)
        let operation = OperationID.local(1)
        _ = coordinator.write(operation, key: key, Self.value("a"), quorum: Self.quorum)
        let written = Self.object("a", by: replicas[0])
        let actions = coordinator.storageCompleted(.operation(operation), .object(written))
        #expect(actions.first == .storage(.hint, .storeHint(target: replicas[2], key: key, object: written)))
        // The down primary is still sent the write (a send that gets through shows it up).
        let stores = Self.stores(actions)
        #expect(stores.map(\.to) == [replicas[1], replicas[2]])
        // Its failed send adds no second hint: the round keeps one already.
        #expect(
            coordinator.sendFailed(
                .quorum(.store(id: stores[1].id, key: key, object: written)), to: replicas[2]
            )
            .isEmpty)
        // The hint is no ack: W=2 needs the other primary.
        #expect(
            coordinator.received(.quorum(.stored(id: stores[0].id, durable: true)), from: replicas[1]) == [
                .cancelTimer(operation), .reply(operation, .written(written)),
            ])
        #expect(coordinator.storageCompleted(.hint, .object(written)).isEmpty)
        #expect(coordinator.requestsInFlight == 0)
    }

    @Test("a store that cannot be sent becomes a hint the coordinator keeps, even after the write answered")
    func failedSendsBecomeHints() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        let operation = OperationID.local(1)
        _ = coordinator.write(operation, key: key, Self.value("a"), quorum: Self.quorum)
        let written = Self.object("a", by: replicas[0])
        let stores = Self.stores(coordinator.storageCompleted(.operation(operation), .object(written)))
        #expect(stores.map(\.to) == [replicas[1], replicas[2]])
        // replicas[2] is not yet known to be down; its connection is refused.
        let failed = coordinator.sendFailed(
            .quorum(.store(id: stores[1].id, key: key, object: written)), to: replicas[2])
        #expect(failed == [.storage(.hint, .storeHint(target: replicas[2], key: key, object: written))])
        _ = coordinator.received(.quorum(.stored(id: stores[0].id, durable: true)), from: replicas[1])
        // A send that fails after the round ended still leaves a hint: the message
        // carries the key and the object.
        let late = coordinator.sendFailed(
            .quorum(.store(id: 999, key: key, object: written)), to: replicas[1])
        #expect(late == [.storage(.hint, .storeHint(target: replicas[1], key: key, object: written))])
        // A stand-in that cannot be reached either: the coordinator keeps the hint for
        // the primary itself.
        let standIn = coordinator.sendFailed(
            .quorum(.storeHint(id: 1000, key: key, object: written, target: replicas[2])), to: outsider)
        #expect(standIn == [.storage(.hint, .storeHint(target: replicas[2], key: key, object: written))])
        // A replica that answered with an error refused the write: no hint.
        #expect(
            coordinator.received(
                .quorum(.replicaFailed(id: 1001, error: KVError(.tableChanged, "changed"))), from: replicas[1]
            ).isEmpty)
    }

    @Test("a hinted handoff is merged as a store and answered")
    func handoffIsMerged() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[2])
        let object = Self.object("a", by: replicas[0])
        let actions = coordinator.received(.hints(.handoff(id: 9, key: key, object: object)), from: outsider)
        #expect(actions == [.storage(.handoff(from: outsider, id: 9), .merge(key, object))])
        #expect(
            coordinator.storageCompleted(.handoff(from: outsider, id: 9), .object(object)) == [
                .send(.hints(.handedOff(id: 9, error: nil)), to: outsider)
            ])
        let hinted = coordinator.received(
            .quorum(.storeHint(id: 10, key: key, object: object, target: replicas[1])), from: replicas[0])
        #expect(
            hinted == [
                .storage(
                    .store(from: replicas[0], id: 10),
                    .storeHint(target: replicas[1], key: key, object: object))
            ])
    }

    /// The first partition past the layout's last, and the largest.
    static let partitionsOutsideTheLayout = [UInt32(layout.partitionCount), UInt32.max]

    @Test(
        "a peer's storage request for a partition outside the layout is refused, not stored",
        arguments: partitionsOutsideTheLayout)
    func peerKeyOutsideTheLayoutIsRefused(partition: UInt32) {
        let (_, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        let key = ReplicaKey(partition: PartitionID(rawValue: partition), bytes: [1, 2, 3])
        let object = Self.object("a", by: outsider)
        let refused = { (actions: [Coordinator.Action]) -> Bool in
            actions.allSatisfy {
                switch $0 {
                case .send(.quorum(.replicaFailed(_, let error)), outsider),
                    .send(.hints(.handedOff(_, let error?)), outsider):
                    return error.code == .invalidRequest
                default: return false
                }
            } && actions.count == 1
        }
        #expect(
            refused(coordinator.received(.quorum(.store(id: 1, key: key, object: object)), from: outsider)))
        #expect(refused(coordinator.received(.quorum(.fetch(id: 2, key: key)), from: outsider)))
        #expect(
            refused(
                coordinator.received(
                    .quorum(.storeHint(id: 3, key: key, object: object, target: outsider)), from: outsider)))
        #expect(
            refused(coordinator.received(.hints(.handoff(id: 4, key: key, object: object)), from: outsider)))
        #expect(coordinator.received(.quorum(.repair(key: key, object: object)), from: outsider).isEmpty)
    }

    @Test("an increment answers the counter merged from every replica that acknowledged it")
    func incrementAnswerMergesAcknowledgingReplicas() throws {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        let operation = OperationID.local(1)
        let increment = ProposedWrite(sibling: .tombstone(at: 1), context: nil, increment: -2)
        _ = coordinator.write(operation, key: key, increment, quorum: Self.quorum)
        // This replica never saw the +5 another coordinator had acknowledged.
        let own = try #require(
            try ReplicaRules.increment(
                StoredObject(), by: -2, actor: coordinator.actor, timestampMilliseconds: 1))
        let stores = Self.stores(coordinator.storageCompleted(.operation(operation), .object(own)))
        // Quorum met: instead of answering, it asks the replica that acknowledged for its
        // state (it holds the write, merged with whatever it had).
        let confirm = coordinator.received(
            .quorum(.stored(id: stores[0].id, durable: true)), from: replicas[1])
        guard case .send(.quorum(.fetch(let fetchID, key)), let to)? = confirm.first, confirm.count == 1
        else {
            Issue.record("expected one confirming fetch, got \(confirm)")
            return
        }
        #expect(to == replicas[1])
        // A late ack of the third replica does not answer early.
        #expect(
            coordinator.received(.quorum(.stored(id: stores[1].id, durable: true)), from: replicas[2]).isEmpty
        )
        let earlier = try #require(
            try ReplicaRules.increment(
                StoredObject(), by: 5, actor: ActorID(node: replicas[2], incarnation: 1),
                timestampMilliseconds: 0))
        let theirs = own.merging(earlier)
        let answer = coordinator.received(.quorum(.fetched(id: fetchID, object: theirs)), from: replicas[1])
        guard case .reply(operation, .written(let merged))? = answer.last else {
            Issue.record("expected the answer, got \(answer)")
            return
        }
        #expect(try CounterState.merged(merged.liveValues)?.value == 3)
        #expect(coordinator.requestsInFlight == 0)

        // A confirming replica that cannot answer leaves the write standing, as does
        // the timeout.
        let second = OperationID.local(2)
        _ = coordinator.write(second, key: key, increment, quorum: Self.quorum)
        let stores2 = Self.stores(coordinator.storageCompleted(.operation(second), .object(own)))
        let confirm2 = coordinator.received(
            .quorum(.stored(id: stores2[0].id, durable: true)), from: replicas[1])
        guard case .send(.quorum(.fetch(let fetch2, _)), _)? = confirm2.first else {
            Issue.record("expected a confirming fetch, got \(confirm2)")
            return
        }
        let failed = coordinator.sendFailed(.quorum(.fetch(id: fetch2, key: key)), to: replicas[1])
        #expect(failed.last == .reply(second, .written(own)))
        let third = OperationID.local(3)
        _ = coordinator.write(third, key: key, increment, quorum: Self.quorum)
        let stores3 = Self.stores(coordinator.storageCompleted(.operation(third), .object(own)))
        _ = coordinator.received(.quorum(.stored(id: stores3[0].id, durable: true)), from: replicas[1])
        #expect(coordinator.timerFired(third) == [.reply(third, .written(own))])
    }

    @Test("a write that times out is indeterminate")
    func indeterminateWrite() {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        _ = coordinator.write(.local(1), key: key, Self.value("a"), quorum: Self.quorum)
        _ = coordinator.storageCompleted(.operation(.local(1)), .object(Self.object("a", by: replicas[0])))
        let actions = coordinator.timerFired(.local(1))
        guard case .reply(.local(1), .failed(let error)) = actions.first, actions.count == 1 else {
            Issue.record("expected one failure, got \(actions)")
            return
        }
        #expect(error.code == .writeIndeterminate)
        #expect(coordinator.operationsInFlight == 0)
        #expect(coordinator.requestsInFlight == 0)
    }

    @Test("a node that is not a replica forwards writes to one, and relays the answer")
    func forwarding() {
        let (key, replicas, outsider) = Self.placement
        var entry = Self.coordinator(outsider)
        entry.reachabilityChanged(replicas[0], isUp: false)
        let forwarded = entry.write(.local(3), key: key, Self.value("a"), quorum: Self.quorum)
        guard case .send(.quorum(.coordinateWrite(let id, _, _, _)), let target) = forwarded.first else {
            Issue.record("expected a forward, got \(forwarded)")
            return
        }
        #expect(target == replicas[1], "the first replica believed up")
        #expect(forwarded.last == .startTimer(.local(3), afterMilliseconds: 1_100))

        var replica = Self.coordinator(replicas[1])
        let message = ReplicaMessage.quorum(
            .coordinateWrite(
                id: id, key: key, write: Self.value("a"), quorum: Self.quorum))
        let start = replica.received(message, from: outsider)
        #expect(
            start.first
                == .storage(.operation(.forwarded(from: outsider, id: id)), .coordinate(key, Self.value("a")))
        )
        #expect(replica.received(message, from: outsider).isEmpty, "a duplicate is not coordinated twice")
        let written = Self.object("a", by: replicas[1])
        let stores = Self.stores(
            replica.storageCompleted(.operation(.forwarded(from: outsider, id: id)), .object(written)))
        let done = replica.received(.quorum(.stored(id: stores[0].id, durable: true)), from: stores[0].to)
        #expect(done.last == .send(.quorum(.coordinated(id: id, outcome: .written(written))), to: outsider))

        let relayed = entry.received(
            .quorum(.coordinated(id: id, outcome: .written(written))), from: replicas[1])
        #expect(relayed == [.cancelTimer(.local(3)), .reply(.local(3), .written(written))])
    }

    @Test(
        "a conditional write goes to the first replica up, which coordinates it even when it is the key's second"
    )
    func conditionalWritesHaveOneCoordinator() {
        let (key, replicas, _) = Self.placement
        var conditional = Self.value("b")
        conditional.condition = .ifMatch("tag")
        // The key's third replica sends it to the first.
        var third = Self.coordinator(replicas[2])
        let forwarded = third.write(.local(1), key: key, conditional, quorum: Self.quorum)
        guard case .send(.quorum(.coordinateWrite(let id, _, let write, _)), let target) = forwarded.first
        else {
            Issue.record("expected a forward, got \(forwarded)")
            return
        }
        #expect(target == replicas[0] && write.condition == .ifMatch("tag"))
        // A write without a condition is coordinated where it arrives, as before.
        let local = third.write(.local(2), key: key, Self.value("c"), quorum: Self.quorum)
        #expect(local.first == .storage(.operation(.local(2)), .coordinate(key, Self.value("c"))))
        // When the first cannot be reached, the third checks the condition itself.
        let fallback = third.sendFailed(
            .quorum(.coordinateWrite(id: id, key: key, write: conditional, quorum: Self.quorum)),
            to: replicas[0])
        #expect(fallback.first == .cancelTimer(.local(1)))
        #expect(fallback.dropFirst().first == .storage(.operation(.local(1)), .coordinate(key, conditional)))
        // With the first down, the second coordinates the conditional writes itself.
        var second = Self.coordinator(replicas[1])
        second.reachabilityChanged(replicas[0], isUp: false)
        let own = second.write(.local(3), key: key, conditional, quorum: Self.quorum)
        #expect(own.first == .storage(.operation(.local(3)), .coordinate(key, conditional)))
        // A forwarded conditional write is coordinated where it arrives, even by a
        // replica that believes another is first: views differ, and a second forward
        // could bounce between them.
        var arrival = Self.coordinator(replicas[1])
        let arrived = arrival.received(
            .quorum(.coordinateWrite(id: id, key: key, write: conditional, quorum: Self.quorum)),
            from: replicas[2])
        #expect(
            arrived.first
                == .storage(.operation(.forwarded(from: replicas[2], id: id)), .coordinate(key, conditional)))
    }

    @Test("a read answers after R replies with their merge, then repairs stale replicas")
    func readAndRepair() {
        let (key, replicas, outsider) = Self.placement
        var coordinator = Self.coordinator(outsider)
        let start = coordinator.read(.local(1), key: key, quorum: Self.quorum)
        let fetches: [(UInt64, NodeID)] = start.compactMap {
            if case .send(.quorum(.fetch(let id, _)), let to) = $0 { return (id, to) }
            return nil
        }
        #expect(fetches.map(\.1) == replicas, "a non-replica coordinates reads itself")
        let old = Self.object("old", by: replicas[0])
        var new = old
        new.recordWrite(
            Sibling(value: RowValue(bytes: Array("new".utf8)), timestampMilliseconds: 0),
            context: old.context,
            actor: ActorID(node: replicas[1], incarnation: 1))
        #expect(
            coordinator.received(.quorum(.fetched(id: fetches[0].0, object: old)), from: replicas[0]).isEmpty)
        let answer = coordinator.received(.quorum(.fetched(id: fetches[1].0, object: new)), from: replicas[1])
        #expect(answer == [.reply(.local(1), .read(new))])
        // The third replica holds nothing: once it answers, both stale replicas are repaired.
        let repairs = coordinator.received(
            .quorum(.fetched(id: fetches[2].0, object: StoredObject())), from: replicas[2])
        #expect(
            repairs == [
                .cancelTimer(.local(1)),
                .send(.quorum(.repair(key: key, object: new)), to: replicas[0]),
                .send(.quorum(.repair(key: key, object: new)), to: replicas[2]),
            ])
        #expect(coordinator.operationsInFlight == 0)
        #expect(coordinator.requestsInFlight == 0)
    }

    @Test("a read fails with quorum.unavailable saying how many answered")
    func readUnavailable() {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        let start = coordinator.read(.local(1), key: key, quorum: Self.quorum)
        let targets: [(ReplicaMessage, NodeID)] = start.compactMap {
            if case .send(let message, let to) = $0 { return (message, to) }
            return nil
        }
        #expect(coordinator.sendFailed(targets[0].0, to: targets[0].1).isEmpty)
        let failure = coordinator.sendFailed(targets[1].0, to: targets[1].1)
        guard case .reply(.local(1), .failed(let error)) = failure.first else {
            Issue.record("expected a failure, got \(failure)")
            return
        }
        #expect(error.code == .quorumUnavailable)
        #expect(error.message == "0 of 3 replicas answered and the read needs 2")
    }

    @Test("a corrupt replica is outvoted; a read that fails because of it says so, not quorum.unavailable")
    func corruptReplicasAreReported() {
        let (key, replicas, outsider) = Self.placement
        let corrupt = KVError(.corruptObject, "a stored object has an unknown format")
        var coordinator = Self.coordinator(outsider)
        let start = coordinator.read(.local(1), key: key, quorum: Self.quorum)
        let fetches: [UInt64] = start.compactMap {
            if case .send(.quorum(.fetch(let id, _)), _) = $0 { return id }
            return nil
        }
        let good = Self.object("good", by: replicas[1])
        // One corrupt replica of three: R=2 still answers from the other two.
        #expect(
            coordinator.received(.quorum(.replicaFailed(id: fetches[0], error: corrupt)), from: replicas[0])
                .isEmpty)
        #expect(
            coordinator.received(.quorum(.fetched(id: fetches[1], object: good)), from: replicas[1]).isEmpty)
        let answer = coordinator.received(.quorum(.fetched(id: fetches[2], object: good)), from: replicas[2])
        #expect(answer.contains(.reply(.local(1), .read(good))))

        // Two replicas fail, one of them reporting a corrupt object: the read fails with
        // that code, and the message still says how many answered.
        let second = coordinator.read(.local(2), key: key, quorum: Self.quorum)
        let targets: [(ReplicaMessage, NodeID)] = second.compactMap {
            if case .send(let message, let to) = $0 { return (message, to) }
            return nil
        }
        guard case .quorum(.fetch(let id, _)) = targets[1].0 else {
            Issue.record("expected fetches, got \(second)")
            return
        }
        #expect(coordinator.sendFailed(targets[0].0, to: targets[0].1).isEmpty)
        let failure = coordinator.received(
            .quorum(.replicaFailed(id: id, error: corrupt)), from: targets[1].1)
        guard case .reply(.local(2), .failed(let error)) = failure.first else {
            Issue.record("expected a failure, got \(failure)")
            return
        }
        #expect(error.code == .corruptObject)
        #expect(
            error.message
                == "0 of 3 replicas answered and the read needs 2; a replica reported: a stored object has an unknown format"
        )
    }

    @Test("bad quorums are rejected before anything is sent")
    func invalidQuorum() {
        let (key, replicas, _) = Self.placement
        var coordinator = Self.coordinator(replicas[0])
        for quorum in [Quorum(n: 4, r: 2, w: 2, dw: 2), Quorum(n: 3, r: 4, w: 2, dw: 2)] {
            let actions = coordinator.read(.local(1), key: key, quorum: quorum)
            guard case .reply(_, .failed(let error)) = actions.first, actions.count == 1 else {
                Issue.record("expected a rejection, got \(actions)")
                continue
            }
            #expect(error.code == .invalidQuorum)
        }
    }
}
