import KVCore

/// The cluster as a ``ClusterClient`` last learned it from a node: the layout (each
/// partition's replicas in preference order) and where each member's HTTP API listens.
///
/// It is a plain value with no I/O, so routing is a pure function of it and of a key:
/// the partition is computed exactly as the nodes compute it
/// (``PartitionID/of(namespace:table:encodedPartitionKey:partitionCount:)`` over the
/// table's partition key), so a request goes to a node that holds the row.
public struct ClusterTopology: Hashable, Sendable {
    /// The layout version this view was taken at.
    public var layoutVersion: UInt64
    /// For each partition, its replicas in preference order.
    public var partitions: [[NodeID]]
    /// Each member's HTTP URL (`http://host:port`), for members that are not gone.
    public var addresses: [NodeID: String]

    /// Creates a view.
    public init(layoutVersion: UInt64, partitions: [[NodeID]], addresses: [NodeID: String]) {
        self.layoutVersion = layoutVersion
        self.partitions = partitions
        self.addresses = addresses
    }

    /// A view from a node's layout and status; member addresses get `scheme`.
    public init(layout: LayoutDescription, status: ClusterStatus, scheme: String) {
        var addresses: [NodeID: String] = [:]
        for member in status.members where member.state != "left" && !member.httpAddress.isEmpty {
            addresses[member.nodeID] = "\(scheme)://\(member.httpAddress)"
        }
        self.init(layoutVersion: layout.version, partitions: layout.partitions, addresses: addresses)
    }

    /// The partition of `key` in a table with `schema`, or `nil` when the layout has no
    /// partitions (or a count no node makes: not a power of two, or above 65,536).
    public func partition(of key: RowKey, schema: KeySchema) -> PartitionID? {
        let count = partitions.count
        guard count > 0, count <= 1 << 16, count & (count - 1) == 0 else { return nil }
        return PartitionID.of(
            namespace: key.table.namespace, table: key.table.table,
            encodedPartitionKey: KeyEncoding.encode(Array(key.parts.prefix(schema.partitionKeyLength))),
            partitionCount: count)
    }

    /// The replicas of `key`, in preference order, that have a known address.
    public func replicas(of key: RowKey, schema: KeySchema) -> [NodeID] {
        guard let partition = partition(of: key, schema: schema) else { return [] }
        return partitions[Int(partition.rawValue)].filter { addresses[$0] != nil }
    }

    /// Every member with a known address, in node id order.
    public var members: [NodeID] { addresses.keys.sorted() }

    /// Every member's URL, in node id order.
    public var memberURLs: [String] { members.compactMap { addresses[$0] } }
}
