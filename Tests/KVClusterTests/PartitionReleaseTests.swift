import KVCore
import Testing

@testable import KVCluster

/// The end of a previous owner's copy, event in, actions out, written from the rules in
/// ``PartitionRelease``'s documentation.
@Suite("Partition release")
struct PartitionReleaseTests {
    static let nodes = (1...4).map { NodeID(rawValue: UInt64($0)) }
    /// Three nodes, N=2, then node 4 joins: some previous owners leave partitions.
    static let before = Layout.computed(
        members: nodes.prefix(3).map { LayoutMember(node: $0) }, replicationFactor: 2, partitionCount: 16)
    static let after: Layout = {
        var layout = Layout.computed(
            members: nodes.map { LayoutMember(node: $0) }, replicationFactor: 2, partitionCount: 16,
            previous: before)
        layout.version = before.version + 1
        return layout
    }()
    static let unsettled = LayoutTransition(previous: before)
    /// The node under test: one that leaves at least two partitions.
    static let me = nodes.prefix(3).first { node in
        partitions.filter { unsettled.releasers(of: $0, in: after).contains(node) }.count >= 2
    }!
    static let partitions = (0..<16).map { PartitionID(rawValue: UInt32($0)) }
    /// The partitions it releases, in order.
    static let mine = partitions.filter { unsettled.releasers(of: $0, in: after).contains(me) }
    /// The new owners of the first, each of which it pushes to.
    static let owners = after.replicas(of: mine[0])

    /// The transition with `settled` received by their new owners.
    static func transition(settled: [PartitionID]) -> LayoutTransition {
        var transition = unsettled
        for partition in settled {
            for node in transition.destinations(of: partition, in: after) {
                transition.received.insert(TransferSlot(partition: partition, node: node))
            }
        }
        return transition
    }

    static func view(
        settled: [PartitionID] = [mine[0]], transition: LayoutTransition? = nil, changeOver: Bool = false,
        reachable: Set<NodeID>? = nil, indexComplete: Bool = true, now: Int64 = 0
    ) -> ReleaseView {
        ReleaseView(
            node: me, layout: after,
            transition: changeOver ? nil : transition ?? Self.transition(settled: settled),
            reachable: reachable ?? Set(nodes.filter { $0 != me }), indexComplete: indexComplete,
            nowMilliseconds: now)
    }

    static func entry(_ key: UInt8, _ hash: UInt64) -> KeyHash { KeyHash(key: [key], hash: hash) }

