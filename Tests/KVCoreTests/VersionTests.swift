import KVCore
import PropertyBased
import Testing

let actorA = ActorID(node: NodeID(rawValue: 0xA), incarnation: 1)
let actorB = ActorID(node: NodeID(rawValue: 0xB), incarnation: 1)
let actorC = ActorID(node: NodeID(rawValue: 0xC), incarnation: 1)
let replicaActors = [actorA, actorB, actorC]

typealias Clock = DottedVersionVectorSet<Int>

/// Replays a random history over three replicas and returns every state it produced.
///
/// Each operation number picks: a write at one replica with the context of some replica's
/// state (possibly stale, possibly empty), or a one-way sync between two replicas. States
/// made this way share one history, as real replicas do, so the same dot always carries
/// the same value.
func replayHistory(_ operations: [Int]) -> [Clock] {
    var replicas = [Clock(), Clock(), Clock()]
    var seen: [Clock] = [Clock()]
    for (step, operation) in operations.enumerated() {
        let target = operation % 3
        let source = (operation / 3) % 3
        if (operation / 9) % 3 == 0 {
            replicas[target] = replicas[target].merging(replicas[source])
        } else {
            let context =
                (operation / 27) % 4 == 0 ? VersionVector() : seen[(operation / 108) % seen.count].context
            replicas[target].recordWrite(step, context: context, actor: replicaActors[target])
        }
        seen.append(replicas[target])
    }
    return seen + replicas
}

let historyGenerator = Gen.int(in: 0...100_000).array(of: 1...40)

@Suite("Dotted version vector sets and causal contexts")
struct VersionTests {
    @Test func writeWithContextReplacesWhatItSaw() {
        var clock = Clock()
        clock.recordWrite(1, context: VersionVector(), actor: actorA)
        #expect(clock.values == [1])
        // A write without context is concurrent with the first: two siblings.
        clock.recordWrite(2, context: VersionVector(), actor: actorB)
        #expect(Set(clock.values) == [1, 2])
        // A write carrying the read's context replaces both with one value and one new dot.
        let read = clock.context
        let dot = clock.recordWrite(3, context: read, actor: actorA)
        #expect(clock.values == [3])
        #expect(dot == Dot(actor: actorA, counter: 2))
        #expect(clock.context.dominates(read))
    }

