/// A counter that replicas can change independently and merge without losing an
/// increment: a PN-counter (Shapiro et al., "Conflict-free Replicated Data Types", 2011),
/// as Riak's counters are.
///
/// Each actor keeps its own running totals of increments and decrements; merging takes
/// the larger total per actor, and the value is the sum of increments minus the sum of
/// decrements. Merge is commutative, associative and idempotent, so counter siblings
/// from concurrent writers always combine into the right value. Totals and the value
/// wrap around at 64 bits.
///
/// A counter is stored as an ordinary row whose value has content type
/// ``contentType``, so it is replicated, versioned and repaired like any other row.
public struct CounterState: Hashable, Sendable {
    /// The content type of a stored counter.
    public static let contentType = "application/vnd.kv.counter"
    static let formatVersion: UInt8 = 1
    /// The format of a counter with an epoch.
    static let epochFormatVersion: UInt8 = 2

    /// One actor's totals.
    public struct Entry: Hashable, Sendable {
        /// The actor.
        public var actor: ActorID
        /// The sum of its positive deltas.
        public var increments: UInt64
        /// The sum of the magnitudes of its negative deltas.
        public var decrements: UInt64
    }

    /// The entries, sorted by actor.
    public private(set) var entries: [Entry] = []
    /// Since when this counter counts, in a last-writer-wins row: the timestamp of the
    /// version it started from (a text value, a delete, an expired value), 0 for a row
    /// never written. Only counters of the same epoch merge, so increments made before a
    /// later `SET` or `DEL` are not counted again after it. 0 outside last-writer-wins
    /// rows.
    public var epochMilliseconds: Int64 = 0

    /// A counter at zero with no history.
    public init(epochMilliseconds: Int64 = 0) { self.epochMilliseconds = epochMilliseconds }

    /// The counter's value.
    public var value: Int64 {
        var total: UInt64 = 0
        for entry in entries { total = total &+ entry.increments &- entry.decrements }
        return Int64(bitPattern: total)
    }

    /// Adds `delta` on behalf of `actor`.
    public mutating func add(_ delta: Int64, by actor: ActorID) {
        let index: Int
        if let existing = entries.firstIndex(where: { $0.actor == actor }) {
            index = existing
        } else {
            index = entries.firstIndex(where: { actor < $0.actor }) ?? entries.endIndex
            entries.insert(Entry(actor: actor, increments: 0, decrements: 0), at: index)
        }
        if delta >= 0 {
            entries[index].increments = entries[index].increments &+ UInt64(delta)
        } else {
            entries[index].decrements = entries[index].decrements &+ delta.magnitude
        }
    }

    /// The combination of two replicas' states: per actor, the larger totals.
    public func merging(_ other: CounterState) -> CounterState {
        var byActor: [ActorID: Entry] = [:]
        for entry in entries + other.entries {
            if let current = byActor[entry.actor] {
                byActor[entry.actor] = Entry(
                    actor: entry.actor, increments: max(current.increments, entry.increments),
                    decrements: max(current.decrements, entry.decrements))
            } else {
                byActor[entry.actor] = entry
            }
        }
        var merged = CounterState(epochMilliseconds: max(epochMilliseconds, other.epochMilliseconds))
        merged.entries = byActor.values.sorted { $0.actor < $1.actor }
        return merged
    }

    /// The stored form: version (`1`, or `2` followed by the epoch, zigzag LEB128), count,
    /// then per actor its id and both totals.
    public func encoded() -> [UInt8] {
        var writer = BinaryWriter(capacity: 12 + entries.count * 24)
        // Format 1 when there is no epoch, so counters outside last-writer-wins rows are
        // stored as before epochs existed.
        if epochMilliseconds == 0 {
            writer.write(Self.formatVersion)
        } else {
            writer.write(Self.epochFormatVersion)
            writer.writeSignedVarint(epochMilliseconds)
        }
        writer.writeVarint(UInt64(entries.count))
        for entry in entries {
            writer.writeFixed(entry.actor.node.rawValue)
            writer.writeVarint(UInt64(entry.actor.incarnation))
            writer.writeVarint(entry.increments)
            writer.writeVarint(entry.decrements)
        }
        return writer.bytes
    }

    /// Decodes a stored counter, or throws `row.not_a_counter` when the bytes are not one.
    public init(decoding bytes: [UInt8]) throws(KVError) {
        var reader = BinaryReader(bytes)
        do {
            switch try reader.readByte() {
            case Self.formatVersion: break
            case Self.epochFormatVersion: epochMilliseconds = try reader.readSignedVarint()
            default: throw KVError(.notACounter, "the counter has an unknown format")
            }
            let count = try reader.readVarint()
            guard count <= UInt64(reader.remainingCount / 11) else {
                throw KVError(.notACounter, "the counter is malformed")
            }
            var previous: ActorID? = nil
            for _ in 0..<count {
                let node = NodeID(rawValue: try reader.readFixed())
                let incarnation = try reader.readVarint()
                guard incarnation <= UInt64(UInt32.max) else {
                    throw KVError(.notACounter, "the counter is malformed")
                }
                let actor = ActorID(node: node, incarnation: UInt32(incarnation))
                if let previous, !(previous < actor) {
                    throw KVError(.notACounter, "the counter is malformed")
                }
                previous = actor
                entries.append(
                    Entry(
                        actor: actor, increments: try reader.readVarint(), decrements: try reader.readVarint()
                    ))
            }
            guard reader.isAtEnd else { throw KVError(.notACounter, "the counter is malformed") }
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.notACounter, "the counter is truncated", underlying: error)
        }
    }

    /// The merged counter of a row's live siblings, or `nil` when the row is absent.
    /// Throws `row.not_a_counter` when a sibling is not a counter.
    public static func merged(_ siblings: [Sibling]) throws(KVError) -> CounterState? {
        guard !siblings.isEmpty else { return nil }
        var state = CounterState()
        for sibling in siblings {
            guard let value = sibling.value, value.contentType == contentType else {
                throw KVError(.notACounter, "the row holds a value that is not a counter")
            }
            state = state.merging(try CounterState(decoding: value.bytes))
        }
        return state
    }
}
