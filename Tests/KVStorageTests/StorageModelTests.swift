import KVCore
import KVStorage
import PropertyBased
import Testing

/// Model-based tests: random operation sequences run against each engine and against a
/// plain dictionary, with random close-and-reopen, and every read must agree.
@Suite("Storage engines behave like a dictionary")
struct StorageModelTests {
    /// A small key space (with zero and 0xFF bytes) makes overwrites, deletes of present
    /// keys and range edges common.
    static func key(_ number: Int) -> [UInt8] {
        let alphabet: [[UInt8]] = [
            [0], [0, 0], [0, 0xFF], [1], [1, 0], [7], [0x61], [0x61, 0x62], [0xFE], [0xFF], [0xFF, 0],
            [0xFF, 0xFF],
        ]
        return alphabet[number % alphabet.count]
    }

    /// The same small key space behind a 2,999-byte prefix: keys longer than an index
    /// can hold (InnoDB's 3,072 bytes), many sharing their first 3,000 bytes, so an
    /// engine that splits long keys must still keep byte order, ranges and deletes exact.
    static func longKey(_ number: Int) -> [UInt8] {
        [UInt8](repeating: 0x6B, count: 2999) + key(number)
    }

    static let keyspaces: [Keyspace] = [.data, .metadata]

    @Test(arguments: EngineKind.allCases)
    func randomOperationsMatchTheModel(kind: EngineKind) async throws {
        await checkAgainstModel(kind: kind, key: Self.key)
    }

    @Test(arguments: EngineKind.allCases)
    func randomOperationsOnLongKeysMatchTheModel(kind: EngineKind) async throws {
        await checkAgainstModel(kind: kind, key: Self.longKey)
    }

    func checkAgainstModel(kind: EngineKind, key: @escaping @Sendable (Int) -> [UInt8]) async {
        await propertyCheck(
            count: kind == .memory ? 200 : 60, input: Gen.int(in: 0...Int(Int32.max)).array(of: 1...60)
        ) {
            operations in
            let fixture = EngineFixture(kind)
            var engine = try fixture.open()
            var model: [Keyspace: [[UInt8]: [UInt8]]] = [.data: [:], .metadata: [:]]
            var log: [String] = []
            defer { try? engine.close() }

            func expectModelMatches(
                _ range: EncodedKeyRange, _ keyspace: Keyspace, _ direction: ScanDirection
            ) throws {
                let expected = model[keyspace]!.filter { range.contains($0.key) }
                    .sorted { $0.key.lexicographicallyPrecedes($1.key) }
                    .map { StorageEntry(key: $0.key, value: $0.value) }
                let actual = try engine.entries(in: range, of: keyspace, direction: direction)
                #expect(actual == (direction == .forward ? expected : expected.reversed()), "after \(log)")
            }

            for operation in operations {
                let keyspace = Self.keyspaces[(operation >> 4) % 2]
                let first = key(operation >> 5)
                let second = key(operation >> 9)
                switch operation % 16 {
                case 0...5:
                    // A batch of one to three puts and deletes.
                    var batch = WriteBatch()
                    for step in 0...(operation >> 13) % 3 {
                        let rowKey = key(operation >> (13 + 4 * step))
                        if (operation >> (15 + 4 * step)) % 3 == 0 {
                            batch.delete(rowKey, in: keyspace)
                            model[keyspace]![rowKey] = nil
                        } else {
                            let value = [UInt8(truncatingIfNeeded: operation >> step)]
                            batch.put(rowKey, value, in: keyspace)
                            model[keyspace]![rowKey] = value
                        }
                    }
                    log.append("batch \(batch.operations)")
                    try engine.write(batch, durability: operation % 2 == 0 ? .synced : .buffered)
                case 6:
                    let range = EncodedKeyRange(lowerBound: first, upperBound: second)
                    var batch = WriteBatch()
                    batch.deleteRange(range, in: keyspace)
                    log.append("deleteRange \(range)")
                    try engine.write(batch)
                    model[keyspace] = model[keyspace]!.filter { !range.contains($0.key) }
                case 7...9:
                    let value = try engine.get(first, in: keyspace)
                    #expect(value == model[keyspace]![first], "get \(first) after \(log)")
                case 10, 11:
                    let range = EncodedKeyRange(
                        lowerBound: first, upperBound: operation % 3 == 0 ? nil : second)
                    try expectModelMatches(range, keyspace, operation % 4 < 2 ? .forward : .reverse)
                case 12:
                    try expectModelMatches(.prefixed(by: first), keyspace, .forward)
                case 13:
                    // A snapshot must keep showing the state it was taken in.
                    let snapshot = try engine.snapshot()
                    let frozen = model
                    var batch = WriteBatch()
                    batch.put(first, [0xAB], in: keyspace)
                    try engine.write(batch)
                    model[keyspace]![first] = [0xAB]
                    log.append("snapshot, then put \(first)")
                    for space in Self.keyspaces {
                        let seen = try snapshot.entries(in: .all, of: space)
                        let expected = frozen[space]!.sorted { $0.key.lexicographicallyPrecedes($1.key) }
                        #expect(seen.map(\.key) == expected.map(\.key), "snapshot after \(log)")
                        #expect(seen.map(\.value) == expected.map(\.value), "snapshot after \(log)")
                    }
                default:
                    log.append("reopen")
                    try engine.close()
                    engine = try fixture.open()
                }
            }
            for keyspace in Self.keyspaces {
                try expectModelMatches(.all, keyspace, .forward)
            }
        }
    }
}
