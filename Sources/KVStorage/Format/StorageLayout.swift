import KVCore

/// How rows map to keys of the ``Keyspace/data`` keyspace.
///
/// `partition (4 bytes, big-endian) · namespace · table · encoded key`, where namespace
/// and table use the escaped string encoding of ``KeyEncoding``. Leading with the
/// partition makes "every row of one partition" a single contiguous range, which handoff,
/// anti-entropy and dropping a partition need; a table scan across partitions merges one
/// cursor per partition, which a cluster scan does anyway.
public enum StorageLayout {
    /// The data key of a row.
    public static func dataKey(partition: PartitionID, namespace: String, table: String, key: [UInt8])
        -> [UInt8]
    {
        var result = tablePrefix(partition: partition, namespace: namespace, table: table)
        result.append(contentsOf: key)
        return result
    }

    /// The prefix shared by every row of one table in one partition.
    public static func tablePrefix(partition: PartitionID, namespace: String, table: String) -> [UInt8] {
        var result = partitionPrefix(partition)
        KeyEncoding.append(.string(namespace), to: &result)
        KeyEncoding.append(.string(table), to: &result)
        return result
    }

    /// The 4-byte prefix of every row of `partition`.
    public static func partitionPrefix(_ partition: PartitionID) -> [UInt8] {
        let raw = partition.rawValue
        return [
            UInt8(raw >> 24), UInt8(truncatingIfNeeded: raw >> 16), UInt8(truncatingIfNeeded: raw >> 8),
            UInt8(truncatingIfNeeded: raw),
        ]
    }

    /// Where a new owner keeps its cursor of receiving `partition` for layout `version`
    /// (``Keyspace/metadata``).
    public static func transferCursorKey(version: UInt64, partition: PartitionID) -> [UInt8] {
        var writer = BinaryWriter(capacity: MetadataKeys.transferCursorPrefix.count + 12)
        writer.writeRaw(MetadataKeys.transferCursorPrefix)
        writer.writeFixed(version)
        writer.writeRaw(partitionPrefix(partition))
        return writer.bytes
    }

    /// The key in ``Keyspace/hints`` of the hint taken as `sequence` for `target`:
    /// `target (8 bytes) · sequence (8 bytes)`, both big-endian, so one target's hints
    /// are one range in the order they were taken.
    public static func hintKey(target: NodeID, sequence: UInt64) -> [UInt8] {
        var writer = BinaryWriter(capacity: 16)
        writer.writeFixed(target.rawValue)
        writer.writeFixed(sequence)
        return writer.bytes
    }

    /// The target and sequence of a hint key, or `nil` if it is not one.
    public static func parseHintKey(_ bytes: [UInt8]) -> (target: NodeID, sequence: UInt64)? {
        guard bytes.count == 16 else { return nil }
        var reader = BinaryReader(bytes)
        guard let target: UInt64 = try? reader.readFixed(), let sequence: UInt64 = try? reader.readFixed()
        else { return nil }
        return (NodeID(rawValue: target), sequence)
    }

    /// Every row of `partition`.
    public static func partitionRange(_ partition: PartitionID) -> EncodedKeyRange {
        .prefixed(by: partitionPrefix(partition))
    }
}
