import KVCore
import Testing

@testable import KVCluster

/// Anti-entropy exchanges, event in, actions out, written from the rules in
/// ``AntiEntropyExchange``'s documentation.
@Suite("Anti-entropy exchange")
struct AntiEntropyExchangeTests {
    static let nodes = (1...4).map { NodeID(rawValue: UInt64($0)) }
    static let me = nodes[0]
    static let layout = Layout.computed(
        members: nodes.map { LayoutMember(node: $0) }, replicationFactor: 3, partitionCount: 8)
    static let settings = AntiEntropySettings(
        repairsPerExchange: 8, pagesPerExchange: 3, settleDelayMilliseconds: 250,
        requestTimeoutMilliseconds: 500)

    static var mine: [PartitionID] {
        (0..<8).map { PartitionID(rawValue: UInt32($0)) }.filter { layout.replicas(of: $0).contains(me) }
    }

    static func view(reachable: Set<NodeID> = Set(nodes.dropFirst())) -> AntiEntropyView {
        AntiEntropyView(node: me, layout: layout, reachable: reachable)
    }

    static func tree(_ rows: [KeyHash]) -> MerkleTree {
        var tree = MerkleTree()
        for row in rows { tree.update(row.key, from: nil, to: row.hash) }
        return tree
    }

    static func object(_ write: Int, deleted: Bool = false) -> StoredObject {
        var object = StoredObject()
        object.recordWrite(
            deleted
                ? Sibling.tombstone(at: Int64(write))
                : Sibling(value: RowValue(bytes: [UInt8(write)]), timestampMilliseconds: Int64(write)),
            context: VersionVector(), actor: ActorID(node: me, incarnation: 1))
        return object
    }

    /// The one message sent among `actions`, its recipient, and whether a timer guards it.
    static func sent(_ actions: [AntiEntropyExchange.Action]) -> (AntiEntropyMessage, NodeID)? {
        let messages = actions.compactMap { action -> (AntiEntropyMessage, NodeID)? in
            guard case .send(.antiEntropy(let message), let to) = action else { return nil }
            return (message, to)
        }
        #expect(messages.count <= 1)
        return messages.first
    }

    /// An exchange of the first partition with its peer, through the tree descent,
    /// against a peer holding `theirs`, this node holding `ours`. Returns the machine,
    /// the peer, and the actions that answered the leaf hashes (the listings).
    static func descended(ours: [KeyHash], theirs: [KeyHash]) -> (
        AntiEntropyExchange, NodeID, [AntiEntropyExchange.Action]
    ) {
        var machine = AntiEntropyExchange(settings: settings, firstMessageID: 10)
        let partition = mine[0]
        guard case .readTree(partition)? = machine.tick(view()).first,
            case (.treeRequest(let first, partition, []), let peer)? = sent(machine.treeRead(tree(ours)))
        else {
            Issue.record("no tree request")
            return (machine, me, [])
        }
        let theirTree = tree(theirs)
        guard
            case (.treeRequest(let second, partition, let segments), peer)? = sent(
                machine.received(
                    .treeHashes(id: first, ready: true, hashes: theirTree.segmentHashes), from: peer))
        else {
            Issue.record("no leaf request")
            return (machine, peer, [])
        }
        let actions = machine.received(
            .treeHashes(id: second, ready: true, hashes: theirTree.leafHashes(of: segments)), from: peer)
        return (machine, peer, actions)
    }

    /// Answers both listings of a page among `actions` with `ours` and `theirs`.
    static func answerListings(
        _ machine: inout AntiEntropyExchange, _ actions: [AntiEntropyExchange.Action], peer: NodeID,
        ours: KeyListing, theirs: KeyListing
    ) -> [AntiEntropyExchange.Action] {
        guard case (.keyHashesRequest(let theirID, _, _, _), peer)? = sent(actions),
            let ownID = actions.compactMap({ action -> UInt64? in
                guard case .list(let id, _, _, _) = action else { return nil }
                return id
            }).first
        else {
            Issue.record("no listings in \(actions)")
            return []
        }
        let first = machine.received(
            .keyHashes(id: theirID, entries: theirs.entries, truncated: theirs.truncated), from: peer)
        return first + machine.listed(id: ownID, ours)
    }

