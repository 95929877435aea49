import KVCore

/// One node as the cluster knows it: where to reach it and what it should hold.
public struct ClusterMember: Hashable, Sendable {
    /// The node.
    public var node: NodeID
    /// Where its node-to-node protocol listens (`host:port`).
    public var peerAddress: String
    /// Where its HTTP API listens (`host:port`).
    public var httpAddress: String
    /// Its failure domain.
    public var zone: String
    /// Its relative weight in the layout.
    public var capacity: Int
    /// Raised by the node whenever it re-announces itself with changed fields; the
    /// higher revision wins when two records of one node meet.
    public var revision: UInt64

    /// Creates a member record.
    public init(
        node: NodeID, peerAddress: String, httpAddress: String, zone: String = "default", capacity: Int = 1,
        revision: UInt64 = 1
    ) {
        self.node = node
        self.peerAddress = peerAddress
        self.httpAddress = httpAddress
        self.zone = zone
        self.capacity = capacity
        self.revision = revision
    }

    /// The member as the layout sees it.
    public var layoutMember: LayoutMember { LayoutMember(node: node, zone: zone, capacity: capacity) }

    /// Whether this record replaces `other` (of the same node) when two copies meet:
    /// the higher revision wins; equal revisions with different contents (a node
    /// restored from a backup) resolve by their fields, the same on every node.
    public func supersedes(_ other: ClusterMember) -> Bool {
        if revision != other.revision { return revision > other.revision }
        return fields > other.fields
    }

    /// Whether the two records say different things, whatever their revisions.
    public func differs(from other: ClusterMember) -> Bool { fields != other.fields }

    private var fields: (String, String, String, Int) { (peerAddress, httpAddress, zone, capacity) }
}

/// The version stamp of one table record: a Lamport clock and the node that wrote it,
/// so concurrent changes of one table on different nodes resolve the same way everywhere.
public struct MetadataStamp: Hashable, Sendable, Comparable {
    /// The Lamport time.
    public var time: UInt64
    /// The writer, breaking ties.
    public var node: NodeID

    /// Creates a stamp.
    public init(time: UInt64, node: NodeID) {
        self.time = time
        self.node = node
    }

    public static func < (lhs: MetadataStamp, rhs: MetadataStamp) -> Bool {
        (lhs.time, lhs.node) < (rhs.time, rhs.node)
    }
}

/// A table as cluster metadata: its descriptor, or `nil` once dropped (kept so that a
/// node that missed the drop cannot bring the table back).
public struct TableRecord: Hashable, Sendable {
    /// The table's name.
    public var name: TableName
    /// The current definition, or `nil` when the table was dropped.
    public var descriptor: TableDescriptor?
    /// The stamp of the change that made this record.
    public var stamp: MetadataStamp

    /// Creates a record.
    public init(name: TableName, descriptor: TableDescriptor?, stamp: MetadataStamp) {
        self.name = name
        self.descriptor = descriptor
        self.stamp = stamp
    }

    /// Whether this record replaces `other` when two copies meet: the later stamp wins.
    /// Equal stamps with different contents cannot come from one node's clock, but
    /// stored metadata restored from a backup could make them; a drop then wins, then
    /// the higher generation, so every node still picks the same record.
    public func supersedes(_ other: TableRecord) -> Bool {
        if stamp != other.stamp { return stamp > other.stamp }
        switch (descriptor, other.descriptor) {
        case (nil, nil): return false
        case (nil, _?): return true
        case (_?, nil): return false
        case (let mine?, let theirs?):
            if mine.generation != theirs.generation { return mine.generation > theirs.generation }
            // Every merge meets each table's record twice over; describing equal ones by
            // reflection to find them equal was most of the cost of a merge.
            if mine == theirs { return false }
            return String(describing: mine) > String(describing: theirs)
        }
    }
}

