import KVCore
import PropertyBased
import Testing

let secret = (0..<16).map { UInt8($0 * 7 + 3) }
let sealer = ContextSealer(secret: secret)
let rowIdentity = Array("ns\u{0}table\u{0}key".utf8)

let vectorGenerator = zip(
    Gen.int(in: 0...5).array(of: 0...6), Gen.uint64(in: 1...VersionVector.maximumCounter).array(of: 6)
)
.map {
    nodes, counters -> VersionVector in
    VersionVector(
        nodes.enumerated().map { index, node in
            VersionVector.Entry(
                actor: ActorID(
                    node: NodeID(rawValue: UInt64(node) << 60 | 5), incarnation: UInt32(index)),
                counter: counters[index])
        })
}

@Suite("Causal context sealing and stored object format")
struct CodecTests {
    @Test func contextsRoundTrip() async {
        await propertyCheck(input: vectorGenerator) { vector in
            let text = sealer.seal(vector, row: rowIdentity)
            let opened = try sealer.open(text, row: rowIdentity)
            #expect(opened == vector)
        }
    }

    @Test func contextsAreCompact() {
        let vector = VersionVector(replicaActors.map { VersionVector.Entry(actor: $0, counter: 1000) })
        // Three actors: 1 + 1 + 3 × (8 + 1 + 2) + 8 = 43 bytes, 58 characters of base64url.
        #expect(sealer.seal(vector, row: rowIdentity).utf8.count <= 60)
    }

