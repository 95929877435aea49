import KVCluster
import KVCore
import Testing

/// A few members' ``Membership`` machines over a simulated network in virtual time:
/// messages take 1–5 ms, a set of directed links drops everything, crashed nodes
/// neither send nor receive.
struct MembershipNetwork {
    var nodes: [NodeID: Membership] = [:]
    var now: Int64 = 0
    var blocked: Set<[NodeID]> = []
    /// Direct pings left unanswered, by observer and member.
    var unanswered: [(observer: NodeID, member: NodeID)] = []
    var crashed: Set<NodeID> = []
    var random: SeededRandom
    var inFlight: [(at: Int64, message: MembershipMessage, from: NodeID, to: NodeID)] = []
    var changes: [(at: Int64, observer: NodeID, member: NodeID, status: MemberState.Status)] = []

    init(count: Int, seed: UInt64, settings: MembershipSettings = MembershipSettings()) {
        random = SeededRandom(seed: seed)
        let ids = (1...count).map { NodeID(rawValue: UInt64($0)) }
        for id in ids {
            nodes[id] = Membership(
                node: id, members: ids, incarnation: 1, settings: settings,
                random: SeededRandom(seed: seed &+ id.rawValue))
        }
    }

    mutating func handle(_ actions: [Membership.Action], at node: NodeID) {
        for action in actions {
            switch action {
            case .send(let message, let target):
                guard !crashed.contains(node), !blocked.contains([node, target]) else { continue }
                inFlight.append((now + Int64.random(in: 1...5, using: &random), message, node, target))
            case .statusChanged(let member, let status):
                changes.append((now, node, member, status))
            case .unanswered(let member):
                unanswered.append((node, member))
            }
        }
    }

    /// Runs `milliseconds` of virtual time in 10 ms ticks.
    mutating func run(_ milliseconds: Int64) {
        let end = now + milliseconds
        while now < end {
            now += 10
            for id in nodes.keys.sorted() where !crashed.contains(id) {
                let actions = nodes[id]!.tick(now: now)
                handle(actions, at: id)
            }
            let due = inFlight.filter { $0.at <= now }.sorted {
                ($0.at, $0.from, $0.to) < ($1.at, $1.from, $1.to)
            }
            inFlight.removeAll { $0.at <= now }
            for delivery in due where !crashed.contains(delivery.to) {
                let actions = nodes[delivery.to]!.received(delivery.message, from: delivery.from, now: now)
                handle(actions, at: delivery.to)
            }
        }
    }

    func status(of member: NodeID, at observer: NodeID) -> MemberState.Status? {
        nodes[observer]?.state(of: member)?.status
    }
}

@Suite("SWIM membership")
struct MembershipTests {
    let ids = (1...5).map { NodeID(rawValue: UInt64($0)) }

    @Test("without faults nobody is ever suspected")
    func quietCluster() {
        var network = MembershipNetwork(count: 5, seed: 1)
        network.run(60_000)
        #expect(network.changes.isEmpty, "\(network.changes.prefix(3))")
        for observer in ids { #expect(network.nodes[observer]!.aliveMembers == ids) }
    }

    @Test("a crashed node is suspected, then declared dead by every other node")
    func crashIsDetected() {
        var network = MembershipNetwork(count: 5, seed: 2)
        network.run(3_000)
        network.crashed.insert(ids[2])
        network.run(20_000)
        for observer in ids where observer != ids[2] {
            #expect(network.status(of: ids[2], at: observer) == .dead, "as seen by \(observer)")
            #expect(
                network.changes.contains {
                    $0.observer == observer && $0.member == ids[2] && $0.status == .suspect
                },
                "suspect before dead, as seen by \(observer)")
        }
        // Nobody else was harmed.
        #expect(network.changes.allSatisfy { $0.member == ids[2] })
    }

    @Test("a broken link between two nodes is bridged by indirect probes")
    func lossyLinkIsNotAFailure() {
        var network = MembershipNetwork(count: 5, seed: 3)
        network.blocked = [[ids[0], ids[3]], [ids[3], ids[0]]]
        network.run(60_000)
        #expect(network.changes.isEmpty, "\(network.changes.prefix(3))")
    }

    @Test("a one-way silent link keeps the member alive, and reports each direct ping it leaves unanswered")
    func silentLinkReportsUnansweredPings() {
        var network = MembershipNetwork(count: 5, seed: 3)
        // Node 4's messages to node 1 vanish: its acks to node 1's pings too.
        network.blocked = [[ids[3], ids[0]]]
        network.run(10_000)
        #expect(network.changes.isEmpty, "\(network.changes.prefix(3))")
        let silent = network.unanswered.filter { $0.observer == ids[0] }
        #expect(silent.count >= 2 && silent.allSatisfy { $0.member == ids[3] }, "\(silent)")
        // Without faults no ping goes unanswered.
        var healthy = MembershipNetwork(count: 5, seed: 3)
        healthy.run(10_000)
        #expect(healthy.unanswered.isEmpty)
    }