/// What every node of a cluster must agree on: who the members are, the layout, the
/// tables, and the secret that seals causal contexts (so a context read through one
/// node is accepted by every other).
///
/// It is a pure value that nodes exchange whole (it is small: a few kilobytes for 256
/// partitions) and combine with ``merge(_:)``, which is commutative, associative and
/// idempotent, so the nodes converge whatever order copies arrive in:
/// - members: the union, the higher revision of a node's record winning;
/// - the layout: the higher version; equal versions with different contents (only when
///   two nodes recomputed at once) resolve by their encoding, the same everywhere;
/// - tables: per table, the record with the higher ``MetadataStamp``
///   (``TableRecord/supersedes(_:)``).
///
/// A node starts *unformed* (cluster id 0). Exactly one node forms the cluster
/// (``formed(by:clusterID:secret:expectedMembers:)``); the others adopt the formed
/// metadata when it reaches them, and never mix with a cluster of another id.
public struct ClusterMetadata: Hashable, Sendable {
    /// The cluster's id, chosen at random when it is formed; 0 while unformed.
    public var clusterID: UInt64
    /// The 16-byte context secret of the cluster (empty while unformed).
    public var contextSecret: [UInt8]
    /// Partitions of the key space.
    public var partitionCount: Int
    /// Replicas per partition the layout places.
    public var replicationFactor: Int
    /// Every known member, by node.
    public var members: [NodeID: ClusterMember]
    /// The current layout (`nil` while unformed).
    public var layout: Layout?
    /// Every table ever created, by name.
    public var tables: [TableName: TableRecord]
    /// The highest Lamport time seen.
    public var clock: UInt64
    /// The layout changes staged for the next commit.
    public var staged: StagedLayoutChanges
    /// The layout change in progress towards `layout`, if any.
    public var transition: LayoutTransition?
    /// Members whose leave or replace was committed (see ``departed``).
    public var departing: Set<NodeID>
    /// How hard transfers may push.
    public var handoffControl: HandoffControl
    /// Every access token ever created, by id, revoked ones included (so a revocation
    /// cannot be undone by a node that missed it). Only hashes of tokens are kept.
    public var tokens: [String: AccessTokenEntry]

    /// Unformed metadata that knows only `member`.
    public init(member: ClusterMember, partitionCount: Int, replicationFactor: Int) {
        clusterID = 0
        contextSecret = []
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        members = [member.node: member]
        layout = nil
        tables = [:]
        clock = 0
        staged = StagedLayoutChanges()
        transition = nil
        departing = []
        handoffControl = HandoffControl()
        tokens = [:]
    }

    /// Whether a cluster was formed.
    public var isFormed: Bool { clusterID != 0 && layout != nil }

    /// The live tables.
    public var liveTables: [TableName: TableDescriptor] {
        var result: [TableName: TableDescriptor] = [:]
        for (name, record) in tables { if let descriptor = record.descriptor { result[name] = descriptor } }
        return result
    }

    // MARK: - Changes

    /// The metadata after `node` forms the cluster, or `nil` when it must not: it is not
    /// the smallest known member, or fewer than `expectedMembers` are known yet. Only one
    /// node (the smallest) ever forms, so two layouts of version 1 cannot compete.
    public func formed(by node: NodeID, clusterID: UInt64, secret: [UInt8], expectedMembers: Int) -> Self? {
        guard !isFormed, clusterID != 0, secret.count == 16, members.count >= expectedMembers,
            members.keys.min() == node
        else { return nil }
        var formed = self
        formed.clusterID = clusterID
        formed.contextSecret = secret
        formed.layout = Layout.computed(
            members: members.values.map(\.layoutMember), replicationFactor: replicationFactor,
            partitionCount: partitionCount)
        return formed
    }

    /// Whether another table may be recorded: every record counts, dropped ones too,
    /// because they are kept so a drop cannot be undone.
    public var hasRoomForAnotherTable: Bool { tables.count < Self.maximumTables }

    /// Records a table change made by `node`, stamped after everything it has seen.
    public mutating func record(_ name: TableName, _ descriptor: TableDescriptor?, by node: NodeID) {
        clock = Self.next(after: clock)
        tables[name] = TableRecord(
            name: name, descriptor: descriptor, stamp: MetadataStamp(time: clock, node: node))
    }

    /// Adds or replaces a member record if it is newer than the one known.
    public mutating func announce(_ member: ClusterMember) {
        if let known = members[member.node], !member.supersedes(known) { return }
        members[member.node] = member
    }

    // MARK: - Merging

    /// What ``merge(_:)`` found.
    public enum MergeOutcome: Hashable, Sendable {
        /// Nothing new.
        case unchanged
        /// Something changed.
        case changed
        /// The other side belongs to another cluster or is incompatible; nothing was taken.
        case refused(String)
    }

