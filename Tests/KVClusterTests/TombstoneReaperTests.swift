import KVCore
import Testing

@testable import KVCluster

/// Tombstone reaping, event in, actions out, written from the rules in
/// ``TombstoneReaper``'s documentation.
@Suite("Tombstone reaper")
struct TombstoneReaperTests {
    static let nodes = (1...4).map { NodeID(rawValue: UInt64($0)) }
    static let me = nodes[0]
    /// Four nodes, N=3: each partition has one member that is no replica of it.
    static let layout = Layout.computed(
        members: nodes.map { LayoutMember(node: $0) }, replicationFactor: 3, partitionCount: 8)
    static let settings = TombstoneReaperSettings(
        tombstonesPerPass: 2, graceMilliseconds: 1_000, requestTimeoutMilliseconds: 500)
    static let others = Array(nodes.dropFirst())

    static var mine: [PartitionID] {
        (0..<8).map { PartitionID(rawValue: UInt32($0)) }.filter { layout.replicas(of: $0).contains(me) }
    }

    static func view(
        reachable: Set<NodeID> = Set(others), layout: Layout? = layout, moving: Set<PartitionID> = [],
        indexComplete: Bool = true, members: [NodeID] = others
    ) -> ReaperView {
        ReaperView(
            node: me, members: members, reachable: reachable, layout: layout, moving: moving,
            indexComplete: indexComplete)
    }

    static func candidate(_ index: UInt8, in partition: PartitionID, holding: RowHolding? = nil)
        -> ReapCandidate
    {
        let hash = 1_000 + UInt64(index)
        return ReapCandidate(
            key: ReplicaKey(partition: partition, bytes: [index], generation: 7), objectHash: hash,
            holding: holding ?? RowHolding(entry: .init(hash: hash, isTombstone: true), holdsHint: false))
    }

    /// The queries among `actions`: id, key byte and member.
    static func queries(_ actions: [TombstoneReaper.Action]) -> [(id: UInt64, key: UInt8, to: NodeID)] {
        actions.compactMap { action in
            guard case .send(.reaping(.reapQuery(let id, let key, _, let version)), let to) = action else {
                return nil
            }
            #expect(version == layout.version)
            return (id, key.bytes[0], to)
        }
    }

    static func reaps(_ actions: [TombstoneReaper.Action]) -> [(key: UInt8, to: NodeID)] {
        actions.compactMap { action in
            guard case .send(.reaping(.reap(let key, _)), let to) = action else { return nil }
            return (key.bytes[0], to)
        }
    }

    static func ownReaps(_ actions: [TombstoneReaper.Action]) -> [(id: UInt64, key: UInt8)] {
        actions.compactMap { action in
            guard case .reap(let id, let key, _) = action else { return nil }
            return (id, key.bytes[0])
        }
    }

    /// A machine whose pass over its first partition proposed `candidates`.
    static func proposing(_ candidates: [UInt8]) -> (TombstoneReaper, PartitionID, [TombstoneReaper.Action]) {
        var machine = TombstoneReaper(settings: settings, firstMessageID: 100)
        let partition = mine[0]
        _ = machine.tick(view())
        let actions = machine.candidatesRead(candidates.map { candidate($0, in: partition) }, view: view())
        return (machine, partition, actions)
    }

    @Test("a tick reads the next partition this node replicates, with the grace of its rank there")
    func tickReadsCandidates() {
        var machine = TombstoneReaper(settings: Self.settings, firstMessageID: 1)
        var seen: [PartitionID] = []
        for pass in 0..<(Self.mine.count + 1) {
            let actions = machine.tick(Self.view())
            guard case .readCandidates(let partition, let limit, let age, let start)? = actions.first else {
                Issue.record("no read: \(actions)")
                return
            }
            #expect(actions.count == 1)
            #expect(limit == 2)
            // Passes rotate through the partition's tombstones.
            #expect(start == 2 * pass)
            let first = Self.layout.replicas(of: partition).first == Self.me
            #expect(age == (first ? 1_000 : 3_000))
            seen.append(partition)
            // No second pass while one is under way.
            #expect(machine.tick(Self.view()).isEmpty)
            _ = machine.candidatesRead([], view: Self.view())
            #expect(!machine.isPassing)
        }
        #expect(Array(seen.prefix(Self.mine.count)) == Self.mine)
        #expect(seen.last == Self.mine[0])
    }

    @Test("no pass before the cluster formed")
    func unformed() {
        var machine = TombstoneReaper(settings: Self.settings, firstMessageID: 1)
        #expect(machine.tick(Self.view(layout: nil)).isEmpty)
    }

