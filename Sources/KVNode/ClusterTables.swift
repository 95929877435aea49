import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Tables as cluster metadata: creating, clearing and dropping one changes the
/// metadata, which every node applies to its catalog.
extension ClusterNode {

    public func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor {
        try descriptor.defaults.validate()
        _ = try formedLayout()
        let me = nodeID
        let generation = local.newGeneration(after: 0)
        let outcome = NIOLockedValueBox<TableDescriptor?>(nil)
        try await changeTables { (metadata) throws(KVError) in
            if let existing = metadata.tables[descriptor.name]?.descriptor {
                guard existing.schema == descriptor.schema else {
                    throw KVError(
                        .tableExists, "table \(descriptor.name) exists with key schema \(existing.schema)")
                }
                guard existing.conflictPolicy == descriptor.conflictPolicy else {
                    throw KVError(
                        .tableExists,
                        "table \(descriptor.name) exists with conflict policy \(existing.conflictPolicy.rawValue)"
                    )
                }
                outcome.withLockedValue { $0 = existing }
                return
            }
            guard metadata.hasRoomForAnotherTable else {
                throw KVError(
                    .invalidRequest,
                    "the cluster keeps at most \(ClusterMetadata.maximumTables) table records, dropped tables included"
                )
            }
            var created = descriptor
            created.generation = generation
            metadata.record(descriptor.name, created, by: me)
            outcome.withLockedValue { $0 = created }
        }
        guard let result = outcome.withLockedValue({ $0 }) else {
            throw KVError(.internalError, "creating the table left no record")
        }
        return result
    }

    // Before the cluster has formed this node knows no tables (they live in the
    // cluster's metadata), so it cannot tell a missing table from one it has not heard
    // of yet: it answers `server.unavailable`, never `table.not_found`.

    public func table(_ name: TableName) async throws(KVError) -> TableDescriptor {
        _ = try formedLayout()
        return try local.descriptor(name)
    }

    public func tables(in namespace: String) async throws(KVError) -> [TableDescriptor] {
        _ = try formedLayout()
        return local.tables(in: namespace)
    }

    public func namespaces() async throws(KVError) -> [String] {
        _ = try formedLayout()
        return local.namespaces()
    }

    public func clearTable(_ name: TableName) async throws(KVError) {
        _ = try formedLayout()
        let me = nodeID
        let generation = local.newGeneration(after: try local.descriptor(name).generation)
        try await changeTables { (metadata) throws(KVError) in
            guard var descriptor = metadata.tables[name]?.descriptor else {
                throw KVError(.tableNotFound, "there is no table \(name)")
            }
            descriptor.generation = generation
            metadata.record(name, descriptor, by: me)
        }
    }

    public func dropTable(_ name: TableName) async throws(KVError) {
        _ = try formedLayout()
        let me = nodeID
        try await changeTables { (metadata) throws(KVError) in
            guard metadata.tables[name]?.descriptor != nil else {
                throw KVError(.tableNotFound, "there is no table \(name)")
            }
            metadata.record(name, nil, by: me)
        }
    }

    public func dropNamespace(_ namespace: String) async throws(KVError) {
        try TableName.validate(namespace, what: "namespace")
        _ = try formedLayout()
        let me = nodeID
        try await changeTables { metadata in
            for (name, record) in metadata.tables
            where name.namespace == namespace && record.descriptor != nil {
                metadata.record(name, nil, by: me)
            }
        }
    }

    public func immediateTable(_ name: TableName) -> TableDescriptor? {
        local.immediateTable(name)
    }
}