    /// Combines `other` into this metadata.
    @discardableResult
    public mutating func merge(_ other: ClusterMetadata) -> MergeOutcome {
        if other.partitionCount != partitionCount {
            return .refused(
                "a peer has \(other.partitionCount) partitions and this node \(partitionCount); data directories of different partition counts cannot form one cluster"
            )
        }
        if isFormed && other.isFormed && other.clusterID != clusterID {
            return .refused(
                "a peer belongs to cluster \(String(other.clusterID, radix: 16)), this node to \(String(clusterID, radix: 16))"
            )
        }
        let before = self
        if !isFormed && other.isFormed {
            clusterID = other.clusterID
            contextSecret = other.contextSecret
            replicationFactor = other.replicationFactor
            layout = other.layout
            transition = other.transition
        } else if isFormed && other.isFormed, let mine = layout, let theirs = other.layout {
            if theirs.version > mine.version
                || (theirs.version == mine.version && theirs != mine
                    && Self.encode(theirs).lexicographicallyPrecedes(Self.encode(mine)))
            {
                // A transition belongs to the layout it leads to.
                layout = theirs
                transition = other.transition
            } else if theirs == mine {
                // One layout, two copies of its transition: what either side recorded
                // counts, and a finished transition (nil) stays finished.
                if var combined = transition, let theirTransition = other.transition,
                    combined.previous == theirTransition.previous
                {
                    combined.received.formUnion(theirTransition.received)
                    combined.released.formUnion(theirTransition.released)
                    combined.abandoned.formUnion(theirTransition.abandoned)
                    transition = combined
                } else if other.transition == nil {
                    transition = nil
                } else if let theirTransition = other.transition, let ours = transition,
                    Self.encodeTransition(theirTransition).lexicographicallyPrecedes(
                        Self.encodeTransition(ours))
                {
                    transition = theirTransition
                }
                settleTransition()
            }
        }
        // The later stamp wins; equal stamps with different contents (only a restored
        // backup makes them) resolve by their encoding, the same on every node.
        if other.staged.stamp > staged.stamp
            || (other.staged.stamp == staged.stamp && other.staged != staged
                && Self.encode(other.staged).lexicographicallyPrecedes(Self.encode(staged)))
        {
            staged = other.staged
        }
        if other.handoffControl.stamp > handoffControl.stamp
            || (other.handoffControl.stamp == handoffControl.stamp && other.handoffControl != handoffControl
                && Self.encode(other.handoffControl).lexicographicallyPrecedes(Self.encode(handoffControl)))
        {
            handoffControl = other.handoffControl
        }
        departing.formUnion(other.departing)
        for member in other.members.values { announce(member) }
        for (name, record) in other.tables {
            if let known = tables[name], !record.supersedes(known) { continue }
            tables[name] = record
        }
        for (id, entry) in other.tokens {
            if let known = tokens[id], !entry.supersedes(known) { continue }
            tokens[id] = entry
        }
        clock = max(clock, other.clock)
        return self == before ? .unchanged : .changed
    }

    // MARK: - Encoding

    /// Version 1 ends after the tables; version 2 adds the elastic-cluster state;
    /// version 3 the access tokens.
    static let formatVersion: UInt8 = 3