    @Test("a suspected node that is alive refutes with a higher incarnation")
    func refutation() {
        var network = MembershipNetwork(count: 5, seed: 4)
        network.run(2_000)
        // Node 1 briefly cannot reach node 5 at all, not even indirectly: it suspects it.
        for other in ids where other != ids[4] {
            network.blocked.insert([other, ids[4]])
            network.blocked.insert([ids[4], other])
        }
        network.run(1_500)
        network.blocked = []
        network.run(15_000)
        let suspected = network.changes.contains { $0.member == ids[4] && $0.status == .suspect }
        #expect(suspected, "the partition made node 5 suspect somewhere")
        for observer in ids {
            #expect(network.status(of: ids[4], at: observer) == .alive, "as seen by \(observer)")
        }
        #expect(network.nodes[ids[4]]!.incarnation > 1)
    }

    @Test("a dead node that restarts with a higher incarnation is alive again")
    func restartAfterDeath() {
        var network = MembershipNetwork(count: 3, seed: 5)
        let three = (1...3).map { NodeID(rawValue: UInt64($0)) }
        network.crashed.insert(three[2])
        network.run(20_000)
        #expect(network.status(of: three[2], at: three[0]) == .dead)
        network.crashed.remove(three[2])
        network.nodes[three[2]] = Membership(
            node: three[2], members: three, incarnation: 1_000, random: SeededRandom(seed: 99))
        network.run(10_000)
        #expect(network.status(of: three[2], at: three[0]) == .alive)
        #expect(network.status(of: three[2], at: three[1]) == .alive)
    }

    @Test("a restarted observer that believes a member dead at an old incarnation learns better from it")
    func observerRestartLearnsCurrentIncarnations() {
        // Every node runs at a high incarnation (as nodes do: it grows with each start);
        // a restarted node starts believing the others at incarnation 0. Its suspicion
        // at 0 is no reason for them to refute, so their own messages must carry their
        // current incarnation.
        var network = MembershipNetwork(count: 3, seed: 8)
        let three = (1...3).map { NodeID(rawValue: UInt64($0)) }
        for id in three {
            network.nodes[id] = Membership(
                node: id, members: three, incarnation: 5_000 + id.rawValue,
                random: SeededRandom(seed: id.rawValue))
        }
        network.run(5_000)
        // Node 1 restarts while its links are cut: it suspects, then buries, the others.
        network.nodes[three[0]] = Membership(
            node: three[0], members: three, incarnation: 9_000, random: SeededRandom(seed: 42))
        network.blocked = [[three[1], three[0]], [three[2], three[0]]]
        network.run(10_000)
        #expect(network.status(of: three[1], at: three[0]) == .dead)
        network.blocked = []
        network.run(10_000)
        #expect(network.status(of: three[1], at: three[0]) == .alive)
        #expect(network.status(of: three[2], at: three[0]) == .alive)
        #expect(network.nodes[three[0]]!.state(of: three[1])!.incarnation == 5_002)
    }

    @Test("a member declared dead while cut off learns it once the link heals, and refutes")
    func buriedMemberRefutesAfterTheCut() {
        var network = MembershipNetwork(count: 3, seed: 21)
        let three = (1...3).map { NodeID(rawValue: UInt64($0)) }
        network.run(3_000)
        // Node 3 is cut off from everyone for long enough to be declared dead, and the
        // gossip about its death runs out while it hears nothing.
        network.blocked = [
            [three[0], three[2]], [three[1], three[2]], [three[2], three[0]], [three[2], three[1]],
        ]
        network.run(30_000)
        #expect(network.status(of: three[2], at: three[0]) == .dead)
        network.blocked = []
        network.run(10_000)
        #expect(network.status(of: three[2], at: three[0]) == .alive)
        #expect(network.status(of: three[2], at: three[1]) == .alive)
    }

    @Test("the same seed gives the same history")
    func deterministic() {
        func history(_ seed: UInt64) -> [String] {
            var network = MembershipNetwork(count: 5, seed: seed)
            network.crashed.insert(NodeID(rawValue: 2))
            network.run(15_000)
            return network.changes.map { "\($0.at) \($0.observer) \($0.member) \($0.status)" }
        }
        #expect(history(7) == history(7))
        #expect(!history(7).isEmpty)
    }

    @Test("state precedence follows SWIM: incarnation first, then alive < suspect < dead")
    func precedence() {
        let node = NodeID(rawValue: 9)
        let alive1 = MemberState(node: node, incarnation: 1, status: .alive)
        let suspect1 = MemberState(node: node, incarnation: 1, status: .suspect)
        let dead1 = MemberState(node: node, incarnation: 1, status: .dead)
        let alive2 = MemberState(node: node, incarnation: 2, status: .alive)
        #expect(suspect1.overrides(alive1) && !alive1.overrides(suspect1))
        #expect(dead1.overrides(suspect1) && !suspect1.overrides(dead1))
        #expect(alive2.overrides(suspect1) && alive2.overrides(dead1))
        #expect(!alive1.overrides(alive1))
    }
}