    /// A row whose clock is gone (its tombstone was reaped) must not hand out dots that a
    /// context from before still covers.
    @Test func anActorNewToARowStartsAtItsMinimum() {
        var before = Clock()
        before.recordWrite(1, context: VersionVector(), actor: actorA)
        before.recordWrite(2, context: before.context, actor: actorA)
        let staleContext = before.context
        var reaped = Clock()
        let dot = reaped.recordWrite(3, context: VersionVector(), actor: actorA, minimumCounter: 3)
        #expect(dot == Dot(actor: actorA, counter: 3))
        // A write with the stale context leaves the new value beside it.
        reaped.recordWrite(4, context: staleContext, actor: actorB)
        #expect(Set(reaped.values) == [3, 4])
        // An actor whose value survives counts on from its own entry: its values' counters
        // stay consecutive.
        #expect(
            reaped.recordWrite(5, context: VersionVector(), actor: actorA, minimumCounter: 99).counter == 4)
    }

    /// The context a client read before a reap names the coordinator's actor, so the row
    /// learns the actor from the context and has none of its values: the next dot must
    /// still clear the minimum, or it repeats the dot of the reaped tombstone, and a
    /// replica still holding that tombstone takes the new write for it (seed 8609).
    @Test func anActorKnownOnlyFromTheContextStartsAtItsMinimum() {
        var beforeReap = Clock()
        beforeReap.recordWrite(1, context: VersionVector(), actor: actorA)
        let readBeforeTheDelete = beforeReap.context
        let tombstone = beforeReap.recordWrite(0, context: beforeReap.context, actor: actorA)
        var reaped = Clock()
        let dot = reaped.recordWrite(2, context: readBeforeTheDelete, actor: actorA, minimumCounter: 3)
        #expect(dot != tombstone)
        #expect(dot == Dot(actor: actorA, counter: 3))
        // A replica that has not reaped yet sees the new write as newer than its tombstone.
        #expect(beforeReap.merging(reaped).values == [2])
    }

    @Test func staleContextKeepsUnseenVersions() {
        var clock = Clock()
        clock.recordWrite(1, context: VersionVector(), actor: actorA)
        let stale = clock.context
        clock.recordWrite(2, context: stale, actor: actorA)
        // A second writer still holds the context from before value 2 was written.
        clock.recordWrite(3, context: stale, actor: actorB)
        #expect(Set(clock.values) == [2, 3])
    }

    @Test func deletesAreVersionedTombstones() {
        var object = StoredObject()
        let value = Sibling(value: RowValue(bytes: [1], contentType: "text/plain"), timestampMilliseconds: 10)
        object.recordWrite(value, context: VersionVector(), actor: actorA)
        let read = object.context
        var replicaB = object
        object.recordWrite(.tombstone(at: 20), context: read, actor: actorA)
        #expect(object.isDeleted)
        #expect(object.liveValues.isEmpty)
        #expect(object.siblingCount == 1)
        // A replica that missed the delete cannot bring the value back by merging.
        #expect(object.merging(replicaB).isDeleted)
        // A concurrent write (without the delete in its context) survives next to the tombstone.
        replicaB.recordWrite(value, context: read, actor: actorB)
        let merged = object.merging(replicaB)
        #expect(!merged.isDeleted)
        #expect(merged.liveValues == [value])
        #expect(merged.siblingCount == 2)
    }

    @Test func newIncarnationStartsFreshCounters() {
        let reborn = ActorID(node: actorA.node, incarnation: 2)
        var clock = Clock()
        clock.recordWrite(1, context: VersionVector(), actor: actorA)
        clock.recordWrite(2, context: clock.context, actor: actorA)
        var wiped = Clock()
        let dot = wiped.recordWrite(9, context: VersionVector(), actor: reborn)
        // The wiped node's first dot cannot collide with the old incarnation's dots, so
        // merging keeps its write instead of treating it as already seen.
        #expect(dot == Dot(actor: reborn, counter: 1))
        #expect(Set(clock.merging(wiped).values) == [2, 9])
    }

    @Test func mergeIsCommutativeAssociativeAndIdempotent() async {
        await propertyCheck(count: 300, input: historyGenerator, Gen.int(in: 0...1000).array(of: 3)) {
            operations, picks in
            let states = replayHistory(operations)
            let (x, y, z) = (
                states[picks[0] % states.count], states[picks[1] % states.count],
                states[picks[2] % states.count]
            )
            #expect(x.merging(y) == y.merging(x))
            #expect(x.merging(y).merging(z) == x.merging(y.merging(z)))
            // Entry for entry, not only in meaning: a read that finds its replies equal
            // answers one of them unmerged.
            #expect(x.merging(x) == x)
            #expect(Clock().merging(x) == x)
            #expect(x.merging(y).descends(x) && x.merging(y).descends(y))
        }
    }

    @Test func readContextCoversEverythingReturned() async {
        await propertyCheck(count: 300, input: historyGenerator) { operations in
            for state in replayHistory(operations) {
                let context = state.context
                #expect(state.versions.allSatisfy { context.contains($0.dot) })
                #expect(Set(state.versions.map(\.dot)).count == state.siblingCount)
            }
        }
    }

    @Test func writeReplacesExactlyTheCoveredVersions() async {
        await propertyCheck(count: 300, input: historyGenerator, Gen.int(in: 0...1000), Gen.int(in: 0...2)) {
            operations, pick, writer in
            let states = replayHistory(operations)
            let state = states[pick % states.count]
            let context = states[(pick / 7) % states.count].context
            var written = state
            let dot = written.recordWrite(-1, context: context, actor: replicaActors[writer])
            let survivors = state.versions.filter { !context.contains($0.dot) }
            let expected = Set(survivors.map { "\($0.dot)=\($0.value)" } + ["\(dot)=-1"])
            #expect(Set(written.versions.map { "\($0.dot)=\($0.value)" }) == expected)
            #expect(!state.context.contains(dot) && !context.contains(dot))
        }
    }

    /// Writers keep a session context (merged from every read and write reply), as the
    /// client library does. Then each writer has at most one live sibling: siblings never
    /// outnumber concurrent writers, however the replicas interleave.
    @Test func siblingsNeverOutnumberConcurrentWriters() async {
        await propertyCheck(
            count: 200, input: Gen.int(in: 1...5), Gen.int(in: 0...1_000_000).array(of: 1...80)
        ) {
            writers, operations in
            var replicas = [Clock(), Clock(), Clock()]
            var sessions = [VersionVector](repeating: VersionVector(), count: writers)
            for (step, operation) in operations.enumerated() {
                let replica = operation % 3
                let writer = (operation / 3) % writers
                switch (operation / 15) % 3 {
                case 0:
                    replicas[replica] = replicas[replica].merging(replicas[(operation / 45) % 3])
                case 1:
                    sessions[writer] = sessions[writer].merging(replicas[replica].context)
                default:
                    replicas[replica].recordWrite(
                        step, context: sessions[writer], actor: replicaActors[replica])
                    sessions[writer] = sessions[writer].merging(replicas[replica].context)
                }
                #expect(replicas[replica].siblingCount <= writers, "replica \(replica): \(replicas[replica])")
            }
            let converged = replicas[0].merging(replicas[1]).merging(replicas[2])
            #expect(converged.siblingCount <= writers)
        }
    }

    @Test func versionVectorBasics() {
        let vector = VersionVector([
            .init(actor: actorB, counter: 2), .init(actor: actorA, counter: 1),
            .init(actor: actorB, counter: 5),
            .init(actor: actorC, counter: 0),
        ])
        #expect(vector.entries.map(\.actor) == [actorA, actorB])
        #expect(vector.counter(for: actorB) == 5)
        #expect(vector.counter(for: actorC) == 0)
        #expect(vector.dominates(VersionVector([.init(actor: actorB, counter: 4)])))
        #expect(!vector.dominates(VersionVector([.init(actor: actorC, counter: 1)])))
    }
}
