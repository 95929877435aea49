import KVCore
import Testing

@testable import KVCluster

/// The receiving side of rebalancing, event in, actions out, written from the rules in
/// ``PartitionTransfers``'s documentation.
@Suite("Partition transfers")
struct PartitionTransfersTests {
    static let nodes = (1...4).map { NodeID(rawValue: UInt64($0)) }
    /// Three nodes, N=2, then node 4 joins.
    static let before = Layout.computed(
        members: nodes.prefix(3).map { LayoutMember(node: $0) }, replicationFactor: 2, partitionCount: 16)
    static let after: Layout = {
        var layout = Layout.computed(
            members: nodes.map { LayoutMember(node: $0) }, replicationFactor: 2, partitionCount: 16,
            previous: before)
        layout.version = before.version + 1
        return layout
    }()
    static let joiner = nodes[3]
    static let transition = LayoutTransition(previous: before)
    /// The partitions the joiner receives, in the order the cluster admits them.
    static let mine = transition.pendingTransfers(in: after).filter { $0.node == joiner }.map(\.partition)

    static func view(
        reachable: Set<NodeID>? = nil, control: HandoffControl = HandoffControl(bytesPerSecond: 0),
        transition: LayoutTransition = transition, now: Int64 = 0
    ) -> TransferView {
        TransferView(
            node: joiner, layout: after, transition: transition, control: control,
            reachable: reachable ?? Set(nodes.prefix(3)), believedUp: Set(nodes), nowMilliseconds: now)
    }

