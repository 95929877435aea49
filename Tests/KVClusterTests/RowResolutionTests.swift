import KVCluster
import KVCore
import PropertyBased
import Testing

/// Expiring versions and last-writer-wins rows, through the replica rules every node and
/// the simulator apply.
@Suite("Row resolution: expiry and last writer wins")
struct RowResolutionTests {
    static let actors = (1...3).map { ActorID(node: NodeID(rawValue: UInt64($0) * 0x1111), incarnation: 1) }

    static func text(_ value: String, at timestamp: Int64, expires: Int64? = nil, lww: Bool = true) -> Sibling
    {
        Sibling(
            value: RowValue(bytes: Array(value.utf8), contentType: "text/plain"),
            timestampMilliseconds: timestamp,
            expiresAtMilliseconds: expires, resolvesByLastWriter: lww)
    }

    static func blind(_ sibling: Sibling) -> ProposedWrite { ProposedWrite(sibling: sibling, context: nil) }

    static func visibleText(_ object: StoredObject, at now: Int64 = 0) -> [String] {
        object.visibleValues(at: now).map { String(decoding: $0.value?.bytes ?? [], as: UTF8.self) }
    }

    /// Three replicas take blind writes with clashing clocks through their own
    /// coordinators and exchange states at random: once every state has reached every
    /// replica, all of them read the same single value, the write with the highest
    /// timestamp that no later write replaced.
    @Test func concurrentWritesConvergeToOneValueOnEveryReplica() async {
        await propertyCheck(count: 300, input: Gen.int(in: 0...1_000_000).array(of: 1...40)) { steps in
            var replicas = [StoredObject(), StoredObject(), StoredObject()]
            for (index, step) in steps.enumerated() {
                let replica = step % 3
                switch (step / 3) % 3 {
                case 0:
                    let from = (step / 9) % 3
                    replicas[replica] =
                        ReplicaRules.merge(replicas[replica], replicas[from]) ?? replicas[replica]
                case 1:
                    // Clocks collide often (timestamps from a small range), so ties matter.
                    let sibling = Self.text("v\(index)", at: Int64((step / 9) % 5))
                    replicas[replica] =
                        ReplicaRules.coordinate(
                            replicas[replica], Self.blind(sibling), actor: Self.actors[replica])
                        ?? replicas[replica]
                default:
                    let tombstone = Sibling.tombstone(at: Int64((step / 9) % 5), resolvesByLastWriter: true)
                    replicas[replica] =
                        ReplicaRules.coordinate(
                            replicas[replica], Self.blind(tombstone), actor: Self.actors[replica])
                        ?? replicas[replica]
                }
                #expect(replicas[replica].visibleValues(at: 0).count <= 1)
            }
            let all = replicas.reduce(StoredObject()) { $0.merging($1) }
            let reads = replicas.map { Self.visibleText($0.merging(all)) }
            #expect(reads.allSatisfy { $0 == reads[0] })
            #expect(reads[0].count <= 1)
        }
    }

