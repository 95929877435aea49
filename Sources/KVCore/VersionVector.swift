/// One event in a causal history: the `counter`-th write coordinated by `actor`.
public struct Dot: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Who coordinated the write.
    public var actor: ActorID
    /// The actor's write counter for this key, starting at 1.
    public var counter: UInt64

    /// Creates a dot.
    public init(actor: ActorID, counter: UInt64) {
        self.actor = actor
        self.counter = counter
    }

    public var description: String { "(\(actor), \(counter))" }

    public static func < (lhs: Dot, rhs: Dot) -> Bool { (lhs.actor, lhs.counter) < (rhs.actor, rhs.counter) }
}

/// A version vector: for each actor, how many of its writes a causal history includes.
///
/// It is the shape of a causal context: what a client saw when it read. Entries are kept
/// sorted by actor with no zero counters, so equal histories have equal values.
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    /// The largest counter a decoder accepts. Counters count one actor's writes, so a
    /// genuine one never comes near it; a larger one from a faulty peer or a damaged
    /// file would make the actor's next write overflow.
    public static let maximumCounter: UInt64 = 1 << 62

    /// One actor's counter.
    public struct Entry: Hashable, Sendable {
        /// The actor.
        public var actor: ActorID
        /// How many of its writes the history includes (at least 1).
        public var counter: UInt64

        /// Creates an entry.
        public init(actor: ActorID, counter: UInt64) {
            self.actor = actor
            self.counter = counter
        }
    }

    /// The entries, sorted by actor, each with a counter of at least 1.
    public private(set) var entries: [Entry]

    /// The empty history.
    public init() { entries = [] }

    /// Creates a vector from entries in any order; duplicates keep the largest counter
    /// and zero counters are dropped.
    public init(_ unsortedEntries: [Entry]) {
        var result: [Entry] = []
        for entry in unsortedEntries.sorted(by: { $0.actor < $1.actor }) where entry.counter > 0 {
            if let last = result.last, last.actor == entry.actor {
                result[result.count - 1].counter = max(last.counter, entry.counter)
            } else {
                result.append(entry)
            }
        }
        entries = result
    }

    /// Wraps entries already in canonical form (strictly increasing actors, counters
    /// above zero) without sorting them again: the entries of a stored set and of a
    /// decoded vector are checked for that order where they are made, and a read builds
    /// one of these for every row it answers.
    @usableFromInline init(canonicalEntries: [Entry]) {
        assert(
            zip(canonicalEntries, canonicalEntries.dropFirst()).allSatisfy { $0.actor < $1.actor }
                && canonicalEntries.allSatisfy { $0.counter > 0 },
            "version vector entries are not canonical")
        entries = canonicalEntries
    }

    /// Whether the history is empty.
    public var isEmpty: Bool { entries.isEmpty }

    /// The counter of `actor`, or 0.
    public func counter(for actor: ActorID) -> UInt64 {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].actor < actor {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low < entries.count && entries[low].actor == actor ? entries[low].counter : 0
    }

    /// Whether the history includes `dot`.
    public func contains(_ dot: Dot) -> Bool { counter(for: dot.actor) >= dot.counter }

    /// Whether this history includes all of `other`.
    public func dominates(_ other: VersionVector) -> Bool {
        other.entries.allSatisfy { counter(for: $0.actor) >= $0.counter }
    }

    /// The smallest history that includes both.
    public func merging(_ other: VersionVector) -> VersionVector {
        VersionVector(entries + other.entries)
    }

    public var description: String {
        "{" + entries.map { "\($0.actor): \($0.counter)" }.joined(separator: ", ") + "}"
    }
}

extension VersionVector {
    /// Appends the binary form shared by causal contexts and the node-to-node protocol:
    /// LEB128 entry count, then per entry the node id (8 bytes, big-endian), the
    /// incarnation (LEB128) and the counter (LEB128).
    public func write(to writer: inout BinaryWriter) {
        writer.writeVarint(UInt64(entries.count))
        for entry in entries {
            writer.writeFixed(entry.actor.node.rawValue)
            writer.writeVarint(UInt64(entry.actor.incarnation))
            writer.writeVarint(entry.counter)
        }
    }

    /// Reads what ``write(to:)`` wrote, accepting only the canonical form (actors
    /// strictly increasing, counters above zero, at most `maximumEntries`). Problems are
    /// `KVError`s with `code`; a truncated input is a ``BinaryReader/Failure``.
    public static func read(from reader: inout BinaryReader, maximumEntries: Int, invalid code: KVError.Code)
        throws -> VersionVector
    {
        let count = try reader.readVarint()
        // Each entry takes at least 10 bytes.
        guard count <= UInt64(maximumEntries), count <= UInt64(reader.remainingCount / 10) else {
            throw KVError(code, "the version vector claims \(count) entries")
        }
        var entries: [Entry] = []
        for _ in 0..<count {
            let node = NodeID(rawValue: try reader.readFixed())
            let incarnation = try reader.readVarint()
            let counter = try reader.readVarint()
            guard incarnation <= UInt64(UInt32.max), counter > 0, counter <= maximumCounter else {
                throw KVError(code, "the version vector has an invalid entry")
            }
            let actor = ActorID(node: node, incarnation: UInt32(incarnation))
            if let last = entries.last, !(last.actor < actor) {
                throw KVError(code, "the version vector's entries are not in actor order")
            }
            entries.append(Entry(actor: actor, counter: counter))
        }
        return VersionVector(canonicalEntries: entries)
    }
}
