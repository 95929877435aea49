import KVCore
import PropertyBased
import Testing

/// Compares two tuples of one schema part by part, the order the encoding must keep.
func tupleOrder(_ left: [KeyPart], _ right: [KeyPart]) -> Bool {
    for (a, b) in zip(left, right) {
        switch (a, b) {
        case (.string(let x), .string(let y)) where x != y:
            return Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8))
        case (.bytes(let x), .bytes(let y)) where x != y: return x.lexicographicallyPrecedes(y)
        case (.int64(let x), .int64(let y)) where x != y: return x < y
        case (.uuid(let x), .uuid(let y)) where x != y: return x < y
        default: continue
        }
    }
    return left.count < right.count
}

/// Small byte alphabets make equal prefixes, zero bytes and 0xFF bytes common.
let interestingBytes = Gen.element(of: [0x00, 0x01, 0x02, 0x61, 0x62, 0xFE, 0xFF] as [UInt8]).map { $0! }
    .array(of: 0...4)
let interestingInt = Gen.element(of: [Int64.min, -257, -1, 0, 1, 255, 256, Int64.max]).map { $0! }
let keySchema = try! KeySchema([.bytes, .int64, .string], partitionKeyLength: 1)

let keyGenerator = zip(interestingBytes, interestingInt, interestingBytes).map {
    bytes, number, text -> [KeyPart] in
    [.bytes(bytes), .int64(number), .string(String(decoding: text.filter { $0 < 0x80 }, as: UTF8.self))]
}

@Suite("Key schema and order-preserving key encoding")
struct KeyTests {
    @Test func encodingPreservesTupleOrder() async {
        await propertyCheck(count: 500, input: keyGenerator, keyGenerator) { left, right in
            let encodedLeft = KeyEncoding.encode(left)
            let encodedRight = KeyEncoding.encode(right)
            #expect(tupleOrder(left, right) == encodedLeft.lexicographicallyPrecedes(encodedRight))
            #expect((left == right) == (encodedLeft == encodedRight))
        }
    }

    @Test func encodingRoundTrips() async {
        await propertyCheck(count: 300, input: keyGenerator) { key in
            let decoded = try KeyEncoding.decode(KeyEncoding.encode(key), schema: keySchema)
            #expect(decoded == key)
        }
    }

    @Test func prefixBoundsCoverExactlyTheirExtensions() async {
        await propertyCheck(count: 500, input: keyGenerator, keyGenerator, Gen.int(in: 0...3)) {
            key, other, length in
            let prefix = Array(other.prefix(length))
            let range = try KeyRange.prefix(prefix).encoded(for: keySchema)
            let hasPrefix = Array(key.prefix(length)) == prefix
            #expect(range.contains(KeyEncoding.encode(key)) == hasPrefix, "\(key) vs prefix \(prefix)")
        }
    }

    @Test func rangesAreInclusiveAtBothEnds() async {
        await propertyCheck(count: 300, input: keyGenerator, keyGenerator, keyGenerator) { key, start, end in
            let range = try KeyRange(start: start, end: end).encoded(for: keySchema)
            let expected = !tupleOrder(key, start) && !tupleOrder(end, key)
            #expect(range.contains(KeyEncoding.encode(key)) == expected)
        }
    }

    @Test func stringPrefixDoesNotCoverLongerString() throws {
        let schema = try KeySchema([.string, .int64])
        let range = try KeyRange.prefix([.string("a")]).encoded(for: schema)
        #expect(range.contains(KeyEncoding.encode([.string("a"), .int64(7)])))
        #expect(!range.contains(KeyEncoding.encode([.string("ab"), .int64(7)])))
        #expect(!range.contains(KeyEncoding.encode([.string("a\u{0}"), .int64(7)])))
    }