    /// The binary form nodes exchange and store.
    public func encoded() -> [UInt8] {
        var writer = BinaryWriter(capacity: 1024 + (layout?.partitionCount ?? 0) * 8)
        writer.write(Self.formatVersion)
        writer.writeFixed(clusterID)
        writer.writeLengthPrefixed(contextSecret)
        writer.writeVarint(UInt64(partitionCount))
        writer.writeVarint(UInt64(replicationFactor))
        writer.writeVarint(clock)
        let sortedMembers = members.values.sorted { $0.node < $1.node }
        writer.writeVarint(UInt64(sortedMembers.count))
        for member in sortedMembers {
            writer.writeFixed(member.node.rawValue)
            writer.writeLengthPrefixed(Array(member.peerAddress.utf8))
            writer.writeLengthPrefixed(Array(member.httpAddress.utf8))
            writer.writeLengthPrefixed(Array(member.zone.utf8))
            writer.writeVarint(UInt64(member.capacity))
            writer.writeVarint(member.revision)
        }
        if let layout {
            writer.write(1)
            writer.writeRaw(Self.encode(layout))
        } else {
            writer.write(0)
        }
        let sortedTables = tables.values.sorted { $0.name < $1.name }
        writer.writeVarint(UInt64(sortedTables.count))
        for record in sortedTables {
            writer.writeLengthPrefixed(Array(record.name.namespace.utf8))
            writer.writeLengthPrefixed(Array(record.name.table.utf8))
            writer.writeVarint(record.stamp.time)
            writer.writeFixed(record.stamp.node.rawValue)
            if let descriptor = record.descriptor {
                // 1: a table with siblings, 2: a last-writer-wins table.
                writer.write(descriptor.conflictPolicy == .lastWriterWins ? 2 : 1)
                writer.writeVarint(UInt64(descriptor.schema.parts.count))
                for part in descriptor.schema.parts { writer.write(Self.tag(of: part)) }
                writer.writeVarint(UInt64(descriptor.schema.partitionKeyLength))
                let defaults = descriptor.defaults
                for value in [defaults.n, defaults.r, defaults.w, defaults.dw, defaults.pr, defaults.pw] {
                    writer.writeVarint(UInt64(value))
                }
                writer.writeFixed(descriptor.generation)
            } else {
                writer.write(0)
            }
        }
        writer.writeRaw(Self.encode(staged))
        writer.writeRaw(Self.encode(handoffControl))
        writer.writeVarint(UInt64(departing.count))
        for node in departing.sorted() { writer.writeFixed(node.rawValue) }
        if let transition {
            writer.write(1)
            writer.writeRaw(Self.encodeTransition(transition))
        } else {
            writer.write(0)
        }
        let sortedTokens = tokens.values.sorted { $0.record.id < $1.record.id }
        writer.writeVarint(UInt64(sortedTokens.count))
        for entry in sortedTokens { entry.encode(into: &writer) }
        return writer.bytes
    }

    static func encode(_ staged: StagedLayoutChanges) -> [UInt8] {
        var writer = BinaryWriter(capacity: 32 + staged.changes.count * 24)
        writer.writeVarint(UInt64(staged.changes.count))
        for change in staged.changes { encode(change, into: &writer) }
        encode(staged.stamp, into: &writer)
        return writer.bytes
    }

    static func encode(_ control: HandoffControl) -> [UInt8] {
        var writer = BinaryWriter(capacity: 40)
        writer.write(control.paused ? 1 : 0)
        for value in [control.clusterConcurrency, control.nodeConcurrency, control.bytesPerSecond] {
            writer.writeVarint(UInt64(value))
        }
        encode(control.stamp, into: &writer)
        return writer.bytes
    }

    static func encode(_ stamp: MetadataStamp, into writer: inout BinaryWriter) {
        writer.writeVarint(stamp.time)
        writer.writeFixed(stamp.node.rawValue)
    }

    static func encode(_ change: LayoutChange, into writer: inout BinaryWriter) {
        switch change {
        case .join(let node):
            writer.write(1)
            writer.writeFixed(node.rawValue)
        case .leave(let node, let force):
            writer.write(2)
            writer.writeFixed(node.rawValue)
            writer.write(force ? 1 : 0)
        case .replace(let old, let new, let force):
            writer.write(3)
            writer.writeFixed(old.rawValue)
            writer.writeFixed(new.rawValue)
            writer.write(force ? 1 : 0)
        case .setCapacity(let node, let capacity):
            writer.write(4)
            writer.writeFixed(node.rawValue)
            writer.writeVarint(UInt64(capacity))
        case .setZone(let node, let zone):
            writer.write(5)
            writer.writeFixed(node.rawValue)
            writer.writeLengthPrefixed(Array(zone.utf8))
        }
    }

    /// A transition's binary form: the previous layout, then the abandoned nodes and the
    /// received and released slots, sorted.
    static func encodeTransition(_ transition: LayoutTransition) -> [UInt8] {
        var writer = BinaryWriter(capacity: 256 + transition.previous.partitionCount * 8)
        writer.writeRaw(encode(transition.previous))
        writer.writeVarint(UInt64(transition.abandoned.count))
        for node in transition.abandoned.sorted() { writer.writeFixed(node.rawValue) }
        for slots in [transition.received, transition.released] {
            writer.writeVarint(UInt64(slots.count))
            for slot in slots.sorted() {
                writer.writeVarint(UInt64(slot.partition.rawValue))
                writer.writeFixed(slot.node.rawValue)
            }
        }
        return writer.bytes
    }

