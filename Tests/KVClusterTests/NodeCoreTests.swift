import KVCore
import Testing

@testable import KVCluster

/// The composition of the maintenance machines, input in, actions out, written from the
/// routing rules in ``NodeCore``'s documentation. Each machine's own behaviour is tested
/// in its own suite; these check only that every input reaches the machine it belongs
/// to, and nothing else.
@Suite("Node core")
struct NodeCoreTests {
    typealias Release = PartitionReleaseTests
    typealias Exchange = AntiEntropyExchangeTests

    /// A core whose machines start their ids so that the release's first request (after
    /// its listing) and the exchange's carry the same id: routing cannot rely on ids being
    /// apart.
    static func core(exchangesEnabled: Bool = true) -> NodeCore {
        NodeCore(
            coordinator: Coordinator(
                actor: ActorID(node: Release.me, incarnation: 1), layout: Release.after,
                settings: CoordinatorSettings(), firstMessageID: 100),
            membership: Membership(
                node: Release.me, members: Release.nodes, incarnation: 1, settings: MembershipSettings(),
                random: SeededRandom(seed: 1)),
            hintDelivery: HintDelivery(firstMessageID: 100),
            exchanges: AntiEntropyExchange(settings: Exchange.settings, firstMessageID: 100),
            reaper: TombstoneReaper(
                settings: TombstoneReaperSettings(
                    tombstonesPerPass: 4, graceMilliseconds: 1_000, requestTimeoutMilliseconds: 500),
                firstMessageID: 100),
            transfers: PartitionTransfers(firstMessageID: 100),
            release: PartitionRelease(firstMessageID: 99),
            gossip: MetadataGossip(node: Release.me),
            exchangesEnabled: exchangesEnabled)
    }

    /// A copy of the metadata that knows every node of the tests.
    static func metadata() -> ClusterMetadata {
        var metadata = ClusterMetadata(
            member: ClusterMember(node: Release.me, peerAddress: "me", httpAddress: "me"), partitionCount: 16,
            replicationFactor: 3)
        for (index, node) in Release.nodes.enumerated() {
            metadata.announce(ClusterMember(node: node, peerAddress: "p\(index)", httpAddress: "h\(index)"))
        }
        return metadata
    }

    /// Whether every action belongs to the named procedure (and there is one at least).
    static func all(_ actions: [NodeCore.Action], are procedure: NodeCore.Procedure) -> Bool {
        !actions.isEmpty
            && actions.allSatisfy { action in
                switch (action, procedure) {
                case (.hints, .hints), (.antiEntropy, .antiEntropy), (.reaper, .reaper),
                    (.transfers, .transfers), (.release, .release):
                    true
                default: false
                }
            }
    }

    /// The request a release sends its first owner: started, listed, asked.
    static func releaseAsking(_ core: inout NodeCore) -> (id: UInt64, owner: NodeID) {
        let started = core.handle(.tick(.release), view: .release(Release.view()))
        guard case .release(.list(let listing, _, _, _))? = started.first else {
            Issue.record("the release did not start: \(started)")
            return (0, Release.me)
        }
        let asked = core.handle(
            .release(.listed(id: listing, KeyListing(entries: [Release.entry(1, 1)], truncated: false))),
            view: .none)
        for case .release(.send(.antiEntropy(.keyHashesRequest(let id, _, _, _)), let owner)) in asked {
            return (id, owner)
        }
        Issue.record("the release asked nobody: \(asked)")
        return (0, Release.me)
    }

    /// The tree request an exchange sends its peer: ticked, tree read, asked.
    static func exchangeAsking(_ core: inout NodeCore) -> (id: UInt64, peer: NodeID) {
        let ticked = core.handle(.tick(.antiEntropy), view: .antiEntropy(Exchange.view()))
        #expect(ticked == [.antiEntropy(.readTree(partition: Exchange.mine[0]))])
        let asked = core.handle(
            .antiEntropy(.treeRead(Exchange.tree([KeyHash(key: [1], hash: 1)]))), view: .none)
        for case .antiEntropy(.send(.antiEntropy(.treeRequest(let id, _, _)), let peer)) in asked {
            return (id, peer)
        }
        Issue.record("the exchange asked nobody: \(asked)")
        return (0, Exchange.me)
    }