    static func object(_ byte: UInt8) -> StoredObject {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: [byte]), timestampMilliseconds: 1), context: VersionVector(),
            actor: ActorID(node: nodes[0], incarnation: 1))
        return object
    }

    static func row(_ key: UInt8) -> PartitionRelease.LoadedRow {
        .row(ReplicaKey(partition: mine[0], bytes: [key], generation: 1), object(key))
    }

    /// The id of the only listing among `actions`.
    static func listing(_ actions: [PartitionRelease.Action]) -> (id: UInt64, after: [UInt8]?)? {
        for case .list(let id, _, let after, _) in actions { return (id, after) }
        return nil
    }

    static func request(_ actions: [PartitionRelease.Action]) -> (id: UInt64, to: NodeID)? {
        for case .send(let message, let to) in actions {
            switch message {
            case .antiEntropy(.keyHashesRequest(let id, _, _, _)), .antiEntropy(.reconcile(let id, _, _)):
                return (id, to)
            default: continue
            }
        }
        return nil
    }

    static func load(_ actions: [PartitionRelease.Action]) -> (id: UInt64, key: [UInt8])? {
        for case .load(let id, _, let key) in actions { return (id, key) }
        return nil
    }

    /// The cool-down timer after written releases, if `actions` start it (100 ms).
    static func coolDown(_ actions: [PartitionRelease.Action]) -> UInt64? {
        guard actions.count == 1, case .startTimer(let id, 100) = actions[0] else { return nil }
        return id
    }

    /// A machine that started the release of `mine[0]`, with its first listing's id.
    static func started(indexComplete: Bool = true) -> (PartitionRelease, UInt64) {
        var machine = PartitionRelease(firstMessageID: 100)
        let actions = machine.tick(view(indexComplete: indexComplete))
        return (machine, listing(actions)!.id)
    }

    @Test("only a settled partition this node releases starts, once, by listing its copy from the start")
    func tickStartsSettledReleases() {
        #expect(Self.mine.count >= 2)
        var machine = PartitionRelease(firstMessageID: 100)
        #expect(machine.tick(Self.view(settled: [])).isEmpty)
        let actions = machine.tick(Self.view())
        #expect(actions == [.list(id: 100, partition: Self.mine[0], after: nil, withHashes: true)])
        #expect(machine.running == [Self.mine[0]: .release(layoutVersion: Self.after.version)])
        #expect(machine.tick(Self.view()).isEmpty)
        // A partition it already released does not start again.
        var released = Self.transition(settled: [Self.mine[1]])
        released.released.insert(TransferSlot(partition: Self.mine[1], node: Self.me))
        var other = PartitionRelease(firstMessageID: 1)
        #expect(other.tick(Self.view(transition: released)).isEmpty)
    }

    @Test("at most the configured partitions are pushed at once")
    func concurrencyLimit() {
        var machine = PartitionRelease(settings: ReleaseSettings(concurrentPushes: 1), firstMessageID: 1)
        #expect(machine.tick(Self.view(settled: Self.mine)).count == 1)
        #expect(machine.tick(Self.view(settled: Self.mine)).isEmpty)
    }

    @Test("a push starts only when every owner is reachable, and says why once per reason")
    func ownersMustBeReachable() {
        var machine = PartitionRelease(firstMessageID: 1)
        let absent = Self.owners[1]
        let view = Self.view(reachable: Set(Self.nodes.filter { $0 != Self.me && $0 != absent }))
        #expect(
            machine.tick(view) == [
                .waits(
                    partition: Self.mine[0], purpose: .release(layoutVersion: Self.after.version),
                    reason: "owner \(absent) is not reachable")
            ])
        #expect(machine.tick(view).isEmpty)
        #expect(machine.running.isEmpty)
    }

    @Test("only rows whose hashes differ from the owner's are loaded and merged into it, then the next owner")
    func pushesDifferingRows() {
        var (machine, first) = Self.started()
        let listed = machine.listed(
            id: first,
            KeyListing(entries: [Self.entry(1, 1), Self.entry(2, 2), Self.entry(3, 3)], truncated: false))
        let ask = Self.request(listed)!
        #expect(ask.to == Self.owners[0])
        #expect(listed.contains(.startTimer(id: ask.id, afterMilliseconds: 1_000)))
        // The owner holds key 1 as this node does, key 2 otherwise, and not key 3.
        var actions = machine.received(
            .keyHashes(id: ask.id, entries: [Self.entry(1, 1), Self.entry(2, 9)], truncated: false),
            from: Self.owners[0])
        #expect(actions.first == .cancelTimer(id: ask.id))
        var pushed: [[UInt8]] = []
        while let load = Self.load(actions) {
            let merge = machine.loaded(id: load.id, Self.row(load.key[0]))
            let request = Self.request(merge)!
            #expect(request.to == Self.owners[0])
            #expect(
                merge.first
                    == .send(
                        .antiEntropy(
                            .reconcile(
                                id: request.id,
                                key: ReplicaKey(partition: Self.mine[0], bytes: load.key, generation: 1),
                                object: Self.object(load.key[0]))), to: Self.owners[0]))
            pushed.append(load.key)
            actions = machine.received(
                .reconciled(id: request.id, outcome: .object(Self.object(load.key[0]))), from: Self.owners[0])
        }
        #expect(pushed == [[2], [3]])
        // The second owner: its own listing from the start.
        #expect(Self.listing(actions)?.after == nil)
        #expect(machine.counters.rowsPushed == 2)
    }

    @Test(
        "a push with nothing to list asks no owner, and the release is recorded once every owner holds it all"
    )
    func emptyCopyIsReleasedAtOnce() {
        var (machine, first) = Self.started()
        let second = machine.listed(id: first, KeyListing(entries: [], truncated: false))
        #expect(Self.request(second) == nil)
        let record = machine.listed(id: Self.listing(second)!.id, KeyListing(entries: [], truncated: false))
        let released = [LayoutPartition(Self.mine[0], layoutVersion: Self.after.version)]
        #expect(record == [.recordReleases(released)])
        #expect(machine.tick(Self.view()).isEmpty)
        #expect(Self.coolDown(machine.recorded(released, ok: true)) != nil)
        #expect(machine.counters.partitionsReleased == 1)
        #expect(machine.running.isEmpty)
        // A failed record is tried again by a later tick.
        var again = Self.started().0
        _ = again.listed(id: 100, KeyListing(entries: [], truncated: false))
        _ = again.listed(id: 101, KeyListing(entries: [], truncated: false))
        #expect(Self.coolDown(again.recorded(released, ok: false)) != nil)
        #expect(again.counters.partitionsReleased == 0)
        #expect(Self.listing(again.tick(Self.view())) != nil)
    }

    @Test("pages are cut at the lower end of the two listings, and the next page starts after it")
    func pagesAtTheLowerEnd() {
        var (machine, first) = Self.started()
        let listed = machine.listed(
            id: first, KeyListing(entries: [Self.entry(1, 1), Self.entry(5, 5)], truncated: true))
        let ask = Self.request(listed)!
        // The owner's page ends at key 3: key 5 waits for the next page.
        let next = machine.received(
            .keyHashes(id: ask.id, entries: [Self.entry(1, 1), Self.entry(3, 3)], truncated: true),
            from: Self.owners[0])
        #expect(Self.load(next) == nil)
        #expect(Self.listing(next)?.after == [3])
    }

    @Test("without the hash index every listed row goes, with no listing asked of the owner")
    func withoutTheIndexEveryRowGoes() {
        var (machine, first) = Self.started(indexComplete: false)
        let actions = machine.listed(
            id: first, KeyListing(entries: [Self.entry(1, 0), Self.entry(2, 0)], truncated: false))
        #expect(Self.load(actions)?.key == [1])
        #expect(!actions.contains { if case .send = $0 { true } else { false } })
    }

    @Test(
        "rows of dropped tables are skipped; an unknown table, a failed load or merge, or a lost owner stops the push"
    )
    func failuresStopThePush() {
        let purpose = PartitionRelease.Purpose.release(layoutVersion: Self.after.version)
        func pushing() -> (PartitionRelease, UInt64) {
            var (machine, first) = Self.started(indexComplete: false)
            let actions = machine.listed(
                id: first, KeyListing(entries: [Self.entry(1, 0), Self.entry(2, 0)], truncated: false))
            return (machine, Self.load(actions)!.id)
        }
        var (machine, load) = pushing()
        #expect(Self.load(machine.loaded(id: load, .droppedTable))?.key == [2])

        (machine, load) = pushing()
        #expect(
            machine.loaded(id: load, .unknownTable) == [
                .waits(
                    partition: Self.mine[0], purpose: purpose,
                    reason: "a row of a table this node does not know yet")
            ])
        #expect(machine.running.isEmpty)

        (machine, load) = pushing()
        let merge = Self.request(machine.loaded(id: load, Self.row(1)))!
        // Answers from another node or to another request are strays.
        #expect(
            machine.received(
                .reconciled(id: merge.id, outcome: .object(Self.object(1))), from: Self.owners[1]
            )
            .isEmpty)
        #expect(
            machine.received(
                .reconciled(id: merge.id + 99, outcome: .object(StoredObject())), from: Self.owners[0]
            ).isEmpty)
        let failed = machine.received(
            .reconciled(id: merge.id, outcome: .failed(KVError(.storageIO, "disk full"))),
            from: Self.owners[0])
        #expect(
            failed == [
                .cancelTimer(id: merge.id),
                .waits(
                    partition: Self.mine[0], purpose: purpose,
                    reason: "merging a row into \(Self.owners[0]) failed: disk full"),
            ])

        (machine, load) = pushing()
        let lost = Self.request(machine.loaded(id: load, Self.row(1)))!
        let message = AntiEntropyMessage.reconcile(
            id: lost.id, key: ReplicaKey(partition: Self.mine[0], bytes: [1], generation: 1),
            object: Self.object(1))
        #expect(
            machine.sendFailed(message, to: Self.owners[0]) == [
                .cancelTimer(id: lost.id),
                .waits(
                    partition: Self.mine[0], purpose: purpose,
                    reason: "owner \(Self.owners[0]) is unreachable"),
            ])
        #expect(machine.timerFired(id: lost.id).isEmpty)

        (machine, load) = pushing()
        let late = Self.request(machine.loaded(id: load, Self.row(1)))!
        #expect(machine.isWaiting(for: late.id))
        #expect(
            machine.timerFired(id: late.id) == [
                .unanswered(Self.owners[0]),
                .waits(
                    partition: Self.mine[0], purpose: purpose,
                    reason: "owner \(Self.owners[0]) did not answer in time"),
            ])
        #expect(!machine.isWaiting(for: late.id))
        #expect(machine.counters.timeouts[Self.owners[0]] == 1)
        // The late answer changes nothing.
        #expect(
            machine.received(.reconciled(id: late.id, outcome: .object(Self.object(1))), from: Self.owners[0])
                .isEmpty)
    }

    @Test("a copy no layout in use places here is pushed to its owners after the grace, then dropped")
    func dropsAfterTheGrace() {
        // After the change, `me` no longer holds the partitions it left.
        let foreign = Self.mine[0]
        #expect(!PartitionRelease.holds(foreign, node: Self.me, layout: Self.after, transition: nil))
        #expect(
            PartitionRelease.holds(foreign, node: Self.me, layout: Self.after, transition: Self.unsettled))
        var machine = PartitionRelease(
            settings: ReleaseSettings(dropGraceMilliseconds: 1_000), firstMessageID: 1)
        func sweep(at now: Int64) -> [PartitionRelease.Action] {
            var actions: [PartitionRelease.Action] = []
            for _ in 0..<16 {
                actions += machine.tick(Self.view(changeOver: true, now: now))
                    .filter { if case .list = $0 { true } else { false } }
                if !actions.isEmpty { break }
            }
            return actions
        }
        // Seen placed elsewhere at 0; not yet old enough at 999.
        #expect(sweep(at: 0).isEmpty)
        #expect(sweep(at: 999).isEmpty)
        let first = Self.listing(sweep(at: 1_000))!
        #expect(machine.running.values.contains(.drop))
        let dropping = machine.running.first { $0.value == .drop }!.key
        let owners = Self.after.replicas(of: dropping)
        // The copy holds a row that every owner already holds as it does.
        var actions = machine.listed(id: first.id, KeyListing(entries: [Self.entry(1, 1)], truncated: false))
        for owner in owners {
            let ask = Self.request(actions)!
            #expect(ask.to == owner)
            actions = machine.received(
                .keyHashes(id: ask.id, entries: [Self.entry(1, 1)], truncated: false), from: owner)
            if let next = Self.listing(actions) {
                actions = machine.listed(
                    id: next.id, KeyListing(entries: [Self.entry(1, 1)], truncated: false))
            }
        }
        #expect(actions.last == .drop(partition: dropping))
        // No second drop runs meanwhile.
        #expect(sweep(at: 5_000).isEmpty)
        #expect(machine.dropped(dropping, ok: true).isEmpty)
        #expect(machine.counters.partitionsDropped == 1)
    }

    @Test("a copy that holds no row is not dropped")
    func emptyCopyIsNotDropped() {
        var machine = PartitionRelease(settings: ReleaseSettings(dropGraceMilliseconds: 0), firstMessageID: 1)
        var actions: [PartitionRelease.Action] = []
        for _ in 0..<16 where Self.listing(actions) == nil {
            actions = machine.tick(Self.view(changeOver: true))
        }
        var listing = Self.listing(actions)
        var last: [PartitionRelease.Action] = []
        while let current = listing {
            last = machine.listed(id: current.id, KeyListing(entries: [], truncated: false))
            listing = Self.listing(last)
        }
        #expect(last.isEmpty)
        #expect(machine.running.isEmpty)
    }

    @Test("a release made while one is written waits for its cool-down; a waiting one holds no push slot")
    func releasesWaitForTheCoolDown() {
        // One push at a time: a release that waits must not block the next push.
        var machine = PartitionRelease(settings: ReleaseSettings(concurrentPushes: 1), firstMessageID: 100)
        let settled = Self.view(transition: Self.transition(settled: Self.mine))
        func releaseNext() -> [PartitionRelease.Action] {
            guard let first = Self.listing(machine.tick(settled)) else { return [] }
            let second = machine.listed(id: first.id, KeyListing(entries: [], truncated: false))
            guard let listing = Self.listing(second) else { return [] }
            return machine.listed(id: listing.id, KeyListing(entries: [], truncated: false))
        }
        let records = Self.mine.prefix(2).map { LayoutPartition($0, layoutVersion: Self.after.version) }
        #expect(releaseNext() == [.recordReleases([records[0]])])
        // The second finishes while the first is written: it waits.
        #expect(releaseNext().isEmpty)
        #expect(Set(machine.running.keys) == Set(records.map(\.partition)))
        // A report of another batch is ignored.
        #expect(machine.recorded([records[1]], ok: true).isEmpty)
        guard let timer = Self.coolDown(machine.recorded([records[0]], ok: true)) else {
            Issue.record("no cool-down")
            return
        }
        #expect(machine.counters.partitionsReleased == 1)
        #expect(machine.timerFired(id: timer) == [.recordReleases([records[1]])])
        guard let next = Self.coolDown(machine.recorded([records[1]], ok: true)) else {
            Issue.record("no second cool-down")
            return
        }
        #expect(machine.counters.partitionsReleased == 2 && machine.running.isEmpty)
        // With nothing waiting the cool-down ends quietly.
        #expect(machine.timerFired(id: next).isEmpty)
    }
}