    /// The layout's binary form: version, partition count, replication factor, members
    /// (node, zone, capacity), then per partition its replicas as member indexes.
    static func encode(_ layout: Layout) -> [UInt8] {
        var writer = BinaryWriter(capacity: 64 + layout.partitionCount * 4)
        writer.writeVarint(layout.version)
        writer.writeVarint(UInt64(layout.partitionCount))
        writer.writeVarint(UInt64(layout.replicationFactor))
        writer.writeVarint(UInt64(layout.members.count))
        var index: [NodeID: Int] = [:]
        for (position, member) in layout.members.enumerated() {
            index[member.node] = position
            writer.writeFixed(member.node.rawValue)
            writer.writeLengthPrefixed(Array(member.zone.utf8))
            writer.writeVarint(UInt64(member.capacity))
        }
        for list in layout.assignments {
            writer.writeVarint(UInt64(list.count))
            for node in list { writer.writeVarint(UInt64(index[node] ?? 0)) }
        }
        return writer.bytes
    }

    static func tag(of type: KeyPartType) -> UInt8 {
        switch type {
        case .string: 1
        case .bytes: 2
        case .int64: 3
        case .uuid: 4
        }
    }

    /// The most members, tables and partitions a decoded copy may hold: bounds for
    /// bytes that arrive from the network.
    static let maximumMembers = 1024
    public static let maximumTables = 100_000
    /// The most token records, revoked ones included.
    public static let maximumTokens = 10_000

