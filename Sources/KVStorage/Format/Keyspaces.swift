import KVCore

// The storage format's home: every keyspace, and every key this store writes in it.
// The values' codecs live with their types and carry their own format version byte
// (docs/storage.md lists them); the keys live here, so that what a data directory
// holds can be read off one file, and a change to it shows up in one place.

/// A separate ordered key space inside one engine.
///
/// Data rows, node metadata, hints and anti-entropy state never share a key range, so
/// iterating or dropping one cannot touch another. RocksDB maps each to a column family.
public enum Keyspace: String, CaseIterable, Sendable, Hashable {
    /// Data rows, keyed by ``StorageLayout/dataKey(partition:namespace:table:key:)``.
    case data
    /// Node and cluster metadata, keyed by ``MetadataKeys``.
    case metadata
    /// Hints held for replicas that were down, keyed by
    /// ``StorageLayout/hintKey(target:sequence:)``.
    case hints
    /// The anti-entropy index: one entry per row, under the row's data key.
    case antiEntropy = "anti_entropy"
}

/// The keys of the ``Keyspace/metadata`` records.
public enum MetadataKeys {
    /// The node's identity (`NodeIdentity`): id, incarnation, context secret, partitions.
    public static let nodeIdentity = Array("node/identity".utf8)
    /// The node's copy of the cluster metadata (`ClusterMetadata`).
    public static let clusterMetadata = Array("cluster/metadata".utf8)
    /// Present once the anti-entropy index covers every row.
    public static let antiEntropyIndexComplete = Array("anti-entropy/index-complete".utf8)
    /// The prefix of the table catalog's records (``CatalogRecord``).
    public static let tableCatalogPrefix = Array("catalog/table/".utf8)
    /// The prefix of the stored transfer cursors
    /// (``StorageLayout/transferCursorKey(version:partition:)``).
    public static let transferCursorPrefix = Array("handoff/cursor/".utf8)
}
