import KVCore

/// A node as the layout sees it: who it is, where it is, and how much it should hold.
public struct LayoutMember: Hashable, Sendable, Comparable {
    /// The node.
    public var node: NodeID
    /// Its failure domain (rack, availability zone). Replicas of a partition go to
    /// distinct zones when there are enough zones.
    public var zone: String
    /// Its relative weight: a node of capacity 2 holds twice the partitions of one of
    /// capacity 1 (as far as "one replica per node per partition" allows).
    public var capacity: Int

    /// Creates a member.
    public init(node: NodeID, zone: String = "default", capacity: Int = 1) {
        self.node = node
        self.zone = zone
        self.capacity = capacity
    }

    public static func < (lhs: LayoutMember, rhs: LayoutMember) -> Bool { lhs.node < rhs.node }
}

/// Which nodes hold each partition, as one versioned, immutable value.
///
/// The key space is cut into a fixed power-of-two number of partitions, chosen when the
/// cluster is created (``PartitionID/of(namespace:table:encodedPartitionKey:partitionCount:)``
/// maps a row to one). The layout gives each partition an ordered preference list of
/// `replicationFactor` distinct nodes: the first are its primaries, in order.
///
/// ``computed(members:replicationFactor:partitionCount:previous:)`` builds the next
/// layout from the members and the previous layout, moving as little as possible:
/// 1. Zones share the replicas by total capacity, and each zone's members share its
///    part by capacity (largest remainders), never more than one replica per node and
///    per partition, and never more per zone than the zone rule allows: one when there
///    are at least as many zones as replicas.
/// 2. Replicas of the previous layout stay where they are, except on nodes that left.
///    Empty slots go to the members furthest below their quota.
/// 3. Single replicas then move from members above their quota to members below it,
///    each move in a partition where it keeps the nodes distinct and the zones legal.
///
/// Adding one member to M equal ones therefore moves about 1/(M+1) of the replicas,
/// and only replicas that must move: the new member's share.
///
/// Everything is deterministic: iteration is over sorted arrays and ties break by node
/// id, never by Swift's per-process seeded hashing, so every node computes the same
/// layout from the same inputs.
public struct Layout: Hashable, Sendable {
    /// Increases with every committed change.
    public var version: UInt64
    /// The number of partitions (a power of two).
    public let partitionCount: Int
    /// Replicas per partition.
    public let replicationFactor: Int
    /// The members, sorted by node id.
    public let members: [LayoutMember]
    /// For each partition, its ordered preference list.
    public let assignments: [[NodeID]]

    /// The preference list of `partition`.
    public func replicas(of partition: PartitionID) -> [NodeID] {
        assignments[Int(partition.rawValue)]
    }

    /// How many partition replicas each member holds.
    public var replicaCounts: [NodeID: Int] {
        var counts = Dictionary(uniqueKeysWithValues: members.map { ($0.node, 0) })
        for list in assignments {
            for node in list { counts[node, default: 0] += 1 }
        }
        return counts
    }

    /// An empty layout (no members) for `partitionCount` partitions.
    public static func empty(partitionCount: Int, replicationFactor: Int) -> Layout {
        Layout(
            version: 0, partitionCount: partitionCount, replicationFactor: replicationFactor, members: [],
            assignments: Array(repeating: [], count: partitionCount))
    }

    /// How many replicas each member should hold: proportional to capacity, at most one
    /// per partition, by largest remainder (ties to the smaller node id).
    static func quotas(members: [LayoutMember], slots: Int, partitionCount: Int) -> [NodeID: Int] {
        var quotas: [NodeID: Int] = [:]
        var remaining = slots
        var open = members.filter { $0.capacity > 0 }
        // Capping a member at one replica per partition frees slots for the others, so
        // repeat until no member is over the cap.
        while remaining > 0 && !open.isEmpty {
            let totalCapacity = open.reduce(0) { $0 + $1.capacity }
            var shares: [(member: LayoutMember, whole: Int, remainder: Int)] = open.map { member in
                let exact = remaining * member.capacity
                return (member, exact / totalCapacity, exact % totalCapacity)
            }
            var leftover = remaining - shares.reduce(0) { $0 + $1.whole }
            let byRemainder = shares.indices.sorted {
                (shares[$0].remainder, shares[$1].member.node) > (
                    shares[$1].remainder, shares[$0].member.node
                )
            }
            for index in byRemainder where leftover > 0 {
                shares[index].whole += 1
                leftover -= 1
            }
            let capped = shares.filter { (quotas[$0.member.node] ?? 0) + $0.whole > partitionCount }
            if capped.isEmpty {
                for share in shares { quotas[share.member.node, default: 0] += share.whole }
                return quotas
            }
            for share in capped {
                remaining -= partitionCount - (quotas[share.member.node] ?? 0)
                quotas[share.member.node] = partitionCount
            }
            let cappedNodes = Set(capped.map(\.member.node))
            open.removeAll { cappedNodes.contains($0.node) }
        }
        return quotas
    }

