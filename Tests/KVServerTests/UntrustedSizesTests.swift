import KVClient
import KVCore
import Testing

/// Sizes that come from another program (a layout from a server, a large value's record
/// from a peer) are used without trapping, whatever they claim.
@Suite("Sizes from elsewhere")
struct UntrustedSizesTests {
    @Test("a layout with more partitions than any node makes routes nowhere instead of trapping")
    func topologyWithTooManyPartitions() throws {
        let key = RowKey(table: try TableName(namespace: "app", table: "t"), parts: [.string("k")])
        let schema = try KeySchema([.string], partitionKeyLength: 1)
        let node = NodeID(rawValue: 1)
        for (count, routed) in [(1 << 16, true), (1 << 17, false), (3, false)] {
            let topology = ClusterTopology(
                layoutVersion: 1, partitions: Array(repeating: [node], count: count),
                addresses: [node: "http://127.0.0.1:1"])
            #expect((topology.partition(of: key, schema: schema) != nil) == routed, "\(count)")
            #expect(topology.replicas(of: key, schema: schema) == (routed ? [node] : []), "\(count)")
        }
    }

    @Test("a large value claiming nearly the largest length has chunk ranges that end at it")
    func largeValueNearTheLargestLength() throws {
        let chunkBytes = 1 << 20
        let value = LargeValue(
            id: try #require(UUIDValue(bytes: Array(repeating: 7, count: 16))), length: Int64.max - 5,
            chunkBytes: chunkBytes,
            md5: Array(repeating: 0, count: 16), replicas: 3)
        let last = value.chunkCount - 1
        #expect(value.chunkRange(last).upperBound == Int64.max - 5)
        #expect(value.chunkRange(0) == 0..<Int64(chunkBytes))
    }
}
