import KVCore
import PropertyBased
import Testing

@Suite("PN-counter")
struct CounterTests {
    /// Replicas take increments from random actors and exchange states at random; after
    /// a final exchange every replica holds the sum of all deltas, and merging obeys the
    /// CRDT laws along the way.
    @Test func concurrentIncrementsAreNeverLost() async {
        await propertyCheck(
            count: 300, input: Gen.int(in: 0...1_000_000).array(of: 1...60),
            Gen.int64(in: -1000...1000).array(of: 60)
        ) {
            operations, deltas in
            var replicas = [CounterState(), CounterState(), CounterState()]
            var total: Int64 = 0
            for (step, operation) in operations.enumerated() {
                let replica = operation % 3
                if (operation / 3) % 3 == 0 {
                    let other = replicas[(operation / 9) % 3]
                    let merged = replicas[replica].merging(other)
                    #expect(merged == other.merging(replicas[replica]))
                    #expect(merged.merging(merged) == merged)
                    replicas[replica] = merged
                } else {
                    replicas[replica].add(deltas[step], by: replicaActors[replica])
                    total += deltas[step]
                }
            }
            let all = replicas[0].merging(replicas[1]).merging(replicas[2])
            #expect(all == replicas[2].merging(replicas[0].merging(replicas[1])))
            #expect(all.value == total)
        }
    }

    @Test func countersRoundTripAndRejectGarbage() async throws {
        var state = CounterState()
        state.add(5, by: actorB)
        state.add(-7, by: actorA)
        state.add(Int64.min, by: actorC)
        #expect(try CounterState(decoding: state.encoded()) == state)
        var withEpoch = state
        withEpoch.epochMilliseconds = 1_765_000_000_000
        #expect(try CounterState(decoding: withEpoch.encoded()) == withEpoch)
        #expect(state.encoded().first == 1 && withEpoch.encoded().first == 2)
        #expect(state.value == 5 - 7 &+ Int64.min)
        await propertyCheck(count: 300, input: Gen.uint8().array(of: 0...40)) { bytes in
            // Garbage never crashes the decoder, and without the format byte it is refused.
            if bytes.first != CounterState().encoded().first {
                #expect(throws: KVError.self) { try CounterState(decoding: bytes) }
            } else {
                _ = try? CounterState(decoding: bytes)
            }
        }
        let error = #expect(throws: KVError.self) {
            _ = try CounterState.merged([
                Sibling(value: RowValue(bytes: [1], contentType: "text/plain"), timestampMilliseconds: 0)
            ])
        }
        #expect(error?.code == .notACounter)
        #expect(try CounterState.merged([]) == nil)
    }
}