    @Test("an unreachable member skips the whole pass")
    func unreachableMemberSkips() {
        var machine = TombstoneReaper(settings: Self.settings, firstMessageID: 1)
        _ = machine.tick(Self.view())
        let view = Self.view(reachable: [Self.nodes[1], Self.nodes[2]])
        #expect(machine.candidatesRead([Self.candidate(1, in: Self.mine[0])], view: view).isEmpty)
        #expect(machine.counters.passesSkipped == 1)
        #expect(!machine.isPassing)
    }

    @Test("every member is asked about every candidate, each with a timer")
    func everyMemberAsked() {
        let (_, _, actions) = Self.proposing([1, 2])
        let asked = Self.queries(actions)
        #expect(asked.count == 6)
        for key: UInt8 in [1, 2] {
            #expect(Set(asked.filter { $0.key == key }.map(\.to)) == Set(Self.others))
        }
        let timers = actions.compactMap { action -> UInt64? in
            guard case .startTimer(let id, 500) = action else { return nil }
            return id
        }
        #expect(Set(timers) == Set(asked.map(\.id)))
        #expect(Self.ownReaps(actions).isEmpty)
    }

    @Test("once every member agrees, the partition's other replicas are told and this node reaps")
    func agreedIsReaped() {
        var (machine, partition, actions) = Self.proposing([1])
        let asked = Self.queries(actions)
        var last: [TombstoneReaper.Action] = []
        for (index, query) in asked.enumerated() {
            last = machine.received(.reapAnswer(id: query.id, agrees: true), from: query.to)
            #expect(last.first == .cancelTimer(id: query.id))
            if index < asked.count - 1 { #expect(Self.ownReaps(last).isEmpty) }
        }
        let replicas = Self.layout.replicas(of: partition).filter { $0 != Self.me }
        // Only replicas hold the row: the member that is no replica is not told.
        #expect(Set(Self.reaps(last).map(\.to)) == Set(replicas))
        let own = Self.ownReaps(last)
        #expect(own.map(\.key) == [1])
        #expect(machine.isPassing)
        _ = machine.storageCompleted(id: own[0].id, .object(StoredObject()))
        #expect(machine.counters.reaped == 1)
        #expect(!machine.isPassing)
    }

    @Test("one refusal keeps the tombstone; the others still go")
    func oneRefusalKeeps() {
        var (machine, _, actions) = Self.proposing([1, 2])
        var reaped: [UInt8] = []
        for query in Self.queries(actions) {
            let agrees = !(query.key == 1 && query.to == Self.nodes[3])
            reaped += Self.ownReaps(
                machine.received(.reapAnswer(id: query.id, agrees: agrees), from: query.to)
            )
            .map(\.key)
        }
        #expect(reaped == [2])
        #expect(machine.counters.refused == 1)
    }

    @Test("a query unanswered in time, or that cannot be sent, is a veto")
    func silenceVetoes() {
        var (machine, _, actions) = Self.proposing([1, 2])
        let asked = Self.queries(actions)
        var reaped: [UInt8] = []
        for query in asked {
            if query.key == 1 && query.to == Self.nodes[1] {
                reaped += Self.ownReaps(machine.timerFired(id: query.id)).map(\.key)
            } else if query.key == 2 && query.to == Self.nodes[2] {
                reaped += Self.ownReaps(
                    machine.sendFailed(
                        .reapQuery(
                            id: query.id, key: Self.candidate(2, in: Self.mine[0]).key, objectHash: 0,
                            layoutVersion: 1),
                        to: query.to)
                ).map(\.key)
            } else {
                reaped += Self.ownReaps(
                    machine.received(.reapAnswer(id: query.id, agrees: true), from: query.to)
                )
                .map(\.key)
            }
        }
        #expect(reaped.isEmpty)
        #expect(machine.counters.refused == 2)
        #expect(machine.counters.timeouts == [Self.nodes[1]: 1])
        #expect(!machine.isPassing)
    }

    @Test("an answer from the wrong member, a repeated one, or one after the timer is ignored")
    func strayAnswersIgnored() {
        var (machine, _, actions) = Self.proposing([1])
        let asked = Self.queries(actions)
        #expect(machine.received(.reapAnswer(id: asked[0].id, agrees: true), from: Self.nodes[3]).isEmpty)
        // The timeout counts against the member's connection.
        #expect(machine.timerFired(id: asked[0].id).first == .unanswered(asked[0].to))
        // The veto stands: a late yes changes nothing.
        #expect(machine.received(.reapAnswer(id: asked[0].id, agrees: true), from: asked[0].to).isEmpty)
        #expect(machine.received(.reapAnswer(id: 999_999, agrees: true), from: asked[1].to).isEmpty)
        var reaped: [UInt8] = []
        for query in asked.dropFirst() {
            reaped += Self.ownReaps(machine.received(.reapAnswer(id: query.id, agrees: true), from: query.to))
                .map(\.key)
        }
        #expect(reaped.isEmpty)
    }

    @Test("a candidate this node itself would refuse is not proposed")
    func ownRefusalNotProposed() {
        var machine = TombstoneReaper(settings: Self.settings, firstMessageID: 1)
        _ = machine.tick(Self.view())
        let partition = Self.mine[0]
        let hinted = Self.candidate(
            1, in: partition,
            holding: RowHolding(entry: .init(hash: 1_001, isTombstone: true), holdsHint: true))
        let rewritten = Self.candidate(
            2, in: partition, holding: RowHolding(entry: .init(hash: 5, isTombstone: false), holdsHint: false)
        )
        let actions = machine.candidatesRead(
            [hinted, rewritten, Self.candidate(3, in: partition)], view: Self.view())
        #expect(Set(Self.queries(actions).map(\.key)) == [3])
        #expect(machine.counters.refused == 2)
    }

    @Test("a cluster of one reaps without asking anyone")
    func clusterOfOne() {
        let single = Layout.computed(
            members: [LayoutMember(node: Self.me)], replicationFactor: 1, partitionCount: 4)
        let view = Self.view(reachable: [], layout: single, members: [])
        var machine = TombstoneReaper(settings: Self.settings, firstMessageID: 1)
        guard case .readCandidates(let partition, _, _, _)? = machine.tick(view).first else {
            Issue.record("no pass")
            return
        }
        let actions = machine.candidatesRead(
            [
                ReapCandidate(
                    key: ReplicaKey(partition: partition, bytes: [1], generation: 7), objectHash: 9,
                    holding: RowHolding(entry: .init(hash: 9, isTombstone: true), holdsHint: false))
            ], view: view)
        #expect(Self.queries(actions).isEmpty)
        #expect(Self.reaps(actions).isEmpty)
        #expect(Self.ownReaps(actions).map(\.key) == [1])
    }

    @Test("a member agrees only to the very tombstone, or to a row it holds nothing of")
    func agreement() {
        let partition = Self.mine[0]
        func agrees(
            _ holding: RowHolding, view: ReaperView = Self.view(), version: UInt64 = Self.layout.version
        )
            -> Bool
        {
            TombstoneReaper.agrees(
                objectHash: 42, layoutVersion: version, partition: partition, holding: holding, view: view)
        }
        let tombstone = RowHolding(entry: .init(hash: 42, isTombstone: true), holdsHint: false)
        let nothing = RowHolding(entry: nil, holdsHint: false)
        #expect(agrees(tombstone))
        #expect(agrees(nothing))
        // Another tombstone, or a value (an old one, or a write after the delete).
        #expect(!agrees(RowHolding(entry: .init(hash: 41, isTombstone: true), holdsHint: false)))
        #expect(!agrees(RowHolding(entry: .init(hash: 42, isTombstone: false), holdsHint: false)))
        // A hint may carry an older value for a replica.
        #expect(!agrees(RowHolding(entry: nil, holdsHint: true)))
        #expect(!agrees(.unreadable))
        // An incomplete index cannot vouch for holding nothing.
        #expect(!agrees(nothing, view: Self.view(indexComplete: false)))
        #expect(!agrees(tombstone, version: Self.layout.version + 1))
        #expect(!agrees(tombstone, view: Self.view(layout: nil)))
        // A moving partition keeps its tombstones until the change is over.
        #expect(!agrees(tombstone, view: Self.view(moving: [partition])))
    }

    @Test("a late reap completion of another id does not end the pass")
    func strayCompletion() {
        var (machine, _, actions) = Self.proposing([1])
        var own: [(id: UInt64, key: UInt8)] = []
        for query in Self.queries(actions) {
            own += Self.ownReaps(machine.received(.reapAnswer(id: query.id, agrees: true), from: query.to))
        }
        #expect(machine.storageCompleted(id: own[0].id + 1_000, .object(StoredObject())).isEmpty)
        #expect(machine.isPassing)
        // A row written again meanwhile is kept: not counted as reaped.
        var kept = StoredObject()
        kept.recordWrite(
            Sibling(value: RowValue(bytes: [1]), timestampMilliseconds: 1), context: VersionVector(),
            actor: ActorID(node: Self.me, incarnation: 1))
        _ = machine.storageCompleted(id: own[0].id, .object(kept))
        #expect(machine.counters.reaped == 0)
        #expect(!machine.isPassing)
    }
}