    static func settleTimer(_ actions: [AntiEntropyExchange.Action]) -> UInt64? {
        actions.compactMap { action -> UInt64? in
            guard case .startTimer(let id, 250) = action else { return nil }
            return id
        }.first
    }

    static let a = KeyHash(key: [1], hash: 11)
    static let b = KeyHash(key: [2], hash: 22)
    static let c = KeyHash(key: [3], hash: 33)

    @Test("ticks go through this node's partitions, moving to the next peer once per pass")
    func tickRotates() {
        var machine = AntiEntropyExchange(settings: Self.settings, firstMessageID: 1)
        var visited: [PartitionID] = []
        var peers: [[NodeID]] = [[], []]
        for pass in 0..<2 {
            for _ in Self.mine {
                guard case .readTree(let partition)? = machine.tick(Self.view()).first else {
                    Issue.record("no exchange")
                    return
                }
                // One exchange at a time.
                #expect(machine.tick(Self.view()).isEmpty)
                guard case (.treeRequest(let id, _, _), let peer)? = Self.sent(machine.treeRead(MerkleTree()))
                else {
                    return
                }
                peers[pass].append(peer)
                visited.append(partition)
                _ = machine.received(
                    .treeHashes(id: id, ready: true, hashes: MerkleTree().segmentHashes), from: peer)
                #expect(!machine.isExchanging)
            }
        }
        #expect(visited == Self.mine + Self.mine)
        // Each partition is compared with another of its peers on the next pass.
        for index in Self.mine.indices { #expect(peers[0][index] != peers[1][index]) }
        #expect(machine.counters.rounds == 1)
        #expect(machine.counters.exchanges == Int64(2 * Self.mine.count))
    }

    @Test("no exchange with an unreachable peer, nor when this node's tree is not built")
    func nothingToCompare() {
        var machine = AntiEntropyExchange(settings: Self.settings, firstMessageID: 1)
        #expect(machine.tick(Self.view(reachable: [])).isEmpty)
        #expect(!machine.isExchanging)
        #expect(!machine.tick(Self.view()).isEmpty)
        #expect(machine.treeRead(nil).isEmpty)
        #expect(!machine.isExchanging)
        #expect(machine.counters.exchanges == 0)
    }

    @Test("equal trees end the exchange in sync; a peer still building its tree too")
    func equalTrees() {
        var machine = AntiEntropyExchange(settings: Self.settings, firstMessageID: 1)
        _ = machine.tick(Self.view())
        let rows = [Self.a, Self.b]
        guard case (.treeRequest(let id, _, _), let peer)? = Self.sent(machine.treeRead(Self.tree(rows)))
        else {
            return
        }
        let actions = machine.received(
            .treeHashes(id: id, ready: true, hashes: Self.tree(rows).segmentHashes), from: peer)
        #expect(actions == [.cancelTimer(id: id)])
        #expect(!machine.isExchanging)
        #expect(machine.counters.exchangesInSync == 1)
        _ = machine.tick(Self.view())
        guard case (.treeRequest(let next, _, _), let other)? = Self.sent(machine.treeRead(Self.tree(rows)))
        else {
            return
        }
        _ = machine.received(.treeHashes(id: next, ready: false, hashes: []), from: other)
        #expect(!machine.isExchanging)
        #expect(machine.counters.exchangesInSync == 2)
    }

    @Test("a settled difference is merged into the peer, and the peer's merge back here")
    func settledDifferenceRepaired() {
        let ours = [Self.a, Self.b]
        let theirs = [Self.a, KeyHash(key: Self.b.key, hash: 99)]
        var (machine, peer, listings) = Self.descended(ours: ours, theirs: theirs)
        #expect(machine.counters.divergentSegments > 0)
        let full = (
            ours: KeyListing(entries: ours, truncated: false),
            theirs: KeyListing(entries: theirs, truncated: false)
        )
        let first = Self.answerListings(&machine, listings, peer: peer, ours: full.ours, theirs: full.theirs)
        guard let settle = Self.settleTimer(first) else {
            Issue.record("no settle delay: \(first)")
            return
        }
        // The same difference after the delay: real divergence.
        let relisted = machine.timerFired(id: settle)
        let loads = Self.answerListings(&machine, relisted, peer: peer, ours: full.ours, theirs: full.theirs)
        guard case .load(let loadID, Self.mine[0], Self.b.key)? = loads.last else {
            Issue.record("no load: \(loads)")
            return
        }
        let key = ReplicaKey(partition: Self.mine[0], bytes: Self.b.key, generation: 3)
        let held = Self.object(1)
        guard
            case (.reconcile(let request, key, held), peer)? = Self.sent(
                machine.loaded(id: loadID, key, .object(held)))
        else {
            Issue.record("no reconcile sent")
            return
        }
        let merged = held.merging(Self.object(2))
        let back = machine.received(.reconciled(id: request, outcome: .object(merged)), from: peer)
        guard case .reconcile(let local, key, merged)? = back.last else {
            Issue.record("no local merge: \(back)")
            return
        }
        #expect(back.first == .cancelTimer(id: request))
        _ = machine.storageCompleted(id: local, .object(merged))
        #expect(machine.counters.keysRepaired == 1)
        #expect(!machine.isExchanging)
        #expect(machine.counters.divergentThisRound == 1)
    }

    @Test("a difference that moved during the settle delay is a write in flight, left alone")
    func inFlightLeftAlone() {
        let ours = [Self.a, Self.b]
        let theirs = [Self.a]
        var (machine, peer, listings) = Self.descended(ours: ours, theirs: theirs)
        let first = Self.answerListings(
            &machine, listings, peer: peer, ours: KeyListing(entries: ours, truncated: false),
            theirs: KeyListing(entries: theirs, truncated: false))
        guard let settle = Self.settleTimer(first) else { return }
        // Its write reached the peer meanwhile.
        let second = Self.answerListings(
            &machine, machine.timerFired(id: settle), peer: peer,
            ours: KeyListing(entries: ours, truncated: false),
            theirs: KeyListing(entries: ours, truncated: false))
        // Only the peer listing's timer is cancelled: nothing is loaded or sent.
        #expect(second.allSatisfy { if case .cancelTimer = $0 { true } else { false } })
        #expect(machine.counters.keysInFlight == 1)
        #expect(machine.counters.keysRepaired == 0)
        #expect(!machine.isExchanging)
    }

    @Test("a tombstone is not copied onto a peer that holds nothing of the row, nor back here")
    func tombstonesNotSpread() {
        let ours = [Self.a, Self.c]
        let theirs = [Self.a]
        var (machine, peer, listings) = Self.descended(ours: ours, theirs: theirs)
        let listing = (
            ours: KeyListing(entries: ours, truncated: false),
            theirs: KeyListing(entries: theirs, truncated: false)
        )
        let first = Self.answerListings(
            &machine, listings, peer: peer, ours: listing.ours, theirs: listing.theirs)
        guard let settle = Self.settleTimer(first) else { return }
        let loads = Self.answerListings(
            &machine, machine.timerFired(id: settle), peer: peer, ours: listing.ours, theirs: listing.theirs)
        guard case .load(let id, _, _)? = loads.last else { return }
        let key = ReplicaKey(partition: Self.mine[0], bytes: Self.c.key, generation: 3)
        #expect(Self.sent(machine.loaded(id: id, key, .object(Self.object(5, deleted: true)))) == nil)
        #expect(!machine.isExchanging)

        // The other way: this node holds nothing, the peer a tombstone.
        var (other, otherPeer, otherListings) = Self.descended(ours: theirs, theirs: ours)
        let reversed = (ours: listing.theirs, theirs: listing.ours)
        let again = Self.answerListings(
            &other, otherListings, peer: otherPeer, ours: reversed.ours, theirs: reversed.theirs)
        guard let otherSettle = Self.settleTimer(again) else { return }
        let otherLoads = Self.answerListings(
            &other, other.timerFired(id: otherSettle), peer: otherPeer, ours: reversed.ours,
            theirs: reversed.theirs)
        guard case .load(let otherID, _, _)? = otherLoads.last,
            case (.reconcile(let request, _, _), _)? = Self.sent(
                other.loaded(id: otherID, key, .object(StoredObject())))
        else {
            Issue.record("no reconcile")
            return
        }
        let back = other.received(
            .reconciled(id: request, outcome: .object(Self.object(5, deleted: true))), from: otherPeer)
        #expect(back == [.cancelTimer(id: request)])
        #expect(!other.isExchanging)
    }

    @Test("a listing that stopped at its limit bounds the page; the next page starts after it")
    func paging() {
        let ours = [Self.a, Self.b, Self.c]
        let theirs: [KeyHash] = []
        var (machine, peer, listings) = Self.descended(ours: ours, theirs: theirs)
        var pages: [[UInt8]?] = []
        var actions = listings
        for page in 0..<3 {
            guard case (.keyHashesRequest(_, _, _, let after), peer)? = Self.sent(actions) else {
                Issue.record("page \(page) not listed: \(actions)")
                return
            }
            pages.append(after)
            // Ours stops after one key; theirs is empty, so nothing differs once settled
            // (a new write reached the peer each time).
            let one = KeyListing(entries: [ours[page]], truncated: page < 2)
            let first = Self.answerListings(
                &machine, actions, peer: peer, ours: one, theirs: KeyListing(entries: [], truncated: false))
            guard let settle = Self.settleTimer(first) else { return }
            actions = Self.answerListings(
                &machine, machine.timerFired(id: settle), peer: peer, ours: one,
                theirs: KeyListing(entries: [ours[page]], truncated: false))
        }
        #expect(pages == [nil, Self.a.key, Self.b.key])
        // The third page hit the page limit: the exchange ended.
        #expect(!machine.isExchanging)
    }

    @Test("a request unanswered in time, or that cannot be sent, ends the exchange; strays are ignored")
    func failures() {
        var machine = AntiEntropyExchange(settings: Self.settings, firstMessageID: 1)
        _ = machine.tick(Self.view())
        guard
            case (.treeRequest(let id, let partition, _), let peer)? = Self.sent(
                machine.treeRead(Self.tree([Self.a])))
        else { return }
        let stranger = Self.nodes.first { $0 != peer && $0 != Self.me }!
        #expect(machine.received(.treeHashes(id: id, ready: true, hashes: []), from: stranger).isEmpty)
        #expect(machine.received(.treeHashes(id: id + 77, ready: true, hashes: []), from: peer).isEmpty)
        #expect(machine.timerFired(id: id + 77).isEmpty)
        #expect(machine.isExchanging)
        // The timeout counts against the peer's connection.
        #expect(machine.timerFired(id: id) == [.unanswered(peer)])
        #expect(!machine.isExchanging)
        #expect(machine.counters.timeouts == [peer: 1])
        // The late answer of the ended exchange changes nothing.
        #expect(machine.received(.treeHashes(id: id, ready: true, hashes: []), from: peer).isEmpty)

        _ = machine.tick(Self.view())
        guard
            case (.treeRequest(let next, _, _), let other)? = Self.sent(machine.treeRead(Self.tree([Self.a])))
        else {
            return
        }
        #expect(
            machine.sendFailed(.treeRequest(id: next, partition: partition, segments: []), to: other) == [
                .cancelTimer(id: next)
            ])
        #expect(!machine.isExchanging)
    }

    @Test("paired listings are cut at the lower end of a listing that stopped at its limit")
    func pairedListings() {
        let ours = KeyListing(entries: [Self.a, Self.b, Self.c], truncated: false)
        let theirs = KeyListing(entries: [Self.a, Self.b], truncated: true)
        let paired = KeyListing.paired(ours, theirs)
        #expect(paired.ours == [Self.a, Self.b])
        #expect(paired.theirs == [Self.a, Self.b])
        #expect(paired.bound == Self.b.key)
        let whole = KeyListing.paired(ours, KeyListing(entries: [Self.c], truncated: false))
        #expect(whole.bound == nil)
        #expect(whole.ours.count == 3)
    }
}