    /// Decodes what ``encoded()`` wrote; anything invalid is `storage.corrupt_object`.
    public static func decode(_ bytes: [UInt8]) throws(KVError) -> ClusterMetadata {
        do {
            return try decodeThrowing(bytes)
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.corruptObject, "cluster metadata is truncated or malformed", underlying: error)
        }
    }

    static func text(_ reader: inout BinaryReader, maximumBytes: Int = 256) throws -> String {
        let bytes = try reader.readLengthPrefixed(maximumLength: maximumBytes)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw KVError(.corruptObject, "cluster metadata holds text that is not UTF-8")
        }
        return text
    }

    static func count(_ reader: inout BinaryReader, atMost limit: Int, _ what: String) throws -> Int {
        let value = try reader.readVarint()
        guard value <= UInt64(limit) else {
            throw KVError(.corruptObject, "cluster metadata claims \(value) \(what)")
        }
        return Int(value)
    }

    /// The largest clock, stamp, revision or layout version a decoder accepts: each
    /// counts changes, so a genuine one never comes near it, and one beyond it from a
    /// faulty peer would make every later change overflow, everywhere it spread.
    static let maximumCounter: UInt64 = 1 << 62

    /// The value after `value` for a clock, stamp, revision or layout version: one more,
    /// but never past ``maximumCounter``, so what this node stores it can decode again
    /// (only a faulty peer's value comes near the limit; changes made there tie).
    public static func next(after value: UInt64) -> UInt64 {
        value < maximumCounter ? value + 1 : value
    }

    static func counter(_ reader: inout BinaryReader, _ what: String) throws -> UInt64 {
        let value = try reader.readVarint()
        guard value <= maximumCounter else {
            throw KVError(.corruptObject, "cluster metadata has the \(what) \(value)")
        }
        return value
    }

    private static func decodeThrowing(_ bytes: [UInt8]) throws -> ClusterMetadata {
        var reader = BinaryReader(bytes)
        let format = try reader.readByte()
        guard (1...formatVersion).contains(format) else {
            throw KVError(.corruptObject, "cluster metadata has an unknown format")
        }
        let clusterID = try reader.readFixed()
        let secret = try reader.readLengthPrefixed(maximumLength: 16)
        // A formed cluster has a whole secret and an unformed one none: anything else
        // would make a node that adopts it fail when it seals a context.
        guard secret.count == (clusterID == 0 ? 0 : 16) else {
            throw KVError(.corruptObject, "cluster metadata has a \(secret.count)-byte secret")
        }
        let partitionCount = try count(&reader, atMost: 1 << 16, "partitions")
        guard partitionCount > 0, partitionCount & (partitionCount - 1) == 0 else {
            throw KVError(.corruptObject, "cluster metadata has \(partitionCount) partitions")
        }
        let replicationFactor = try count(&reader, atMost: ReplicationDefaults.maximumReplicas, "replicas")
        let clock = try counter(&reader, "clock")
        var members: [NodeID: ClusterMember] = [:]
        for _ in 0..<(try count(&reader, atMost: maximumMembers, "members")) {
            let node = NodeID(rawValue: try reader.readFixed())
            let peer = try text(&reader)
            let http = try text(&reader)
            let zone = try text(&reader)
            let capacity = try count(&reader, atMost: 1 << 20, "capacity")
            let revision = try counter(&reader, "member revision")
            members[node] = ClusterMember(
                node: node, peerAddress: peer, httpAddress: http, zone: zone, capacity: capacity,
                revision: revision)
        }
        var layout: Layout?
        switch try reader.readByte() {
        case 0: layout = nil
        case 1: layout = try decodeLayout(&reader)
        case let flag: throw KVError(.corruptObject, "cluster metadata has layout flag \(flag)")
        }
        var tables: [TableName: TableRecord] = [:]
        for _ in 0..<(try count(&reader, atMost: maximumTables, "tables")) {
            let name = try TableName(namespace: try text(&reader), table: try text(&reader))
            let stamp = MetadataStamp(
                time: try counter(&reader, "stamp"), node: NodeID(rawValue: try reader.readFixed()))
            var descriptor: TableDescriptor?
            switch try reader.readByte() {
            case 0: descriptor = nil
            case let flag where flag == 1 || flag == 2:
                var types: [KeyPartType] = []
                for _ in 0..<(try count(&reader, atMost: KeySchema.maximumPartCount, "key parts")) {
                    switch try reader.readByte() {
                    case 1: types.append(.string)
                    case 2: types.append(.bytes)
                    case 3: types.append(.int64)
                    case 4: types.append(.uuid)
                    case let tag: throw KVError(.corruptObject, "cluster metadata has key part type \(tag)")
                    }
                }
                let partitionKeyLength = try count(&reader, atMost: KeySchema.maximumPartCount, "key parts")
                let schema = try KeySchema(types, partitionKeyLength: partitionKeyLength)
                var numbers: [Int] = []
                for _ in 0..<6 {
                    numbers.append(
                        try count(&reader, atMost: ReplicationDefaults.maximumReplicas, "replicas"))
                }
                let defaults = ReplicationDefaults(
                    n: numbers[0], r: numbers[1], w: numbers[2], dw: numbers[3], pr: numbers[4],
                    pw: numbers[5])
                try defaults.validate()
                descriptor = TableDescriptor(
                    name: name, schema: schema, defaults: defaults, generation: try reader.readFixed(),
                    conflictPolicy: flag == 2 ? .lastWriterWins : .siblings)
            case let flag: throw KVError(.corruptObject, "cluster metadata has table flag \(flag)")
            }
            tables[name] = TableRecord(name: name, descriptor: descriptor, stamp: stamp)
        }
        var staged = StagedLayoutChanges()
        var control = HandoffControl()
        var departing: Set<NodeID> = []
        var transition: LayoutTransition?
        if format >= 2 {
            var changes: [LayoutChange] = []
            for _ in 0..<(try count(&reader, atMost: StagedLayoutChanges.maximumChanges, "staged changes")) {
                changes.append(try decodeChange(&reader))
            }
            staged = StagedLayoutChanges(changes: changes, stamp: try decodeStamp(&reader))
            control.paused = try reader.readByte() == 1
            control.clusterConcurrency = try count(&reader, atMost: 1 << 20, "transfers")
            control.nodeConcurrency = try count(&reader, atMost: 1 << 20, "transfers")
            control.bytesPerSecond = try count(&reader, atMost: 1 << 50, "bytes per second")
            control.stamp = try decodeStamp(&reader)
            for _ in 0..<(try count(&reader, atMost: maximumMembers, "departing members")) {
                departing.insert(NodeID(rawValue: try reader.readFixed()))
            }
            switch try reader.readByte() {
            case 0: transition = nil
            case 1:
                let previous = try decodeLayout(&reader, shapeOnly: true)
                guard previous.partitionCount == partitionCount else {
                    throw KVError(
                        .corruptObject, "cluster metadata's previous layout has another partition count")
                }
                var abandoned: Set<NodeID> = []
                for _ in 0..<(try count(&reader, atMost: maximumMembers, "abandoned members")) {
                    abandoned.insert(NodeID(rawValue: try reader.readFixed()))
                }
                var sets: [Set<TransferSlot>] = []
                for _ in 0..<2 {
                    var slots: Set<TransferSlot> = []
                    let limit = partitionCount * ReplicationDefaults.maximumReplicas * 2
                    for _ in 0..<(try count(&reader, atMost: limit, "transfer slots")) {
                        let partition = try count(&reader, atMost: partitionCount - 1, "partition")
                        slots.insert(
                            TransferSlot(
                                partition: PartitionID(rawValue: UInt32(partition)),
                                node: NodeID(rawValue: try reader.readFixed())))
                    }
                    sets.append(slots)
                }
                transition = LayoutTransition(
                    previous: previous, abandoned: abandoned, received: sets[0], released: sets[1])
            case let flag: throw KVError(.corruptObject, "cluster metadata has transition flag \(flag)")
            }
        }
        var tokens: [String: AccessTokenEntry] = [:]
        if format >= 3 {
            for _ in 0..<(try count(&reader, atMost: maximumTokens, "tokens")) {
                let entry = try AccessTokenEntry.decode(&reader)
                tokens[entry.record.id] = entry
            }
        }
        guard reader.isAtEnd else { throw KVError(.corruptObject, "cluster metadata has trailing bytes") }
        var metadata = ClusterMetadata(
            member: ClusterMember(node: NodeID(rawValue: 0), peerAddress: "", httpAddress: ""),
            partitionCount: partitionCount, replicationFactor: replicationFactor)
        metadata.clusterID = clusterID
        metadata.contextSecret = secret
        metadata.members = members
        metadata.layout = layout
        metadata.tables = tables
        metadata.clock = clock
        metadata.staged = staged
        metadata.handoffControl = control
        metadata.departing = departing
        metadata.transition = transition
        metadata.tokens = tokens
        guard control.problems().isEmpty else {
            throw KVError(.corruptObject, "cluster metadata's transfer settings are out of range")
        }
        if let layout, layout.partitionCount != partitionCount {
            throw KVError(.corruptObject, "cluster metadata's layout has another partition count")
        }
        return metadata
    }

    private static func decodeLayout(_ reader: inout BinaryReader, shapeOnly: Bool = false) throws -> Layout {
        let version = try counter(&reader, "layout version")
        let partitionCount = try count(&reader, atMost: 1 << 16, "partitions")
        let replicationFactor = try count(&reader, atMost: ReplicationDefaults.maximumReplicas, "replicas")
        var members: [LayoutMember] = []
        for _ in 0..<(try count(&reader, atMost: maximumMembers, "members")) {
            let node = NodeID(rawValue: try reader.readFixed())
            let zone = try text(&reader)
            members.append(
                LayoutMember(
                    node: node, zone: zone, capacity: try count(&reader, atMost: 1 << 20, "capacity")))
        }
        var assignments: [[NodeID]] = []
        assignments.reserveCapacity(partitionCount)
        for _ in 0..<partitionCount {
            var list: [NodeID] = []
            for _ in 0..<(try count(&reader, atMost: ReplicationDefaults.maximumReplicas, "replicas")) {
                let index = try count(&reader, atMost: max(0, members.count - 1), "member index")
                guard index < members.count else { throw KVError(.corruptObject, "layout names no member") }
                list.append(members[index].node)
            }
            assignments.append(list)
        }
        let layout = Layout(
            version: version, partitionCount: partitionCount, replicationFactor: replicationFactor,
            members: members, assignments: assignments)
        let problems = layout.check(shapeOnly: shapeOnly)
        guard problems.isEmpty else {
            throw KVError(.corruptObject, "the layout breaks its rules: \(problems.joined(separator: "; "))")
        }
        return layout
    }

    private static func decodeStamp(_ reader: inout BinaryReader) throws -> MetadataStamp {
        MetadataStamp(time: try counter(&reader, "stamp"), node: NodeID(rawValue: try reader.readFixed()))
    }

    private static func decodeChange(_ reader: inout BinaryReader) throws -> LayoutChange {
        let tag = try reader.readByte()
        let node = NodeID(rawValue: try reader.readFixed())
        switch tag {
        case 1: return .join(node)
        case 2: return .leave(node, force: try reader.readByte() == 1)
        case 3:
            let new = NodeID(rawValue: try reader.readFixed())
            return .replace(node, with: new, force: try reader.readByte() == 1)
        case 4: return .setCapacity(node, try count(&reader, atMost: 1 << 20, "capacity"))
        case 5: return .setZone(node, try text(&reader, maximumBytes: 64))
        default: throw KVError(.corruptObject, "cluster metadata has layout change \(tag)")
        }
    }
}