    @Test("an anti-entropy answer goes to the release waiting for its id, else to the exchange")
    func answersGoToTheirAsker() {
        var core = Self.core()
        let release = Self.releaseAsking(&core)
        let exchange = Self.exchangeAsking(&core)
        // The same id, asked by both machines of different peers.
        #expect(release.id == exchange.id)

        let released = core.handle(
            .received(
                .antiEntropy(.keyHashes(id: release.id, entries: [Release.entry(1, 1)], truncated: false)),
                from: release.owner),
            view: .none)
        #expect(Self.all(released, are: .release))

        let exchanged = core.handle(
            .received(
                .antiEntropy(.treeHashes(id: exchange.id, ready: true, hashes: [1])), from: exchange.peer),
            view: .none)
        #expect(Self.all(exchanged, are: .antiEntropy))
    }

    @Test("a failed anti-entropy request reaches both machines, and only its sender acts on it")
    func failedRequestsReachBoth() {
        var core = Self.core()
        let release = Self.releaseAsking(&core)
        let exchange = Self.exchangeAsking(&core)
        let failed = core.handle(
            .sendFailed(
                .antiEntropy(
                    .keyHashesRequest(
                        id: release.id, partition: Release.mine[0], leaves: [0], after: nil)),
                to: release.owner),
            view: .none)
        #expect(Self.all(failed, are: .release))
        #expect(core.release.running.isEmpty)
        // The exchange still waits for its own answer.
        let exchanged = core.handle(
            .received(
                .antiEntropy(.treeHashes(id: exchange.id, ready: true, hashes: [1])), from: exchange.peer),
            view: .none)
        #expect(Self.all(exchanged, are: .antiEntropy))
    }

    @Test("timers reach the machine that started them, whatever the other machines' ids")
    func timersGoToTheirMachine() {
        var core = Self.core()
        let release = Self.releaseAsking(&core)
        #expect(core.handle(.timerFired(NodeCore.Timer(.reaper, id: release.id)), view: .none).isEmpty)
        #expect(!core.release.running.isEmpty)
        let fired = core.handle(.timerFired(NodeCore.Timer(.release, id: release.id)), view: .none)
        #expect(fired.first == .release(.unanswered(release.owner)))
        #expect(core.release.running.isEmpty)
    }