    /// How many replicas of each partition a zone may hold: one when there are at least
    /// as many zones as replicas, otherwise just enough to place them all while every
    /// zone holds at least one.
    static func zoneLimit(width: Int, zones: Int) -> Int {
        zones >= width ? 1 : width - zones + 1
    }

    /// Member quotas in two steps: zones share the slots by their total capacity (at
    /// most `zoneLimit` replicas per partition), then each zone's members share its slots.
    static func memberQuotas(members: [LayoutMember], width: Int, partitionCount: Int) -> [NodeID: Int] {
        let active = members.filter { $0.capacity > 0 }
        let zoneNames = Array(Set(active.map(\.zone))).sorted()
        let limit = zoneLimit(width: width, zones: zoneNames.count)
        // Zones are stood in for by synthetic members so the same largest-remainder
        // sharing applies; their ids are their positions in the sorted zone list.
        let zoneMembers = zoneNames.enumerated().map { index, zone in
            LayoutMember(
                node: NodeID(rawValue: UInt64(index)), zone: zone,
                capacity: active.filter { $0.zone == zone }.reduce(0) { $0 + $1.capacity })
        }
        let zoneQuotas = quotas(
            members: zoneMembers, slots: width * partitionCount, partitionCount: partitionCount * limit)
        var result: [NodeID: Int] = [:]
        for zoneMember in zoneMembers {
            let inZone = active.filter { $0.zone == zoneMember.zone }
            let shares = quotas(
                members: inZone, slots: zoneQuotas[zoneMember.node] ?? 0, partitionCount: partitionCount)
            result.merge(shares) { $1 }
        }
        return result
    }

    /// The next layout for `members`, moving as few replicas as possible from `previous`.
    public static func computed(
        members unsortedMembers: [LayoutMember], replicationFactor: Int, partitionCount: Int,
        previous: Layout? = nil
    ) -> Layout {
        precondition(
            partitionCount > 0 && partitionCount & (partitionCount - 1) == 0,
            "the partition count must be a power of two, got \(partitionCount)")
        let members = unsortedMembers.sorted()
        let active = members.filter { $0.capacity > 0 }
        let width = min(replicationFactor, active.count)
        let quotas = memberQuotas(members: members, width: width, partitionCount: partitionCount)
        let zoneOf = Dictionary(uniqueKeysWithValues: members.map { ($0.node, $0.zone) })
        let limit = zoneLimit(width: width, zones: Set(active.map(\.zone)).count)

        // 1. Keep the previous replicas that are still members with a quota.
        var lists: [[NodeID]] = (0..<partitionCount).map { partition in
            guard let previous, previous.partitionCount == partitionCount else { return [] }
            return Array(previous.assignments[partition].filter { (quotas[$0] ?? 0) > 0 }.prefix(width))
        }
        var held: [NodeID: Int] = [:]
        for list in lists { for node in list { held[node, default: 0] += 1 } }
        func deficit(_ node: NodeID) -> Int { (quotas[node] ?? 0) - (held[node] ?? 0) }
        func zoneCount(_ zone: String, in list: [NodeID]) -> Int { list.filter { zoneOf[$0] == zone }.count }

        // 2. Fill empty slots: a member not yet in the partition whose zone has room,
        //    preferring the largest deficit, then an unused zone, then the smaller id.
        for partition in 0..<partitionCount {
            while lists[partition].count < width {
                let candidates = active.filter { member in
                    !lists[partition].contains(member.node)
                        && zoneCount(member.zone, in: lists[partition]) < limit
                }
                guard
                    let chosen = candidates.min(by: { a, b in
                        if deficit(a.node) != deficit(b.node) { return deficit(a.node) > deficit(b.node) }
                        let newZoneA = zoneCount(a.zone, in: lists[partition]) == 0
                        let newZoneB = zoneCount(b.zone, in: lists[partition]) == 0
                        if newZoneA != newZoneB { return newZoneA }
                        return a.node < b.node
                    })
                else { break }
                lists[partition].append(chosen.node)
                held[chosen.node, default: 0] += 1
            }
        }

        // 3. Move single replicas from members over their quota to members under it, in
        //    partitions where the swap keeps nodes distinct and zones within their limit.
        //    Every move is one the new quotas require, so nothing else moves.
        var moved = true
        while moved {
            moved = false
            for under in active where deficit(under.node) > 0 {
                for over in active where deficit(over.node) < 0 {
                    // Start the search at a different partition for each pair, so moves
                    // spread over the key space instead of piling up at its start.
                    let start = Int((under.node.rawValue ^ over.node.rawValue) % UInt64(partitionCount))
                    for step in 0..<partitionCount where deficit(under.node) > 0 && deficit(over.node) < 0 {
                        let partition = (start + step) % partitionCount
                        guard let slot = lists[partition].firstIndex(of: over.node),
                            !lists[partition].contains(under.node)
                        else { continue }
                        var replaced = lists[partition]
                        replaced.remove(at: slot)
                        guard zoneCount(under.zone, in: replaced) < limit else { continue }
                        lists[partition][slot] = under.node
                        held[over.node, default: 0] -= 1
                        held[under.node, default: 0] += 1
                        moved = true
                    }
                }
            }
        }
        // 4. Order each partition's replicas by a stable hash of (partition, node), so the
        //    first replica (the primary, which forwarded writes go to) is spread evenly
        //    and a node keeps its rank in a partition while other members come and go.
        //    Reordering moves no data.
        for partition in 0..<partitionCount {
            lists[partition].sort {
                (rank(partition, $0), $0) < (rank(partition, $1), $1)
            }
        }
        return Layout(
            version: ClusterMetadata.next(after: previous?.version ?? 0), partitionCount: partitionCount,
            replicationFactor: replicationFactor,
            members: members, assignments: lists)
    }

