import Foundation
import KVCore
import KVNode
import Testing

/// Reads a node answers on the front end's thread (``ClusterNode/immediateGet(_:)``)
/// must answer exactly what the coordinator answers, and only where the coordinator
/// would read this node's replica alone.
@Suite("Local reads")
struct LocalReadTests {
    /// Rows of every shape: a value, siblings, a deleted row, an expiring row, and one
    /// never written.
    static func writeRows(_ node: ClusterNode, in name: TableName) async throws -> [RowKey] {
        let keys = (0..<5).map { RowKey(table: name, parts: [.string("row\($0)")]) }
        _ = try await node.put(keys[0], value: text("plain"), options: WriteOptions())
        _ = try await node.put(keys[1], value: text("left"), options: WriteOptions())
        _ = try await node.put(keys[1], value: text("right"), options: WriteOptions())
        _ = try await node.put(keys[2], value: text("gone"), options: WriteOptions())
        _ = try await node.delete(
            keys[2], options: WriteOptions(context: try await node.get(keys[2]).context))
        var expiring = WriteOptions()
        expiring.expiresAtMilliseconds = Int64(Date().timeIntervalSince1970 * 1000) + 3_600_000
        _ = try await node.put(keys[3], value: text("soon"), options: expiring)
        return keys
    }

    @Test("one node answers every read itself, the same as through its coordinator")
    func oneNode() async throws {
        try await Self.using(.inProcess) { nodes in
            let node = nodes[0]
            let name = table("local", "rows")
            _ = try await node.createTable(TableDescriptor(name: name, schema: try KeySchema([.string])))
            let keys = try await Self.writeRows(node, in: name)
            #expect(try await node.get(keys[1]).siblings.count == 2)
            for key in keys {
                let immediate = try node.immediateGet(key)
                #expect(immediate != nil, "\(key.parts) is answered where it arrives")
                #expect(immediate == (try await node.get(key, options: ReadOptions())))
            }
            // A table dropped and created again starts empty: the fast path checks the
            // table's generation as the coordinator's load does.
            try await node.dropTable(name)
            _ = try await node.createTable(TableDescriptor(name: name, schema: try KeySchema([.string])))
            for key in keys {
                let coordinated = try await node.get(key, options: ReadOptions())
                #expect(coordinated.isAbsent)
                #expect(try node.immediateGet(key).map { $0 == coordinated } ?? true)
            }
        }
    }

    @Test("in a cluster, only the replica of an n=1 table answers alone")
    func cluster() async throws {
        try await Self.using(.cluster) { nodes in
            let (replicated, single) = try await Self.createTables(on: nodes[0], named: "n3", "n1")
            for key in try await Self.writeRows(nodes[0], in: replicated) {
                for node in nodes {
                    #expect(try node.immediateGet(key) == nil, "N=3 reads go through the coordinator")
                }
            }
            for key in try await Self.writeRows(nodes[0], in: single) {
                var answered = 0
                for node in nodes {
                    guard let immediate = try node.immediateGet(key) else { continue }
                    answered += 1
                    #expect(immediate == (try await node.get(key, options: ReadOptions())))
                    #expect(immediate == (try await nodes[0].get(key, options: ReadOptions())))
                }
                #expect(answered == 1, "exactly the key's one replica answers \(key.parts) alone")
            }
        }
    }

    /// Creates two tables of one string key part on `node`: `replicated` with the
    /// default quorum (N=3) and `single` with n=1.
    static func createTables(on node: ClusterNode, named replicated: String, _ single: String) async throws
        -> (replicated: TableName, single: TableName)
    {
        let names = (table("local", replicated), table("local", single))
        _ = try await node.createTable(TableDescriptor(name: names.0, schema: try KeySchema([.string])))
        _ = try await node.createTable(
            TableDescriptor(
                name: names.1, schema: try KeySchema([.string]),
                defaults: ReplicationDefaults(n: 1, r: 1, w: 1, dw: 1)))
        return names
    }

    static func using(_ kind: ServiceKind, _ body: ([ClusterNode]) async throws -> Void) async throws {
        let fixture = try await ServiceFixture(kind)
        do {
            try await body(fixture.cluster)
        } catch {
            await fixture.shutdown()
            throw error
        }
        await fixture.shutdown()
    }
}
