import KVCore
import KVStorage
import Testing

/// The bytes of every key this store writes, and of a catalog record, pinned: a data
/// directory written by one version must be read by the next, so a change here is a
/// change of the storage format and must come with a migration.
@Suite("Storage format")
struct StorageFormatTests {
    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined()
    }

    @Test("the metadata records keep their keys")
    func metadataKeys() {
        #expect(String(decoding: MetadataKeys.nodeIdentity, as: UTF8.self) == "node/identity")
        #expect(String(decoding: MetadataKeys.clusterMetadata, as: UTF8.self) == "cluster/metadata")
        #expect(
            String(decoding: MetadataKeys.antiEntropyIndexComplete, as: UTF8.self)
                == "anti-entropy/index-complete")
        #expect(String(decoding: MetadataKeys.tableCatalogPrefix, as: UTF8.self) == "catalog/table/")
        #expect(String(decoding: MetadataKeys.transferCursorPrefix, as: UTF8.self) == "handoff/cursor/")
        #expect(Keyspace.allCases.map(\.rawValue) == ["data", "metadata", "hints", "anti_entropy"])
    }

    @Test("a row's data key is its partition, namespace, table and encoded key")
    func dataKeys() {
        let key = StorageLayout.dataKey(
            partition: PartitionID(rawValue: 0x0102_0304), namespace: "app", table: "t",
            key: KeyEncoding.encode([.string("k"), .int64(1)]))
        #expect(Self.hex(key) == "01020304" + "6170700001" + "740001" + "6b0001" + "8000000000000001")
        #expect(StorageLayout.partitionRange(PartitionID(rawValue: 0x0102_0304)).contains(key))
    }

    @Test("a transfer cursor's key names the layout version and the partition")
    func transferCursorKeys() {
        let key = StorageLayout.transferCursorKey(version: 7, partition: PartitionID(rawValue: 9))
        #expect(Self.hex(key) == Self.hex(Array("handoff/cursor/".utf8)) + "0000000000000007" + "00000009")
    }

    @Test("one target's hint keys sort in the order they were taken, and parse back")
    func hintKeys() {
        let target = NodeID(rawValue: 0xABCD)
        let keys = [1, 2, 255, 256, 70_000].map {
            StorageLayout.hintKey(target: target, sequence: UInt64($0))
        }
        #expect(keys == keys.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(Self.hex(keys[3]) == "000000000000abcd" + "0000000000000100")
        #expect(StorageLayout.parseHintKey(keys[3])?.sequence == 256)
        #expect(StorageLayout.parseHintKey(keys[3])?.target == target)
        #expect(StorageLayout.parseHintKey(Array(keys[3].dropLast())) == nil)
    }

    @Test("a catalog record keeps its bytes, round-trips, and a damaged one is refused")
    func catalogRecords() throws {
        let descriptor = TableDescriptor(
            name: try TableName(namespace: "app", table: "users"),
            schema: try KeySchema([.string, .int64], partitionKeyLength: 1),
            defaults: ReplicationDefaults(n: 3, r: 2, w: 2, dw: 1, pr: 0, pw: 0), generation: 0x42)
        #expect(
            Self.hex(CatalogRecord.key(descriptor.name))
                == Self.hex(Array("catalog/table/".utf8)) + "6170700001" + "75736572730001")
        let encoded = CatalogRecord.encode(descriptor)
        #expect(
            Self.hex(encoded)
                == "01" + "03617070" + "057573657273" + "02" + "0103" + "01" + "030202010000"
                + "0000000000000042")
        #expect(try CatalogRecord.decode(encoded) == descriptor)
        var damaged = encoded
        damaged[0] = 9
        #expect(throws: KVError.self) { try CatalogRecord.decode(damaged) }
        #expect(throws: KVError.self) { try CatalogRecord.decode(Array(encoded.dropLast())) }
        // A damaged partition-key length (byte 14) of 2^64 - 1 is refused, not converted
        // with a trap.
        #expect(encoded[14] == 1)
        let huge = Array(encoded[..<14]) + [UInt8](repeating: 0xFF, count: 9) + [1] + Array(encoded[15...])
        #expect(throws: KVError.self) { try CatalogRecord.decode(huge) }
    }
}