    static func row(_ byte: UInt8) -> PartitionScanPage {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: [byte]), timestampMilliseconds: 1), context: VersionVector(),
            actor: ActorID(node: nodes[0], incarnation: 1))
        return PartitionScanPage(rows: [([byte], object)], truncated: true)
    }

    static func pulls(_ actions: [PartitionTransfers.Action]) -> [(
        id: UInt64, partition: PartitionID, after: [UInt8]?, to: NodeID
    )] {
        actions.compactMap { action in
            guard
                case .send(.transfers(.transferPull(let id, let partition, _, let after, _)), let to) = action
            else { return nil }
            return (id, partition, after, to)
        }
    }

    /// The store among `actions`.
    static func store(in actions: [PartitionTransfers.Action]) -> (
        id: UInt64, rows: [PartitionTransfers.ScanRow]
    )? {
        for case .store(let id, _, let rows) in actions { return (id, rows) }
        return nil
    }

    /// A machine with one transfer started and its empty cursor read: the first pull.
    static func pulling(control: HandoffControl = HandoffControl(bytesPerSecond: 0)) -> (
        PartitionTransfers, PartitionID, (id: UInt64, partition: PartitionID, after: [UInt8]?, to: NodeID)
    ) {
        var machine = PartitionTransfers(firstMessageID: 100)
        let started = machine.tick(view(control: HandoffControl(clusterConcurrency: 16, nodeConcurrency: 1)))
        guard case .readCursor(let partition, _) = started.first else { fatalError("no transfer started") }
        let actions = machine.cursorRead(
            partition, layoutVersion: after.version, nil, view: view(control: control))
        return (machine, partition, pulls(actions)[0])
    }

    @Test(
        "a tick starts this node's admitted transfers, at most the node's limit, each by reading its cursor")
    func tickAdmits() {
        #expect(Self.mine.count >= 3)
        var machine = PartitionTransfers(firstMessageID: 1)
        let actions = machine.tick(
            Self.view(control: HandoffControl(clusterConcurrency: 16, nodeConcurrency: 2)))
        #expect(actions == Self.mine.prefix(2).map { .readCursor($0, layoutVersion: Self.after.version) })
        // Running ones are not started twice, and the limit holds across ticks.
        #expect(machine.tick(Self.view(control: HandoffControl(nodeConcurrency: 2))).isEmpty)
        #expect(machine.counters.transfersStarted == 2)
        #expect(machine.inbound[Self.mine[0]]?.state == "running")
        #expect(machine.inbound[Self.mine[2]]?.state == "waiting")
    }

    @Test(
        "the cluster-wide limit counts every node's pending transfers in one order, skipping nodes believed down"
    )
    func clusterLimit() {
        // Nodes 4 and 5 join together: both receive.
        let five = NodeID(rawValue: 5)
        var target = Layout.computed(
            members: (Self.nodes + [five]).map { LayoutMember(node: $0) }, replicationFactor: 2,
            partitionCount: 16, previous: Self.before)
        target.version = Self.after.version
        let pending = Self.transition.pendingTransfers(in: target)
        let limit = 6
        func view(believedUp: Set<NodeID>) -> TransferView {
            TransferView(
                node: Self.joiner, layout: target, transition: Self.transition,
                control: HandoffControl(clusterConcurrency: limit, nodeConcurrency: 100, bytesPerSecond: 0),
                reachable: Set(Self.nodes.prefix(3)), believedUp: believedUp, nowMilliseconds: 0)
        }
        let admitted = pending.prefix(limit).filter { $0.node == Self.joiner }.map(\.partition)
        #expect(admitted.count < limit, "the other joiner must hold some of the first slots")
        var machine = PartitionTransfers(firstMessageID: 1)
        #expect(
            machine.tick(view(believedUp: Set(Self.nodes + [five])))
                == admitted.map { .readCursor($0, layoutVersion: target.version) })
        // With node 5 believed down its slots hold none of the limit.
        let mineFirst = pending.filter { $0.node == Self.joiner }.prefix(limit).map(\.partition)
        var other = PartitionTransfers(firstMessageID: 1)
        #expect(
            other.tick(view(believedUp: Set(Self.nodes)))
                == mineFirst.map { .readCursor($0, layoutVersion: target.version) })
    }

    @Test("while paused nothing starts, and waiting transfers show paused")
    func paused() {
        var machine = PartitionTransfers(firstMessageID: 1)
        #expect(machine.tick(Self.view(control: HandoffControl(paused: true))).isEmpty)
        #expect(machine.inbound[Self.mine[0]]?.state == "paused")
    }

    @Test("a done cursor records the receipt without pulling; a partial one resumes after its key")
    func cursorResumes() {
        var machine = PartitionTransfers(firstMessageID: 1)
        let started = machine.tick(Self.view(control: HandoffControl(nodeConcurrency: 2)))
        guard case .readCursor(let first, _) = started[0], case .readCursor(let second, _) = started[1] else {
            Issue.record("no transfers started")
            return
        }
        // Its slot takes the next admitted transfer at once.
        #expect(
            machine.cursorRead(
                first, layoutVersion: Self.after.version, TransferCursor(done: true, after: nil),
                view: Self.view(control: HandoffControl(nodeConcurrency: 2)))
                == [
                    .recordReceipts([LayoutPartition(first, layoutVersion: Self.after.version)]),
                    .readCursor(Self.mine[2], layoutVersion: Self.after.version),
                ])
        let actions = machine.cursorRead(
            second, layoutVersion: Self.after.version, TransferCursor(done: false, after: [9, 9]),
            view: Self.view())
        let pull = Self.pulls(actions)
        #expect(pull.count == 1 && pull[0].after == [9, 9] && pull[0].partition == second)
        // The pull goes to a previous owner the transition names, leavers first.
        #expect(pull[0].to == Self.transition.sources(of: second, in: Self.after)[0])
        #expect(actions.contains(.startTimer(id: pull[0].id, afterMilliseconds: 10_000)))
    }

    @Test("a batch is stored while the next is pulled after its last key; the cursor moves once it is stored")
    func batchThenCursorThenPull() {
        var (machine, partition, pull) = Self.pulling()
        let page = Self.row(5)
        let actions = machine.received(
            .transferRows(id: pull.id, page: page, estimatedRows: 10), from: pull.to, view: Self.view())
        #expect(actions.first == .cancelTimer(id: pull.id))
        guard case .store(let storeID, partition, let rows) = actions[1] else {
            Issue.record("no store: \(actions)")
            return
        }
        #expect(rows.map(\.key) == [[5]])
        // The next batch travels while this one is merged, from the same source.
        let ahead = Self.pulls(actions)
        #expect(ahead.count == 1 && ahead[0].after == [5] && ahead[0].to == pull.to)
        // Until the rows are stored the cursor does not move.
        let saved = machine.stored(id: storeID, ok: true, view: Self.view())
        guard case .saveCursor(let saveID, partition, _, let cursor) = saved.first else {
            Issue.record("no cursor: \(saved)")
            return
        }
        #expect(cursor == TransferCursor(done: false, after: [5]))
        #expect(machine.counters.batchesReceived == 0)
        // The pull ahead is the transfer's next pull: none goes again.
        #expect(machine.cursorSaved(id: saveID, ok: true, view: Self.view()).isEmpty)
        #expect(machine.counters.batchesReceived == 1 && machine.counters.rowsReceived == 1)
        #expect(machine.inbound[partition]?.estimatedRows == 10)
        // Its batch is then stored like any other, and pulls the one after it.
        let second = machine.received(
            .transferRows(id: ahead[0].id, page: Self.row(6), estimatedRows: 10), from: pull.to,
            view: Self.view())
        #expect(Self.store(in: second)?.rows.map(\.key) == [[6]])
        #expect(Self.pulls(second).map(\.after) == [[6]])
    }

    @Test("a batch pulled ahead waits for the cursor before it, then is stored and pulls the next")
    func batchAheadWaitsForTheCursor() {
        var (machine, partition, pull) = Self.pulling()
        let first = machine.received(
            .transferRows(id: pull.id, page: Self.row(5), estimatedRows: 10), from: pull.to, view: Self.view()
        )
        guard let (storeID, _) = Self.store(in: first), let ahead = Self.pulls(first).first else {
            Issue.record("no store and pull ahead: \(first)")
            return
        }
        // The next batch comes before the first is stored: it is held, not stored.
        #expect(
            machine.received(
                .transferRows(id: ahead.id, page: Self.row(6), estimatedRows: 10), from: pull.to,
                view: Self.view())
                == [.cancelTimer(id: ahead.id)])
        guard
            case .saveCursor(let saveID, _, _, let cursor) = machine.stored(
                id: storeID, ok: true, view: Self.view()
            )
            .first
        else {
            Issue.record("no cursor")
            return
        }
        #expect(cursor == TransferCursor(done: false, after: [5]))
        let next = machine.cursorSaved(id: saveID, ok: true, view: Self.view())
        guard let (heldID, rows) = Self.store(in: next) else {
            Issue.record("the held batch was not stored: \(next)")
            return
        }
        #expect(rows.map(\.key) == [[6]])
        #expect(Self.pulls(next).map(\.after) == [[6]])
        guard
            case .saveCursor(_, partition, _, let heldCursor) = machine.stored(
                id: heldID, ok: true, view: Self.view()
            )
            .first
        else {
            Issue.record("no cursor after the held batch")
            return
        }
        #expect(heldCursor == TransferCursor(done: false, after: [6]))
    }

    @Test("a pull ahead that fails makes the pull after the cursor back off and ask the next source")
    func failedPullAhead() {
        for failure in 0..<3 {
            var (machine, _, pull) = Self.pulling()
            let first = machine.received(
                .transferRows(id: pull.id, page: Self.row(5), estimatedRows: 10), from: pull.to,
                view: Self.view())
            guard let (storeID, _) = Self.store(in: first), let ahead = Self.pulls(first).first else {
                Issue.record("no store and pull ahead: \(first)")
                return
            }
            switch failure {
            case 0:
                var refused = PartitionScanPage(rows: [], truncated: true)
                refused.error = KVError(.unavailable, "busy")
                #expect(
                    machine.received(
                        .transferRows(id: ahead.id, page: refused, estimatedRows: 0), from: pull.to,
                        view: Self.view()) == [.cancelTimer(id: ahead.id)])
            case 1:
                #expect(machine.timerFired(id: ahead.id, view: Self.view()) == [.unanswered(pull.to)])
            default:
                #expect(
                    machine.sendFailed(
                        .transferPull(
                            id: ahead.id, partition: ahead.partition, layoutVersion: Self.after.version,
                            after: [5], maximumBytes: 1), view: Self.view()) == [.cancelTimer(id: ahead.id)])
            }
            #expect(machine.counters.pullsFailed == 1)
            guard
                case .saveCursor(let saveID, _, _, _) = machine.stored(
                    id: storeID, ok: true, view: Self.view()
                )
                .first
            else {
                Issue.record("no cursor")
                return
            }
            // The pull after the cursor backs off, then asks the next source.
            let saved = machine.cursorSaved(id: saveID, ok: true, view: Self.view())
            guard case .startTimer(let pause, 200)? = saved.first, saved.count == 1 else {
                Issue.record("no pause: \(saved)")
                return
            }
            let again = Self.pulls(machine.timerFired(id: pause, view: Self.view()))
            #expect(again.count == 1 && again[0].after == [5] && again[0].id != ahead.id)
            let sources = Self.transition.sources(of: pull.partition, in: Self.after)
            #expect(sources.count < 2 || again[0].to != pull.to)
            // A late answer to the dropped pull changes nothing.
            #expect(
                machine.received(
                    .transferRows(id: ahead.id, page: Self.row(6), estimatedRows: 10), from: pull.to,
                    view: Self.view()
                ).isEmpty)
        }
    }

    @Test("the last batch saves a done cursor, then the receipt is recorded and the transfer ends")
    func lastBatch() {
        var (machine, partition, pull) = Self.pulling()
        var page = Self.row(5)
        page.truncated = false
        guard
            case .store(let storeID, _, _) = machine.received(
                .transferRows(id: pull.id, page: page, estimatedRows: 1), from: pull.to, view: Self.view()
            ).last,
            case .saveCursor(let saveID, _, _, let cursor) = machine.stored(
                id: storeID, ok: true, view: Self.view()
            )
            .first
        else {
            Issue.record("the batch was not stored")
            return
        }
        #expect(cursor == TransferCursor(done: true, after: nil))
        let receipt = LayoutPartition(partition, layoutVersion: Self.after.version)
        let one = HandoffControl(clusterConcurrency: 16, nodeConcurrency: 1)
        // The receipt is written, and the slot takes the next admitted transfer at once.
        let next = Self.mine.first { $0 != partition }!
        #expect(
            machine.cursorSaved(id: saveID, ok: true, view: Self.view(control: one))
                == [.recordReceipts([receipt]), .readCursor(next, layoutVersion: Self.after.version)])
        #expect(machine.receiving == [partition, next])
        // Once written, the transfer ends and the receipts' cool-down begins.
        var recorded = Self.transition
        recorded.received.insert(TransferSlot(partition: partition, node: Self.joiner))
        let written = machine.receiptsRecorded(
            [receipt], ok: true, view: Self.view(control: one, transition: recorded))
        guard case .startTimer(_, 100) = written.first, written.count == 1 else {
            Issue.record("no cool-down: \(written)")
            return
        }
        #expect(machine.receiving == [next])
        #expect(machine.inbound[partition]?.state == "received")
        #expect(machine.counters.transfersCompleted == 1)
    }

    @Test("a refused, lost or late pull backs off longer each time and moves to the next source")
    func failuresBackOff() {
        var (machine, partition, pull) = Self.pulling()
        let sources = Self.transition.sources(of: partition, in: Self.after)
        #expect(sources.count == 2)
        // Refused.
        var actions = machine.received(
            .transferRows(
                id: pull.id,
                page: PartitionScanPage(rows: [], truncated: true, error: KVError(.unavailable, "busy")),
                estimatedRows: 0), from: pull.to, view: Self.view())
        guard case .startTimer(let pause, 200) = actions.last else {
            Issue.record("no pause: \(actions)")
            return
        }
        actions = machine.timerFired(id: pause, view: Self.view())
        let second = Self.pulls(actions)[0]
        #expect(second.to == sources[1])
        // Late: the pull's own timer fires.
        actions = machine.timerFired(id: second.id, view: Self.view())
        guard case .startTimer(let pause2, 400) = actions.last else {
            Issue.record("no longer pause: \(actions)")
            return
        }
        let third = Self.pulls(machine.timerFired(id: pause2, view: Self.view()))[0]
        #expect(third.to == sources[0])
        // Lost: it could not be sent.
        actions = machine.sendFailed(
            .transferPull(
                id: third.id, partition: partition, layoutVersion: Self.after.version, after: nil,
                maximumBytes: 1),
            view: Self.view())
        #expect(actions.contains(.startTimer(id: third.id + 1, afterMilliseconds: 600)))
        #expect(machine.counters.pullsFailed == 3)
        // A late answer to an abandoned pull is ignored.
        #expect(
            machine.received(
                .transferRows(id: second.id, page: Self.row(1), estimatedRows: 1), from: second.to,
                view: Self.view()
            )
            .isEmpty)
    }

    @Test("after the most failures in a row the transfer stops until a later tick")
    func stopsAfterFailures() {
        var (machine, partition, pull) = Self.pulling()
        var current = pull
        for failure in 1...6 {
            let actions = machine.timerFired(id: current.id, view: Self.view())
            // Every pull that timed out counts against its source's connection.
            #expect(actions.first == .unanswered(current.to))
            if failure == 6 {
                #expect(actions == [.unanswered(current.to)])
                break
            }
            guard case .startTimer(let pause, _) = actions.last else {
                Issue.record("no pause")
                return
            }
            current = Self.pulls(machine.timerFired(id: pause, view: Self.view()))[0]
        }
        #expect(machine.receiving.isEmpty)
        #expect(machine.inbound[partition]?.state == "waiting")
        // The next tick starts it again, from its cursor.
        #expect(machine.tick(Self.view()).contains(.readCursor(partition, layoutVersion: Self.after.version)))
    }

    @Test("a batch that cannot be stored reads the cursor again, so it is pulled again")
    func storeFailure() {
        var (machine, partition, pull) = Self.pulling()
        let actions = machine.received(
            .transferRows(id: pull.id, page: Self.row(3), estimatedRows: 1), from: pull.to, view: Self.view())
        guard let (storeID, _) = Self.store(in: actions), let ahead = Self.pulls(actions).first else {
            Issue.record("no store and pull ahead: \(actions)")
            return
        }
        // What was pulled after the batch is dropped with it.
        #expect(
            machine.stored(id: storeID, ok: false, view: Self.view())
                == [.cancelTimer(id: ahead.id), .readCursor(partition, layoutVersion: Self.after.version)])
        #expect(
            machine.received(
                .transferRows(id: ahead.id, page: Self.row(4), estimatedRows: 1), from: pull.to,
                view: Self.view()
            ).isEmpty)
    }

    @Test(
        "with no reachable source the transfer stops; with every previous owner abandoned it is received at once"
    )
    func sources() {
        var machine = PartitionTransfers(firstMessageID: 1)
        let started = machine.tick(Self.view(control: HandoffControl(nodeConcurrency: 1)))
        guard case .readCursor(let partition, let version) = started.first else { return }
        #expect(
            machine.cursorRead(partition, layoutVersion: version, nil, view: Self.view(reachable: [])).isEmpty
        )
        #expect(machine.inbound[partition]?.state == "waiting" && machine.inbound[partition]?.source == nil)
        let abandoned = LayoutTransition(previous: Self.before, abandoned: Set(Self.nodes.prefix(3)))
        _ = machine.tick(Self.view(control: HandoffControl(nodeConcurrency: 1), transition: abandoned))
        #expect(
            machine.cursorRead(partition, layoutVersion: version, nil, view: Self.view(transition: abandoned))
                .first == .recordReceipts([LayoutPartition(partition, layoutVersion: version)]))
    }

    @Test("a transfer no longer wanted stops at its next step")
    func stale() {
        var (machine, partition, pull) = Self.pulling()
        var received = Self.transition
        received.received.insert(TransferSlot(partition: partition, node: Self.joiner))
        let actions = machine.received(
            .transferRows(id: pull.id, page: Self.row(3), estimatedRows: 1), from: pull.to, view: Self.view())
        guard let (storeID, _) = Self.store(in: actions), let ahead = Self.pulls(actions).first,
            case .saveCursor(let saveID, _, _, _) = machine.stored(id: storeID, ok: true, view: Self.view())
                .first
        else {
            Issue.record("no batch: \(actions)")
            return
        }
        // Its pull ahead is dropped with it.
        #expect(
            machine.cursorSaved(id: saveID, ok: true, view: Self.view(transition: received))
                == [.cancelTimer(id: ahead.id)])
        #expect(machine.receiving.isEmpty)
    }

    @Test("the byte rate makes the next pull wait for the node's budget, a second at most at a time")
    func rate() {
        // A batch costs about 3 s at 10 bytes a second: two would pass the 2 s debt
        // bound, so nothing is pulled ahead either.
        let control = HandoffControl(bytesPerSecond: 10)
        var (machine, _, pull) = Self.pulling(control: control)
        let received = machine.received(
            .transferRows(id: pull.id, page: Self.row(3), estimatedRows: 1), from: pull.to,
            view: Self.view(control: control))
        guard let (storeID, _) = Self.store(in: received), Self.pulls(received).isEmpty,
            case .saveCursor(let saveID, _, _, _) = machine.stored(
                id: storeID, ok: true, view: Self.view(control: control)
            ).first
        else {
            Issue.record("no batch, or a pull ahead: \(received)")
            return
        }
        let actions = machine.cursorSaved(id: saveID, ok: true, view: Self.view(control: control, now: 0))
        guard case .startTimer(let wait, 1_000) = actions.last, Self.pulls(actions).isEmpty else {
            Issue.record("no wait: \(actions)")
            return
        }
        // Past the budget the pull goes.
        #expect(
            Self.pulls(machine.timerFired(id: wait, view: Self.view(control: control, now: 5_000))).count == 1
        )
    }

    @Test("a batch's bytes are charged from when it was pulled: a transfer slower than the rate never waits")
    func rateCountsFromThePull() {
        // A batch costs about 3 s at 10 bytes a second; this one takes 5 s to arrive and
        // be stored, so the budget it cost is repaid by then.
        let control = HandoffControl(bytesPerSecond: 10)
        var (machine, _, pull) = Self.pulling(control: control)
        let received = machine.received(
            .transferRows(id: pull.id, page: Self.row(3), estimatedRows: 1), from: pull.to,
            view: Self.view(control: control, now: 4_000))
        guard let (storeID, _) = Self.store(in: received),
            case .saveCursor(let saveID, _, _, _) = machine.stored(
                id: storeID, ok: true, view: Self.view(control: control, now: 4_500)
            ).first
        else {
            Issue.record("no batch: \(received)")
            return
        }
        let next = machine.cursorSaved(id: saveID, ok: true, view: Self.view(control: control, now: 5_000))
        #expect(Self.pulls(next).count == 1, "the pull waited: \(next)")
    }

    @Test("a pull goes ahead only while the byte budget is unspent")
    func rateAndPullsAhead() {
        // A batch costs about 300 ms at 100 bytes a second.
        let control = HandoffControl(bytesPerSecond: 100)
        var (machine, _, pull) = Self.pulling(control: control)
        let first = machine.received(
            .transferRows(id: pull.id, page: Self.row(3), estimatedRows: 1), from: pull.to,
            view: Self.view(control: control))
        guard let (firstStore, _) = Self.store(in: first), let ahead = Self.pulls(first).first,
            case .saveCursor(let firstSave, _, _, _) = machine.stored(
                id: firstStore, ok: true, view: Self.view(control: control)
            ).first
        else {
            Issue.record("no first batch, or no pull ahead: \(first)")
            return
        }
        #expect(machine.cursorSaved(id: firstSave, ok: true, view: Self.view(control: control)).isEmpty)
        // The first batch spent the budget: the second pulls nothing ahead, and the
        // pull after it waits for both batches' cost.
        let second = machine.received(
            .transferRows(id: ahead.id, page: Self.row(4), estimatedRows: 1), from: pull.to,
            view: Self.view(control: control))
        guard let (storeID, _) = Self.store(in: second), Self.pulls(second).isEmpty,
            case .saveCursor(let saveID, _, _, _) = machine.stored(
                id: storeID, ok: true, view: Self.view(control: control)
            ).first
        else {
            Issue.record("no second batch, or a pull ahead: \(second)")
            return
        }
        let bytes = Self.row(3).rows.reduce(0) {
            $0 + $1.key.count + StoredObjectCodec.encodedCount($1.object)
        }
        let actions = machine.cursorSaved(id: saveID, ok: true, view: Self.view(control: control))
        guard case .startTimer(_, let wait)? = actions.first, actions.count == 1 else {
            Issue.record("no wait: \(actions)")
            return
        }
        #expect(wait == Int64(2 * bytes * 10))
    }

    @Test("a source serves only as a source the transition names, for the layout version it knows")
    func refusal() {
        let partition = Self.mine[0]
        let source = Self.transition.sources(of: partition, in: Self.after)[0]
        var sourceView = Self.view()
        sourceView.node = source
        #expect(
            PartitionTransfers.refusal(
                partition: partition, layoutVersion: Self.after.version, view: sourceView) == nil)
        #expect(
            PartitionTransfers.refusal(
                partition: partition, layoutVersion: Self.after.version + 1, view: sourceView)?.code
                == .unavailable)
        #expect(
            PartitionTransfers.refusal(
                partition: partition, layoutVersion: Self.after.version, view: Self.view()) != nil)
    }

    @Test("cursors keep their stored form")
    func cursorForm() {
        #expect(TransferCursor(done: true, after: nil).encoded == [1])
        #expect(TransferCursor(done: false, after: [4, 2]).encoded == [0, 4, 2])
        #expect(TransferCursor(encoded: [0, 4, 2]) == TransferCursor(done: false, after: [4, 2]))
        #expect(TransferCursor(encoded: [0]) == TransferCursor(done: false, after: nil))
        #expect(TransferCursor(encoded: [1]).done)
    }

    @Test(
        "receipts made while one is written wait for its cool-down and go as one batch; a waiting one holds no slot; a failed batch waits for a tick"
    )
    func receiptsGoInBatches() {
        var machine = PartitionTransfers(firstMessageID: 1)
        let one = HandoffControl(clusterConcurrency: 16, nodeConcurrency: 1)
        let version = Self.after.version
        let done = TransferCursor(done: true, after: nil)
        let records = Self.mine.prefix(3).map { LayoutPartition($0, layoutVersion: version) }
        func read(_ index: Int, transition: LayoutTransition = Self.transition) -> [PartitionTransfers.Action]
        {
            machine.cursorRead(
                Self.mine[index], layoutVersion: version, done,
                view: Self.view(control: one, transition: transition))
        }
        #expect(machine.tick(Self.view(control: one)) == [.readCursor(Self.mine[0], layoutVersion: version)])
        // The slot is free while the receipt is written: the next transfer starts at once.
        #expect(
            read(0) == [.recordReceipts([records[0]]), .readCursor(Self.mine[1], layoutVersion: version)])
        #expect(read(1) == [.readCursor(Self.mine[2], layoutVersion: version)])
        #expect(machine.receiving == Set(Self.mine.prefix(3)))
        // A report of another batch is ignored.
        #expect(machine.receiptsRecorded([records[1]], ok: true, view: Self.view(control: one)).isEmpty)
        var recorded = Self.transition
        recorded.received.insert(TransferSlot(partition: Self.mine[0], node: Self.joiner))
        let first = machine.receiptsRecorded(
            [records[0]], ok: true, view: Self.view(control: one, transition: recorded))
        guard case .startTimer(let timer, 100) = first.first, first.count == 1 else {
            Issue.record("no cool-down: \(first)")
            return
        }
        #expect(
            machine.counters.transfersCompleted == 1 && machine.inbound[Self.mine[0]]?.state == "received")
        #expect(machine.timerFired(id: timer, view: Self.view()) == [.recordReceipts([records[1]])])
        // The batch fails: its transfer waits, and a later tick starts it again.
        let failed = machine.receiptsRecorded([records[1]], ok: false, view: Self.view(control: one))
        guard case .startTimer(let next, 100) = failed.first, failed.count == 1 else {
            Issue.record("no cool-down after a failure: \(failed)")
            return
        }
        #expect(machine.counters.transfersCompleted == 1 && machine.inbound[Self.mine[1]]?.state == "waiting")
        #expect(machine.receiving == [Self.mine[2]])
        #expect(machine.timerFired(id: next, view: Self.view()).isEmpty)
        #expect(
            read(2, transition: recorded)
                == [.recordReceipts([records[2]]), .readCursor(Self.mine[1], layoutVersion: version)])
    }
}
