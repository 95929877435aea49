import KVCore
import KVReplica
import KVStorage

/// The table catalog as this node keeps it: a copy of the cluster metadata's tables, in
/// memory and as ``CatalogRecord``s in the metadata keyspace.
extension NodeStorage {
    /// The store's own tables, which every node knows without metadata: the chunks of
    /// large values (``LargeValue/chunkTable``) and the registered update functions
    /// (``UpdateFunctionTable``). They are in the catalog so that every
    /// maintenance procedure treats their rows like any other, but never in a listing,
    /// and a metadata change never drops them.
    static let systemTables: [TableName: TableDescriptor] = [
        LargeValue.chunkTable.name: LargeValue.chunkTable,
        UpdateFunctionTable.descriptor.name: UpdateFunctionTable.descriptor,
    ]

    /// Reads every catalog record.
    static func loadCatalog(from engine: any StorageEngine) throws(KVError) -> [TableName:
        TableDescriptor]
    {
        try storageWork("loading the table catalog") {
            var tables = systemTables
            for entry in try engine.entries(in: .prefixed(by: CatalogRecord.prefix), of: .metadata) {
                let descriptor = try CatalogRecord.decode(entry.value)
                tables[descriptor.name] = descriptor
            }
            return tables
        }
    }

    /// A fresh table generation, different from `previous`.
    func newGeneration(after previous: UInt64) -> UInt64 {
        var random = SystemRandomNumberGenerator()
        var generation = random.next() as UInt64
        while generation == previous || generation == 0 { generation = random.next() }
        return generation
    }

    /// The tables of `namespace`, in name order.
    func tables(in namespace: String) -> [TableDescriptor] {
        catalog.withLockedValue { $0.values.filter { $0.name.namespace == namespace && !$0.name.isSystem } }
            .sorted {
                $0.name < $1.name
            }
    }

    /// Every namespace that has a table, in order.
    func namespaces() -> [String] {
        Array(Set(catalog.withLockedValue { $0.keys.filter { !$0.isSystem }.map(\.namespace) })).sorted()
    }

    /// Range deletes of every row of `name`, one per partition.
    func deleteRows(of name: TableName, into batch: inout WriteBatch) {
        for partition in 0..<identity.partitionCount {
            let prefix = StorageLayout.tablePrefix(
                partition: PartitionID(rawValue: UInt32(partition)), namespace: name.namespace,
                table: name.table)
            batch.deleteRange(.prefixed(by: prefix))
            batch.deleteRange(.prefixed(by: prefix), in: .antiEntropy)
        }
    }

    /// Makes `tables` the catalog, as a cluster's metadata dictates: rows of tables that
    /// were dropped, or cleared (their generation changed), are deleted; `extra` is
    /// written in the same atomic batch (the cluster metadata it came from). Blocks: run
    /// it on the thread pool. Returns whether rows were deleted.
    @discardableResult
    func adoptCatalog(_ tables: [TableName: TableDescriptor], writing extra: [(key: [UInt8], value: [UInt8])])
        throws(KVError) -> Bool
    {
        let tables = tables.merging(Self.systemTables) { _, system in system }
        return try withAllRowLocks { () throws(KVError) -> Bool in
            let current = catalog.withLockedValue { $0 }
            var batch = WriteBatch()
            var deleted = false
            for (name, old) in current where tables[name]?.generation != old.generation {
                deleted = true
                deleteRows(of: name, into: &batch)
                if tables[name] == nil { batch.delete(CatalogRecord.key(name), in: .metadata) }
            }
            for (name, descriptor) in tables where current[name] != descriptor {
                batch.put(CatalogRecord.key(name), CatalogRecord.encode(descriptor), in: .metadata)
            }
            for entry in extra { batch.put(entry.key, entry.value, in: .metadata) }
            if !batch.isEmpty { try write(batch) }
            catalog.withLockedValue { $0 = tables }
            return deleted
        }
    }
}
