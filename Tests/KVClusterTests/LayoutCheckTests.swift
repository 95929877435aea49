import KVCore
import Testing

@testable import KVCluster

/// ``Layout/check(shapeOnly:)`` runs for every layout gossip brings, so it numbers members
/// and zones instead of hashing strings per partition; it must find exactly what the
/// straightforward check finds.
@Suite("Layout check")
struct LayoutCheckTests {
    /// The check as first written, with sets and string-keyed dictionaries; a member
    /// listed twice keeps its first zone (the first version trapped on one).
    static func referenceProblems(_ layout: Layout, shapeOnly: Bool) -> [String] {
        var problems: [String] = []
        let partitionCount = layout.partitionCount
        if partitionCount <= 0 || partitionCount & (partitionCount - 1) != 0 {
            problems.append("the partition count \(partitionCount) is not a power of two")
        }
        if layout.assignments.count != partitionCount {
            problems.append(
                "there are \(layout.assignments.count) assignments for \(partitionCount) partitions")
        }
        let memberIDs = Set(layout.members.map(\.node))
        if memberIDs.count != layout.members.count { problems.append("a member appears twice") }
        let active = layout.members.filter { $0.capacity > 0 }
        let width = min(layout.replicationFactor, active.count)
        let zones = Set(active.map(\.zone)).count
        let zoneOf = Dictionary(
            layout.members.map { ($0.node, $0.zone) }, uniquingKeysWith: { first, _ in first })
        for (partition, list) in layout.assignments.enumerated() {
            if (!shapeOnly && list.count != width) || (list.isEmpty && width > 0) {
                problems.append("partition \(partition) has \(list.count) replicas, not \(width)")
            }
            if Set(list).count != list.count { problems.append("partition \(partition) repeats a node") }
            for node in list where !memberIDs.contains(node) {
                problems.append("partition \(partition) is assigned to \(node), which is not a member")
            }
            guard !shapeOnly else { continue }
            let limit = Layout.zoneLimit(width: width, zones: zones)
            for zone in Set(list.compactMap { zoneOf[$0] })
            where list.filter({ zoneOf[$0] == zone }).count > limit {
                problems.append("partition \(partition) has more than \(limit) replicas in zone \(zone)")
            }
        }
        return problems
    }

    /// A layout that may break any rule: odd partition counts, missing or extra
    /// assignments, members listed twice, idle members, nodes that are no member,
    /// repeated nodes and crowded zones.
    static func randomLayout(_ random: inout SeededRandom) -> Layout {
        let nodes = (0..<Int.random(in: 1...6, using: &random)).map { NodeID(rawValue: UInt64($0) + 1) }
        var members = nodes.map { node in
            LayoutMember(
                node: node, zone: "z\(Int.random(in: 0...2, using: &random))",
                capacity: Int.random(in: 0...2, using: &random))
        }
        if Int.random(in: 0...4, using: &random) == 0, let twice = members.randomElement(using: &random) {
            members.append(LayoutMember(node: twice.node, zone: "z9", capacity: 1))
        }
        let partitionCount = [1, 2, 3, 4, 8].randomElement(using: &random)!
        let assignmentCount = Int.random(in: 0...4, using: &random) == 0 ? partitionCount + 1 : partitionCount
        let candidates = nodes + [NodeID(rawValue: 99)]
        let assignments = (0..<assignmentCount).map { _ in
            (0..<Int.random(in: 0...4, using: &random)).map { _ in candidates.randomElement(using: &random)! }
        }
        return Layout(
            version: 1, partitionCount: partitionCount,
            replicationFactor: Int.random(in: 1...3, using: &random),
            members: members, assignments: assignments)
    }

    @Test("it finds exactly the problems the straightforward check finds, on layouts of every kind")
    func matchesTheReference() {
        var broken = 0
        for seed in 0..<3_000 {
            var random = SeededRandom(seed: UInt64(seed))
            let layout = Self.randomLayout(&random)
            for shapeOnly in [false, true] {
                let found = layout.check(shapeOnly: shapeOnly)
                #expect(
                    found.sorted() == Self.referenceProblems(layout, shapeOnly: shapeOnly).sorted(),
                    "seed \(seed), shapeOnly \(shapeOnly)")
                if !found.isEmpty { broken += 1 }
            }
        }
        // The generator must make broken layouts and sound ones.
        #expect(broken > 1_000 && broken < 5_950, "\(broken) of 6,000 broken")
    }

    @Test("a layout that lists a member twice has that problem named, not a trap")
    func memberListedTwice() throws {
        let node = NodeID(rawValue: 7)
        let layout = Layout(
            version: 1, partitionCount: 1, replicationFactor: 1,
            members: [LayoutMember(node: node, zone: "a"), LayoutMember(node: node, zone: "b")],
            assignments: [[node]])
        #expect(layout.check().contains("a member appears twice"))
    }
}
