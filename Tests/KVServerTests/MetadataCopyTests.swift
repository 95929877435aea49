import KVCluster
import KVCore
import Logging
import Testing

@testable import KVNode

/// A node keeps its metadata's encoding beside it, and takes a peer's copy equal to it
/// byte for byte without decoding or merging it. That shortcut is sound only while the
/// kept encoding is exactly the metadata's, on every node, after every change: that is
/// what these tests check (that an equal copy leaves a node as it was holds with or
/// without the shortcut).
@Suite("metadata copies", .serialized)
struct MetadataCopyTests {
    static func copies(_ node: ClusterNode) -> (metadata: ClusterMetadata, encoded: [UInt8], digest: UInt64) {
        node.state.withLockedValue { ($0.metadata, $0.encodedMetadata, $0.metadataDigest) }
    }

    @Test(
        "each node's kept encoding is its metadata's, once changes spread, and an equal copy changes nothing")
    func keptEncodingStaysInStep() async throws {
        let nodes = try await ServiceFixture.startCluster(
            of: 3, settings: NodeSettings(partitionCount: 16), logger: Logger(label: "metadata-copies"))
        do {
            let names = [table("copies", "one"), table("copies", "two")]
            for (index, name) in names.enumerated() {
                _ = try await nodes[index].createTable(
                    TableDescriptor(name: name, schema: try KeySchema([.string])))
            }
            // Gossip settles on one copy everywhere.
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let encodings = nodes.map { Self.copies($0).encoded }
                if Set(encodings).count == 1,
                    nodes.allSatisfy({ node in
                        names.allSatisfy { name in node.metadata.liveTables[name] != nil }
                    })
                {
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(
                Set(nodes.map { Self.copies($0).encoded }).count == 1, "the nodes' copies did not converge")
            for node in nodes {
                let (metadata, encoded, digest) = Self.copies(node)
                #expect(encoded == metadata.encoded())
                #expect(digest == StableHash.hash(encoded))
                #expect(try ClusterMetadata.decode(encoded) == metadata)
            }

            // A peer's copy equal to a node's own leaves it as it was.
            let before = Self.copies(nodes[1])
            nodes[1].receivedMetadata(Self.copies(nodes[0]).encoded, id: 9, from: nodes[0].nodeID)
            let after = Self.copies(nodes[1])
            #expect(after.metadata == before.metadata)
            #expect(after.encoded == before.encoded)
        } catch {
            for node in nodes { await node.shutdown() }
            throw error
        }
        for node in nodes { await node.shutdown() }
    }
}