    /// The order of `node` among a partition's replicas: the placement hash of the
    /// partition number and node id (both big-endian).
    static func rank(_ partition: Int, _ node: NodeID) -> UInt64 {
        var writer = BinaryWriter(capacity: 16)
        writer.writeFixed(UInt64(partition))
        writer.writeFixed(node.rawValue)
        return StableHash.hash(writer.bytes)
    }

    /// Every way this layout breaks its rules, one sentence each; empty when valid.
    /// With `shapeOnly` the replica count and zone rules are not checked (the previous
    /// owners of a layout change in progress mix two layouts, each of which kept them).
    ///
    /// Every node decodes and checks each layout that gossip brings, for every partition,
    /// so the per-partition checks hash no strings and build no sets: members and zones
    /// are numbered once. A member listed twice is a problem, not a trap.
    public func check(shapeOnly: Bool = false) -> [String] {
        var problems: [String] = []
        if partitionCount <= 0 || partitionCount & (partitionCount - 1) != 0 {
            problems.append("the partition count \(partitionCount) is not a power of two")
        }
        if assignments.count != partitionCount {
            problems.append("there are \(assignments.count) assignments for \(partitionCount) partitions")
        }
        // Each member's zone as a number (the first record of a member listed twice).
        var zoneOfMember: [NodeID: Int] = [:]
        var zoneNumbers: [String: Int] = [:]
        var activeZones = Set<Int>()
        var activeCount = 0
        var repeated = false
        for member in members {
            let zone = zoneNumbers[member.zone] ?? zoneNumbers.count
            zoneNumbers[member.zone] = zone
            if zoneOfMember[member.node] == nil {
                zoneOfMember[member.node] = zone
            } else {
                repeated = true
            }
            if member.capacity > 0 {
                activeCount += 1
                activeZones.insert(zone)
            }
        }
        if repeated { problems.append("a member appears twice") }
        let width = min(replicationFactor, activeCount)
        let limit = Self.zoneLimit(width: width, zones: activeZones.count)
        let zoneNames = zoneNumbers.sorted { $0.value < $1.value }.map(\.key)
        // Per partition: how many of its replicas each zone holds, in order of appearance.
        var zoneCounts: [(zone: Int, count: Int)] = []
        for (partition, list) in assignments.enumerated() {
            if (!shapeOnly && list.count != width) || (list.isEmpty && width > 0) {
                problems.append("partition \(partition) has \(list.count) replicas, not \(width)")
            }
            if Self.repeatsANode(list) { problems.append("partition \(partition) repeats a node") }
            zoneCounts.removeAll(keepingCapacity: true)
            for node in list {
                guard let zone = zoneOfMember[node] else {
                    problems.append("partition \(partition) is assigned to \(node), which is not a member")
                    continue
                }
                if let index = zoneCounts.firstIndex(where: { $0.zone == zone }) {
                    zoneCounts[index].count += 1
                } else {
                    zoneCounts.append((zone, 1))
                }
            }
            guard !shapeOnly else { continue }
            for (zone, count) in zoneCounts where count > limit {
                problems.append(
                    "partition \(partition) has more than \(limit) replicas in zone \(zoneNames[zone])")
            }
        }
        return problems
    }

    /// Whether `list` names a node twice; a preference list is short, so comparing
    /// pairs is cheaper than hashing.
    private static func repeatsANode(_ list: [NodeID]) -> Bool {
        guard list.count <= 32 else { return Set(list).count != list.count }
        for (index, node) in list.enumerated() where list[(index + 1)...].contains(node) { return true }
        return false
    }

    /// The replicas that differ between two layouts: how many (partition, node) slots
    /// the newer one adds.
    public func movedReplicas(from previous: Layout) -> Int {
        zip(previous.assignments, assignments).reduce(0) { total, pair in
            total + Set(pair.1).subtracting(pair.0).count
        }
    }
}