    @Test("without anti-entropy, exchanges neither start nor take answers; releases still get theirs")
    func exchangesOff() {
        var core = Self.core(exchangesEnabled: false)
        #expect(core.handle(.tick(.antiEntropy), view: .antiEntropy(Exchange.view())).isEmpty)
        #expect(
            core.handle(
                .received(
                    .antiEntropy(.treeHashes(id: 100, ready: true, hashes: [1])), from: Exchange.nodes[1]),
                view: .none
            ).isEmpty)
        let release = Self.releaseAsking(&core)
        let released = core.handle(
            .received(
                .antiEntropy(.keyHashes(id: release.id, entries: [], truncated: false)), from: release.owner),
            view: .none)
        #expect(Self.all(released, are: .release))
    }

    @Test("messages for the node's other parts come back to the shell, as do their failed sends")
    func otherPartsMessages() {
        var core = Self.core()
        let peer = Release.nodes[1]
        let key = ReplicaKey(partition: Release.mine[0], bytes: [1], generation: 1)
        let messages: [ReplicaMessage] = [
            .metadata(.merged(id: 100)),
            .scans(
                .scan(
                    id: 100,
                    request: PartitionScan(
                        tablePrefix: [1], partitions: [Release.mine[0]], lowerBound: [], upperBound: nil,
                        limit: 1,
                        reverse: false, keysOnly: false))),
            .antiEntropy(.treeRequest(id: 100, partition: Release.mine[0], segments: [])),
            .antiEntropy(.reconcile(id: 100, key: key, object: Release.object(1))),
            .reaping(.reapQuery(id: 100, key: key, objectHash: 1, layoutVersion: 1)),
            .reaping(.reap(key: key, objectHash: 1)),
            .transfers(.transfersRequest(id: 100)),
        ]
        for message in messages {
            #expect(
                core.handle(.received(message, from: peer), view: .none) == [.deliver(message, from: peer)])
        }
        let answers: [ReplicaMessage] = [
            .metadata(.merged(id: 100)),
            .hints(.handedOff(id: 100, error: nil)),
            .reaping(.reapAnswer(id: 100, agrees: true)),
            .transfers(.transfersReport(id: 100, encoded: [])),
        ]
        for message in answers {
            #expect(
                core.handle(.sendFailed(message, to: peer), view: .none) == [
                    .undeliverable(message, to: peer)
                ])
        }
    }

    @Test("replica requests and hint handoffs go to the coordinator, which stores or loads them")
    func coordinatorMessages() {
        var core = Self.core()
        let peer = Release.nodes[1]
        let key = ReplicaKey(partition: Release.mine[0], bytes: [1], generation: 1)
        #expect(
            core.handle(.received(.quorum(.fetch(id: 7, key: key)), from: peer), view: .none) == [
                .coordinator(.storage(.fetch(from: peer, id: 7), .load(key)))
            ])
        #expect(
            core.handle(
                .received(.hints(.handoff(id: 8, key: key, object: Release.object(1))), from: peer),
                view: .none)
                == [.coordinator(.storage(.handoff(from: peer, id: 8), .merge(key, Release.object(1))))])
        // A client's read becomes the coordinator's actions.
        let started = core.handle(
            .read(.local(1), key: key, quorum: Quorum(n: 2, r: 1, w: 1, dw: 1)), view: .none)
        #expect(started.allSatisfy { if case .coordinator = $0 { true } else { false } })
        #expect(!started.isEmpty)
    }

    @Test("a probe reaches SWIM on SWIM's clock")
    func probesReachMembership() {
        var core = Self.core()
        let peer = Release.nodes[1]
        let known = NodeCore.GossipView(metadata: Self.metadata(), digest: 42)
        let probed = core.handle(
            .received(.membership(.ping(sequence: 5, updates: []), metadataDigest: 42), from: peer),
            view: .membership(nowMilliseconds: 1_000, known))
        #expect(probed.contains(.membership(.send(.ack(sequence: 5, updates: probed.ackUpdates), to: peer))))
        // The probe carried this node's own digest: nothing for gossip.
        #expect(probed.allSatisfy { if case .membership = $0 { true } else { false } })
        // A tick on SWIM's clock probes a member.
        let ticked = core.handle(.tick(.membership), view: .membership(nowMilliseconds: 2_000, known))
        #expect(ticked.contains { if case .membership(.send(.ping, _)) = $0 { true } else { false } })
        // Members no longer probed are not pinged again.
        for member in Release.nodes where member != Release.me {
            _ = core.handle(.memberRemoved(member), view: .none)
        }
        let later = core.handle(.tick(.membership), view: .membership(nowMilliseconds: 60_000, known))
        #expect(!later.contains { if case .membership(.send(.ping, _)) = $0 { true } else { false } })
    }

    @Test(
        "gossip takes its ticks, a probe's other digest, and what the shell stored; a peer's copy is the shell's"
    )
    func gossipIsRouted() {
        var core = Self.core()
        let peer = Release.nodes[1]
        let copy = Self.metadata()
        let known = NodeCore.GossipView(metadata: copy, digest: 7)
        // A round pushes this node's copy to one other member.
        let ticked = core.handle(.tick(.gossip), view: .gossip(known))
        #expect(ticked.count == 1)
        #expect(
            ticked.allSatisfy {
                if case .gossip(.push(let target)) = $0 { target != Release.me } else { false }
            })
        // A probe that carries another digest gets the prober this node's copy.
        let probed = core.handle(
            .received(.membership(.ping(sequence: 1, updates: []), metadataDigest: 8), from: peer),
            view: .membership(nowMilliseconds: 1_000, known))
        #expect(probed.contains(.gossip(.push(to: peer))))
        // A peer's copy goes to the shell, which stores it; what it stored comes back.
        let push = ReplicaMessage.metadata(.push(id: 5, encoded: copy.encoded()))
        #expect(core.handle(.received(push, from: peer), view: .none) == [.deliver(push, from: peer)])
        #expect(
            core.handle(
                .gossip(.adopted(theirs: copy, id: 5, from: peer, refusal: nil, current: copy)), view: .none)
                == [.gossip(.acknowledge(id: 5, to: peer))])
        // A stored change of the members goes to every other member at once.
        var changed = copy
        changed.announce(ClusterMember(node: NodeID(rawValue: 999), peerAddress: "new", httpAddress: "new"))
        let pushed = core.handle(.gossip(.changed(from: copy, to: changed, cause: .adopted)), view: .none)
        let others = changed.members.keys.filter { $0 != Release.me }
        #expect(Set(pushed) == Set(others.map { NodeCore.Action.gossip(.push(to: $0)) }))
        #expect(pushed.count == others.count)
    }

    @Test("each input names the view its machine needs, and only then")
    func inputsNameTheirView() {
        let peer = Release.nodes[1]
        let rows = PartitionScanPage(rows: [], truncated: false)
        let cases: [(NodeCore.Input, NodeCore.Procedure?)] = [
            (.tick(.hints), .hints), (.tick(.release), .release),
            (.startExchange(Release.mine[0], with: peer), .antiEntropy),
            (.received(.hints(.handedOff(id: 1, error: nil)), from: peer), .hints),
            (
                .received(.membership(.ping(sequence: 1, updates: []), metadataDigest: 0), from: peer),
                .membership
            ),
            (.tick(.membership), .membership), (.memberAdded(peer), nil),
            (
                .received(.transfers(.transferRows(id: 1, page: rows, estimatedRows: 0)), from: peer),
                .transfers
            ),
            (.received(.reaping(.reapAnswer(id: 1, agrees: true)), from: peer), nil),
            (.received(.antiEntropy(.treeHashes(id: 1, ready: true, hashes: [])), from: peer), nil),
            (.timerFired(NodeCore.Timer(.hints, id: 1)), .hints),
            (.timerFired(NodeCore.Timer(.transfers, id: 1)), .transfers),
            (.timerFired(NodeCore.Timer(.reaper, id: 1)), nil),
            (.timerFired(NodeCore.Timer(.antiEntropy, id: 1)), nil),
            (.hints(.read(target: peer, [])), .hints), (.hints(.removalStored(target: peer)), nil),
            (.reaper(.candidatesRead([])), .reaper), (.reaper(.reaped(id: 1, .object(StoredObject()))), nil),
            (.transfers(.stored(id: 1, ok: true)), .transfers),
            (.release(.dropped(Release.mine[0], ok: true)), nil),
            (.antiEntropy(.treeRead(nil)), nil), (.operationTimerFired(.local(1)), nil),
            (.reachabilityChanged(peer, isUp: false, isSuspected: false), nil),
            (.tick(.gossip), .gossip),
            (.gossip(.changed(from: Self.metadata(), to: Self.metadata(), cause: .own)), nil),
            (.received(.metadata(.merged(id: 1)), from: peer), nil),
        ]
        for (input, procedure) in cases {
            #expect(input.procedure == procedure, "\(input)")
        }
    }
}

extension [NodeCore.Action] {
    /// The updates SWIM piggybacked on the ack among these actions.
    fileprivate var ackUpdates: [MemberState] {
        for case .membership(.send(.ack(_, let updates), _)) in self { return updates }
        return []
    }
}