    @Test func aWriteThatFollowsAnotherWinsEvenWithAnOlderClock() throws {
        let first = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("new", at: 1000)), actor: Self.actors[0]))
        // A coordinator whose clock is behind: the replica raises the write's timestamp
        // above what it replaces.
        let second = try #require(
            ReplicaRules.coordinate(first, Self.blind(Self.text("later", at: 500)), actor: Self.actors[1]))
        #expect(Self.visibleText(second) == ["later"])
        #expect(second.siblingCount == 1)
        #expect(second.values[0].timestampMilliseconds == 1001)
        // A concurrent write elsewhere with a later clock still wins the merge.
        let elsewhere = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("elsewhere", at: 2000)), actor: Self.actors[2]))
        #expect(Self.visibleText(second.merging(elsewhere)) == ["elsewhere"])
        #expect(Self.visibleText(elsewhere.merging(second)) == ["elsewhere"])
    }

    /// A timestamp at the top of what decoders accept (only a faulty peer makes one) is
    /// not raised past it: the row stays readable, and the write still replaces it.
    @Test func aWriteAfterTheLargestTimestampStaysDecodable() throws {
        let top = Sibling.timestampRange.upperBound
        let first = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("top", at: top)), actor: Self.actors[0]))
        let second = try #require(
            ReplicaRules.coordinate(first, Self.blind(Self.text("next", at: 5)), actor: Self.actors[1]))
        #expect(second.values.map(\.timestampMilliseconds) == [top])
        #expect(Self.visibleText(try StoredObjectCodec.decode(StoredObjectCodec.encode(second))) == ["next"])
        let counter = try #require(
            try ReplicaRules.increment(
                StoredObject(), by: 1, actor: Self.actors[2], timestampMilliseconds: top, lastWriterWins: true
            ))
        let counted = try #require(
            try ReplicaRules.increment(
                counter, by: 1, actor: Self.actors[2], timestampMilliseconds: 5, lastWriterWins: true))
        #expect(counted.values.map(\.timestampMilliseconds) == [top])
        #expect(throws: Never.self) { try StoredObjectCodec.decode(StoredObjectCodec.encode(counted)) }
    }

    @Test func aLaterDeleteWinsAndTiesBreakTheSameEverywhere() throws {
        let value = try #require(
            ReplicaRules.coordinate(StoredObject(), Self.blind(Self.text("v", at: 10)), actor: Self.actors[0])
        )
        // Another replica held an older version and took a delete after it, concurrent
        // with "v" but later by the clock: the delete wins everywhere.
        let older = try #require(
            ReplicaRules.coordinate(StoredObject(), Self.blind(Self.text("x", at: 5)), actor: Self.actors[1]))
        let delete = try #require(
            ReplicaRules.coordinate(
                older, Self.blind(.tombstone(at: 11, resolvesByLastWriter: true)), actor: Self.actors[1]))
        #expect(delete.merging(value).isGone(at: 0))
        #expect(value.merging(delete).isGone(at: 0))
        let tieA = try #require(
            ReplicaRules.coordinate(StoredObject(), Self.blind(Self.text("a", at: 7)), actor: Self.actors[0]))
        let tieB = try #require(
            ReplicaRules.coordinate(StoredObject(), Self.blind(Self.text("b", at: 7)), actor: Self.actors[1]))
        #expect(Self.visibleText(tieA.merging(tieB)) == Self.visibleText(tieB.merging(tieA)))
        #expect(Self.visibleText(tieA.merging(tieB)).count == 1)
    }

    @Test func siblingTablesStillKeepEveryConcurrentValue() throws {
        let a = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("a", at: 1, lww: false)), actor: Self.actors[0]))
        let b = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("b", at: 2, lww: false)), actor: Self.actors[1]))
        #expect(Set(Self.visibleText(a.merging(b))) == ["a", "b"])
    }

    @Test func expiredVersionsReadAsAbsentAndSayWhenTheyWentAway() throws {
        let object = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("t", at: 1, expires: 5000, lww: false)),
                actor: Self.actors[0]))
        #expect(Self.visibleText(object, at: 4999) == ["t"])
        #expect(object.isGone(at: 5000))
        #expect(object.goneSinceMilliseconds == 5000)
        // Another sibling that never expires keeps the row alive.
        let forever = try #require(
            ReplicaRules.coordinate(
                object, Self.blind(Self.text("f", at: 2, lww: false)), actor: Self.actors[1]))
        #expect(Self.visibleText(forever, at: 6000) == ["f"])
        #expect(forever.goneSinceMilliseconds == nil)
        // The expiry travels with the version: a replica merged later reads it expired too.
        #expect(StoredObject().merging(object).isGone(at: 5000))
        let decoded = try StoredObjectCodec.decode(StoredObjectCodec.encode(object))
        #expect(decoded.goneSinceMilliseconds == 5000)
        // A deleted row has been gone for ever.
        let deleted = try #require(
            ReplicaRules.coordinate(
                object, ProposedWrite(sibling: .tombstone(at: 3), context: object.context),
                actor: Self.actors[0]))
        #expect(deleted.goneSinceMilliseconds == Int64.min)
    }

    /// `SET k 10` and then `INCR k` through two nodes at once: both increments count and
    /// the starting value counts once.
    @Test func concurrentIncrementsOfATextIntegerMerge() throws {
        let set = try #require(
            ReplicaRules.coordinate(StoredObject(), Self.blind(Self.text("10", at: 1)), actor: Self.actors[0])
        )
        let viaA = try #require(
            try ReplicaRules.increment(
                set, by: 1, actor: Self.actors[0], timestampMilliseconds: 2, lastWriterWins: true))
        let viaB = try #require(
            try ReplicaRules.increment(
                set, by: 5, actor: Self.actors[1], timestampMilliseconds: 2, lastWriterWins: true))
        let merged = viaA.merging(viaB)
        #expect(try CounterState.merged(merged.visibleValues(at: 0))?.value == 16)
        let again = try #require(
            try ReplicaRules.increment(
                merged, by: -6, actor: Self.actors[2], timestampMilliseconds: 3, lastWriterWins: true))
        #expect(try CounterState.merged(again.visibleValues(at: 0))?.value == 10)
        // A value that is no integer is no counter.
        let word = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("ten", at: 1)), actor: Self.actors[0]))
        let error = #expect(throws: KVError.self) {
            _ = try ReplicaRules.increment(
                word, by: 1, actor: Self.actors[0], timestampMilliseconds: 2, lastWriterWins: true)
        }
        #expect(error?.code == .notACounter)
    }

    /// An increment through A concurrent with a delete (or a SET) and a later increment
    /// through B: the later increment starts a new epoch, so A's earlier increment does
    /// not come back with it.
    @Test func incrementsBeforeALaterDeleteOrSetDoNotCountAgain() throws {
        let viaA = try #require(
            try ReplicaRules.increment(
                StoredObject(), by: 1, actor: Self.actors[0], timestampMilliseconds: 100, lastWriterWins: true
            ))
        let written = try #require(
            ReplicaRules.coordinate(StoredObject(), Self.blind(Self.text("x", at: 50)), actor: Self.actors[1])
        )
        let deleted = try #require(
            ReplicaRules.coordinate(
                written,
                ProposedWrite(
                    sibling: .tombstone(at: 200, resolvesByLastWriter: true), context: written.context),
                actor: Self.actors[1]))
        let afterDelete = try #require(
            try ReplicaRules.increment(
                deleted, by: 1, actor: Self.actors[1], timestampMilliseconds: 300, lastWriterWins: true))
        #expect(try CounterState.merged(viaA.merging(afterDelete).visibleValues(at: 0))?.value == 1)
        #expect(try CounterState.merged(afterDelete.merging(viaA).visibleValues(at: 0))?.value == 1)
        let set = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("100", at: 200)), actor: Self.actors[2]))
        let afterSet = try #require(
            try ReplicaRules.increment(
                set, by: 1, actor: Self.actors[2], timestampMilliseconds: 300, lastWriterWins: true))
        #expect(try CounterState.merged(viaA.merging(afterSet).visibleValues(at: 0))?.value == 101)
        // Concurrent first increments of a row never written share an epoch and merge.
        let viaB = try #require(
            try ReplicaRules.increment(
                StoredObject(), by: 2, actor: Self.actors[1], timestampMilliseconds: 90, lastWriterWins: true)
        )
        #expect(try CounterState.merged(viaA.merging(viaB).visibleValues(at: 0))?.value == 3)
        // Text that Redis would not read as an integer is no counter.
        for text in ["+5", "007", "-0", " 1"] {
            let odd = try #require(
                ReplicaRules.coordinate(
                    StoredObject(), Self.blind(Self.text(text, at: 1)), actor: Self.actors[0]))
            #expect(throws: KVError.self) {
                _ = try ReplicaRules.increment(
                    odd, by: 1, actor: Self.actors[0], timestampMilliseconds: 2, lastWriterWins: true)
            }
        }
    }

    @Test func anIncrementKeepsTheRowsExpiry() throws {
        let set = try #require(
            ReplicaRules.coordinate(
                StoredObject(), Self.blind(Self.text("1", at: 1, expires: 9000)), actor: Self.actors[0]))
        let incremented = try #require(
            try ReplicaRules.increment(
                set, by: 1, actor: Self.actors[0], timestampMilliseconds: 2, lastWriterWins: true))
        #expect(incremented.visibleValues(at: 8999).first?.expiresAtMilliseconds == 9000)
        #expect(incremented.isGone(at: 9000))
    }
}