    @Test func everyAlteredByteIsRejected() {
        let vector = VersionVector(replicaActors.map { VersionVector.Entry(actor: $0, counter: 3) })
        let bytes = Base64URL.decode(sealer.seal(vector, row: rowIdentity))!
        for index in bytes.indices {
            for flip: UInt8 in [0x01, 0x80] {
                var altered = bytes
                altered[index] ^= flip
                let error = #expect(throws: KVError.self) {
                    try sealer.open(Base64URL.encode(altered), row: rowIdentity)
                }
                #expect(error?.code == .invalidContext)
            }
        }
    }

    @Test func contextIsBoundToItsRowAndCluster() {
        let vector = VersionVector([.init(actor: actorA, counter: 9)])
        let text = sealer.seal(vector, row: rowIdentity)
        #expect(throws: KVError.self) { try sealer.open(text, row: Array("ns\u{0}table\u{0}other".utf8)) }
        let otherCluster = ContextSealer(secret: [UInt8](repeating: 1, count: 16))
        #expect(throws: KVError.self) { try otherCluster.open(text, row: rowIdentity) }
    }

    @Test func garbageContextsAreRejectedWithoutCrashing() async {
        await propertyCheck(count: 300, input: Gen.uint8().array(of: 0...80)) { bytes in
            #expect(throws: KVError.self) { try sealer.open(Base64URL.encode(bytes), row: rowIdentity) }
        }
        for text in ["", "!!!!", "a", String(repeating: "A", count: ContextSealer.maximumEncodedLength + 1)] {
            let error = #expect(throws: KVError.self) { try sealer.open(text, row: rowIdentity) }
            #expect(error?.code == .invalidContext)
        }
    }

    @Test func storedObjectsRoundTrip() async {
        await propertyCheck(count: 200, input: historyGenerator, Gen.uint8().array(of: 0...20)) {
            operations, payload in
            for clock in replayHistory(operations) {
                let object = Self.object(shapedLike: clock, payload: payload)
                let decoded = try StoredObjectCodec.decode(StoredObjectCodec.encode(object))
                #expect(decoded == object)
            }
        }
    }

    /// A stored object with `clock`'s causal shape and real siblings: values, tombstones,
    /// request ids, expiries, last-writer-wins versions and, with `largeValues`, large
    /// value records.
    static func object(shapedLike clock: Clock, payload: [UInt8], largeValues: Bool = false) -> StoredObject {
        var object = StoredObject()
        for entry in clock.entries {
            object = object.merging(
                StoredObject(validatedEntries: [
                    StoredObject.Entry(
                        actor: entry.actor, counter: entry.counter,
                        values: entry.values.map { step in
                            if step % 4 == 0 {
                                return Sibling.tombstone(
                                    at: Int64(step), requestID: step % 8 == 0 ? "del-\(step)" : nil,
                                    resolvesByLastWriter: step % 5 == 0)
                            }
                            let value =
                                largeValues && step % 6 == 1
                                ? RowValue(
                                    largeValue: LargeValue(
                                        id: UUIDValue(bytes: Array(repeating: UInt8(step % 256), count: 16))!,
                                        length: Int64(step) * 1_000_003, chunkBytes: 1 << 20,
                                        md5: Array(repeating: 7, count: 16), replicas: 3),
                                    contentType: "t/\(step)")
                                : RowValue(
                                    bytes: payload + [UInt8(truncatingIfNeeded: step)],
                                    contentType: "t/\(step)")
                            return Sibling(
                                value: value,
                                timestampMilliseconds: step % 2 == 0
                                    ? -Int64(step) : Int64(step) * 987_654_321,
                                requestID: step % 3 == 0 ? "req-\(step)" : nil,
                                expiresAtMilliseconds: step % 7 == 0 ? Int64(step) * 1000 : nil,
                                resolvesByLastWriter: step % 5 == 0)
                        })
                ])!)
        }
        return object
    }

    /// What frames are sized by (the counted size) and what every write hashes (the
    /// encoding without value bytes) agree with the encoder, which writes in place too.
    @Test func countedAndStrippedEncodingsAgreeWithTheEncoder() async {
        await propertyCheck(count: 200, input: historyGenerator, Gen.uint8().array(of: 0...300)) {
            operations, payload in
            for clock in replayHistory(operations) {
                let object = Self.object(shapedLike: clock, payload: payload, largeValues: true)
                let encoded = StoredObjectCodec.encode(object)
                #expect(StoredObjectCodec.encodedCount(object) == encoded.count)
                #expect(
                    StoredObjectCodec.encodeWithoutValueBytes(object)
                        == StoredObjectCodec.encode(object.withoutValueBytes))
                var writer = BinaryWriter()
                writer.write(7)
                StoredObjectCodec.write(object, to: &writer)
                #expect(writer.bytes == [7] + encoded)
                #expect((try? StoredObjectCodec.decode(encoded)) == object)
            }
        }
    }

    @Test func storedObjectDecoderNeverCrashesOnArbitraryBytes() async {
        await propertyCheck(count: 500, input: Gen.uint8().array(of: 0...60)) { bytes in
            _ = try? StoredObjectCodec.decode([StoredObjectCodec.formatVersion] + bytes)
            _ = try? StoredObjectCodec.decode(bytes)
        }
    }

    /// A counter or timestamp that only a faulty peer or a damaged file could hold is
    /// refused where it is decoded: kept, it would make the row's next write overflow.
    @Test func countersAndTimestampsNearTheLimitAreRefused() throws {
        for (counter, timestamp, accepted) in [
            (VersionVector.maximumCounter, Sibling.timestampRange.upperBound, true),
            (VersionVector.maximumCounter + 1, 5, false), (UInt64.max, 5, false),
            (7, Sibling.timestampRange.upperBound + 1, false), (7, Int64.max, false),
            (7, Sibling.timestampRange.lowerBound, true), (7, Int64.min, false),
        ] {
            let object = StoredObject(validatedEntries: [
                StoredObject.Entry(
                    actor: actorA, counter: counter,
                    values: [Sibling(value: RowValue(bytes: [1]), timestampMilliseconds: timestamp)])
            ])!
            do {
                #expect(try StoredObjectCodec.decode(StoredObjectCodec.encode(object)) == object)
                #expect(accepted, "\(counter), \(timestamp)")
            } catch {
                #expect(!accepted && error.code == .corruptObject, "\(counter), \(timestamp)")
            }
            let context = sealer.seal(
                VersionVector([.init(actor: actorA, counter: counter)]), row: rowIdentity)
            do {
                _ = try sealer.open(context, row: rowIdentity)
                #expect(counter <= VersionVector.maximumCounter, "\(counter)")
            } catch {
                #expect(counter > VersionVector.maximumCounter && error.code == .invalidContext, "\(counter)")
            }
        }
    }

    @Test func storedObjectDecoderRejectsTruncation() throws {
        var object = StoredObject()
        object.recordWrite(
            Sibling(value: RowValue(bytes: [1, 2, 3], contentType: "text/plain"), timestampMilliseconds: 5),
            context: VersionVector(), actor: actorA)
        let bytes = StoredObjectCodec.encode(object)
        for length in 0..<bytes.count {
            let error = #expect(throws: KVError.self) {
                try StoredObjectCodec.decode(Array(bytes.prefix(length)))
            }
            #expect(error?.code == .corruptObject)
        }
    }
}
