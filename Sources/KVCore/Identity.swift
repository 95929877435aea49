/// The permanent identity of a node, chosen at random when the node first starts and
/// stored with its data. Printed as 16 hexadecimal digits.
public struct NodeID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Parses 1 to 16 hexadecimal digits.
    public init?(_ text: String) {
        guard (1...16).contains(text.utf8.count), let value = UInt64(text, radix: 16) else { return nil }
        rawValue = value
    }

    public var description: String {
        let digits = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The identity under which a node coordinates writes: its ``NodeID`` plus an
/// incarnation number.
///
/// A node takes a new incarnation whenever it starts without the durable record of its
/// last one (an empty or restored data directory). Its causal counters then start from
/// zero under a fresh actor, so it can never reissue a dot that some other replica
/// already holds for different data (Riak's KV679 problem).
public struct ActorID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The node.
    public var node: NodeID
    /// The node's incarnation, starting at 1.
    public var incarnation: UInt32

    /// Creates an actor id.
    public init(node: NodeID, incarnation: UInt32) {
        self.node = node
        self.incarnation = incarnation
    }

    public var description: String { "\(node)/\(incarnation)" }

    public static func < (lhs: ActorID, rhs: ActorID) -> Bool {
        (lhs.node, lhs.incarnation) < (rhs.node, rhs.incarnation)
    }
}

/// The index of one of the fixed number of partitions that the key space is divided into.
public struct PartitionID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
    public static func < (lhs: PartitionID, rhs: PartitionID) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The partition of a row: the top bits of the placement hash of
    /// `(namespace, table, encoded partition key)`, for a power-of-two `partitionCount`.
    ///
    /// Each of the three is length-prefixed before hashing, so `("ab", "c")` and
    /// `("a", "bc")` hash differently.
    public static func of(
        namespace: String, table: String, encodedPartitionKey: [UInt8], partitionCount: Int
    ) -> PartitionID {
        precondition(
            partitionCount > 0 && partitionCount & (partitionCount - 1) == 0 && partitionCount <= 1 << 16,
            "partition count must be a power of two up to 65536, got \(partitionCount)")
        var writer = BinaryWriter(capacity: 32 + encodedPartitionKey.count)
        writer.writeLengthPrefixed(Array(namespace.utf8))
        writer.writeLengthPrefixed(Array(table.utf8))
        writer.writeLengthPrefixed(encodedPartitionKey)
        let hash = StableHash.hash(writer.bytes)
        let bits = partitionCount.trailingZeroBitCount
        return PartitionID(rawValue: bits == 0 ? 0 : UInt32(hash >> UInt64(64 - bits)))
    }
}