    /// kvlayer's binary-safety cases: these byte strings must sort exactly like this.
    @Test func kvlayerBinaryOrder() {
        let ordered: [[UInt8]] = [[0], [0, 0], [0, 1], [1], [1, 0], [2]]
        let encoded = ordered.map { KeyEncoding.encode([.bytes($0)]) }
        #expect(encoded == encoded.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(Set(encoded).count == ordered.count)
        // 'a\0b', 'a%b' and 'a%00b' stay distinct.
        let lookalikes = ["a\u{0}b", "a%b", "a%00b"].map { KeyEncoding.encode([.string($0)]) }
        #expect(Set(lookalikes).count == 3)
    }

    @Test func everyByteValueRoundTrips() throws {
        let schema = try KeySchema([.bytes, .bytes])
        let all = (0...255).map { UInt8($0) }
        let key: [KeyPart] = [.bytes(all), .bytes(all.reversed())]
        #expect(try KeyEncoding.decode(KeyEncoding.encode(key), schema: schema) == key)
    }

    @Test func integersAndUUIDsSortNumerically() throws {
        let numbers: [Int64] = [.min, -1_000_000, -1, 0, 1, 42, .max]
        let encoded = numbers.map { KeyEncoding.encode([.int64($0)]) }
        #expect(encoded == encoded.sorted { $0.lexicographicallyPrecedes($1) })
        let low = try #require(UUIDValue("00000000-0000-0000-0000-0000000000ff"))
        let high = try #require(UUIDValue("01000000-0000-0000-0000-000000000000"))
        #expect(KeyEncoding.encode([.uuid(low)]).lexicographicallyPrecedes(KeyEncoding.encode([.uuid(high)])))
    }

    @Test func uuidParsesAndPrints() {
        let text = "123e4567-e89b-12d3-a456-426614174000"
        #expect(UUIDValue(text)?.description == text)
        #expect(UUIDValue("123E4567-E89B-12D3-A456-426614174000")?.description == text)
        #expect(UUIDValue("123e4567e89b12d3a456426614174000") == nil)
        #expect(UUIDValue("123e4567-e89b-12d3-a456-42661417400g") == nil)
        #expect(UUIDValue("") == nil)
    }

    @Test func schemaRejectsWrongArityAndTypes() throws {
        let schema = try KeySchema([.string, .int64])
        #expect(throws: Never.self) { try schema.validate([.string("a"), .int64(1)]) }
        let arity = #expect(throws: KVError.self) { try schema.validate([.string("a")]) }
        #expect(arity?.code == .keyArity)
        let tooLong = #expect(throws: KVError.self) {
            try schema.validate([.string("a"), .int64(1), .int64(2)])
        }
        #expect(tooLong?.code == .keyArity)
        let type = #expect(throws: KVError.self) { try schema.validate([.int64(1), .int64(1)]) }
        #expect(type?.code == .keyPartType)
        let prefix = #expect(throws: KVError.self) {
            try KeyRange(start: [.bytes([1])]).encoded(for: schema)
        }
        #expect(prefix?.code == .keyPartType)
    }

    @Test func schemaValidatesItself() throws {
        #expect(throws: KVError.self) { try KeySchema([]) }
        #expect(throws: KVError.self) { try KeySchema([.string], partitionKeyLength: 2) }
        #expect(throws: KVError.self) { try KeySchema([.string], partitionKeyLength: 0) }
        #expect(throws: KVError.self) { try KeySchema(Array(repeating: .int64, count: 17)) }
        #expect(try KeySchema([.string, .int64]).partitionKeyLength == 2)
    }

    @Test func decodingRejectsCorruptKeys() throws {
        let schema = try KeySchema([.string])
        for bad: [UInt8] in [
            [0x61], [0x61, 0x00], [0x61, 0x00, 0x07], [0x61, 0x00, 0x01, 0x00], [0xC3, 0x00, 0x01],
        ] {
            let error = #expect(throws: KVError.self) { try KeyEncoding.decode(bad, schema: schema) }
            #expect(error?.code == .corruptKey)
        }
    }
}
