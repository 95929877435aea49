/// The causal state of one key: every live version (sibling) with the dot that made it,
/// compressed as a dotted version vector set (DVVSet).
///
/// This follows Almeida, Baquero, Gonçalves, Preguiça and Fonte, "Scalable and Accurate
/// Causality Tracking for Eventually Consistent Stores" (DAIS 2014), the structure Riak 2
/// uses. For each actor the set keeps a counter `n` and the values of its most recent
/// still-live writes, newest first: the `i`-th value (from 0) carries the dot
/// `(actor, n - i)`. Everything older than those dots is known and superseded.
///
/// Three operations make a store:
/// - ``recordWrite(_:context:actor:)`` — a coordinator applies a client write: the
///   versions the client's context covers are dropped, and the new value gets one new
///   dot. Versions the client had not seen stay, as siblings.
/// - ``merging(_:)`` — replicas combine states (replication, read repair,
///   anti-entropy, hinted handoff). It is commutative, associative and idempotent.
/// - ``context`` — a read returns every live value plus this vector, which covers all of
///   them, so writing back with it resolves the siblings.
///
/// Unlike plain version vectors per value, the number of siblings is bounded by the
/// number of truly concurrent writers, not by the number of interleavings.
///
/// Departures from the paper: no anonymous (dot-less) values, because every write
/// reaches a replica through a coordinator that assigns a dot; and deletes are ordinary
/// values (tombstones), so a delete is ordered like any write.
public struct DottedVersionVectorSet<Element: Hashable & Sendable>: Hashable, Sendable {
    /// One actor's counter and its live values, newest first.
    public struct Entry: Hashable, Sendable {
        /// The actor.
        public var actor: ActorID
        /// The actor's highest counter known for this key.
        public var counter: UInt64
        /// Live values, newest first: `values[i]` has the dot `(actor, counter - i)`.
        public var values: [Element]

        /// Creates an entry; `values.count` must not exceed `counter`.
        public init(actor: ActorID, counter: UInt64, values: [Element]) {
            precondition(
                UInt64(values.count) <= counter,
                "an entry of \(actor) has \(values.count) values for counter \(counter)")
            self.actor = actor
            self.counter = counter
            self.values = values
        }
    }

    /// The entries, sorted by actor.
    public private(set) var entries: [Entry]

    /// The state of a key no one has written.
    public init() { entries = [] }

    /// Rebuilds a state from its entries (for decoding), or returns `nil` if they are
    /// not strictly sorted by actor or an entry has more values than its counter.
    public init?(validatedEntries: [Entry]) {
        for (earlier, later) in zip(validatedEntries, validatedEntries.dropFirst())
        where !(earlier.actor < later.actor) {
            return nil
        }
        for entry in validatedEntries where UInt64(entry.values.count) > entry.counter || entry.counter == 0 {
            return nil
        }
        entries = validatedEntries
    }

    /// Whether nothing has been written.
    public var isEmpty: Bool { entries.isEmpty }

    /// The live values with their dots, in a deterministic order (by actor, newest first).
    public var versions: [(dot: Dot, value: Element)] {
        var result: [(dot: Dot, value: Element)] = []
        for entry in entries {
            for (index, value) in entry.values.enumerated() {
                result.append((Dot(actor: entry.actor, counter: entry.counter - UInt64(index)), value))
            }
        }
        return result
    }

    /// The live values, in the order of ``versions``.
    public var values: [Element] { entries.flatMap(\.values) }

    /// How many live values (siblings) there are.
    public var siblingCount: Int { entries.reduce(0) { $0 + $1.values.count } }

    /// The causal context a read returns: it covers every live value and every write
    /// they superseded.
    @inlinable public var context: VersionVector {
        // Entries are strictly sorted by actor with counters of at least 1 (every way of
        // making them keeps that), which is the vector's canonical form.
        VersionVector(
            canonicalEntries: entries.map { VersionVector.Entry(actor: $0.actor, counter: $0.counter) })
    }

    /// Drops every value that `context` covers, and raises counters to the context's, so
    /// the result's ``context`` dominates `context`.
    public func discarding(coveredBy context: VersionVector) -> DottedVersionVectorSet {
        var result: [Entry] = []
        var mine = entries[...]
        var theirs = context.entries[...]
        while !mine.isEmpty || !theirs.isEmpty {
            if let entry = mine.first, theirs.first.map({ entry.actor < $0.actor }) ?? true {
                result.append(entry)
                mine.removeFirst()
            } else if let seen = theirs.first, mine.first.map({ seen.actor < $0.actor }) ?? true {
                result.append(Entry(actor: seen.actor, counter: seen.counter, values: []))
                theirs.removeFirst()
            } else {
                let entry = mine.removeFirst()
                let seen = theirs.removeFirst()
                // Values with dots above the context's counter were not seen: keep them.
                let unseen =
                    entry.counter > seen.counter
                    ? Int(min(UInt64(entry.values.count), entry.counter - seen.counter)) : 0
                result.append(
                    Entry(
                        actor: entry.actor, counter: max(entry.counter, seen.counter),
                        values: Array(entry.values.prefix(unseen))))
            }
        }
        var discarded = DottedVersionVectorSet()
        discarded.entries = result
        return discarded
    }

    /// Applies a client write of `value` made with `context` (what the client last read,
    /// or the empty vector), coordinated by `actor`, and returns the new value's dot.
    ///
    /// Exactly the versions `context` covers are replaced; the new value gets the dot
    /// `(actor, n + 1)` where `n` is the highest counter of `actor` known here or in the
    /// context, or `minimumCounter` if that is higher and no value of `actor` survives.
    /// An actor passes a minimum above every counter it issued: once a row is reaped its
    /// clock is gone, and a dot counted on from a context that came from before the reap
    /// (or from no context at all) could be one the reaped tombstone had, which a replica
    /// that has not reaped yet would take for the same write.
    @discardableResult
    public mutating func recordWrite(
        _ value: Element, context: VersionVector, actor: ActorID, minimumCounter: UInt64 = 1
    ) -> Dot {
        self = discarding(coveredBy: context)
        if let index = entries.firstIndex(where: { $0.actor == actor }) {
            // An entry's values carry consecutive counters, so a counter jumps only over an
            // entry with none left.
            let next = entries[index].counter + 1
            entries[index].counter = entries[index].values.isEmpty ? max(next, minimumCounter) : next
            entries[index].values.insert(value, at: 0)
            return Dot(actor: actor, counter: entries[index].counter)
        }
        let counter = max(1, minimumCounter)
        let insertionIndex = entries.firstIndex(where: { actor < $0.actor }) ?? entries.endIndex
        entries.insert(Entry(actor: actor, counter: counter, values: [value]), at: insertionIndex)
        return Dot(actor: actor, counter: counter)
    }

    /// Combines two replicas' states of the same key: a value survives if neither side
    /// knows it to be superseded.
    ///
    /// Both sides must agree on the value of any dot they share, which holds because a
    /// dot is assigned once, by one coordinator, to one write.
    public func merging(_ other: DottedVersionVectorSet) -> DottedVersionVectorSet {
        var result: [Entry] = []
        var mine = entries[...]
        var theirs = other.entries[...]
        while !mine.isEmpty || !theirs.isEmpty {
            if let entry = mine.first, theirs.first.map({ entry.actor < $0.actor }) ?? true {
                result.append(entry)
                mine.removeFirst()
            } else if let entry = theirs.first, mine.first.map({ entry.actor < $0.actor }) ?? true {
                result.append(entry)
                theirs.removeFirst()
            } else {
                result.append(Self.merge(mine.removeFirst(), theirs.removeFirst()))
            }
        }
        var merged = DottedVersionVectorSet()
        merged.entries = result
        return merged
    }

    /// Merges two entries of one actor. Each side's values cover the dots
    /// `(counter - values.count, counter]`; a dot stays live if it is live on every side
    /// that has seen it, that is, above both sides' lowest live dot minus one.
    private static func merge(_ left: Entry, _ right: Entry) -> Entry {
        let (newer, older) = left.counter >= right.counter ? (left, right) : (right, left)
        let newerFloor = newer.counter - UInt64(newer.values.count)
        let olderFloor = older.counter - UInt64(older.values.count)
        if newerFloor >= olderFloor { return newer }
        let keep = Int(newer.counter - olderFloor)
        return Entry(actor: newer.actor, counter: newer.counter, values: Array(newer.values.prefix(keep)))
    }

    /// Whether this state has seen everything `other` has (its context dominates).
    public func descends(_ other: DottedVersionVectorSet) -> Bool {
        context.dominates(other.context)
    }
}
