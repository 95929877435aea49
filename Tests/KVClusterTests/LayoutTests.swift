import KVCluster
import KVCore
import PropertyBased
import Testing

func member(_ index: Int, zone: String = "default", capacity: Int = 1) -> LayoutMember {
    LayoutMember(
        node: NodeID(rawValue: UInt64(index) &* 0x9E37_79B9_7F4A_7C15), zone: zone, capacity: capacity)
}

@Suite("Partition layout")
struct LayoutTests {
    @Test func computedLayoutsPassTheirCheck() async {
        await propertyCheck(
            count: 200, input: Gen.int(in: 1...9), Gen.int(in: 1...4), Gen.int(in: 1...3),
            Gen.int(in: 0...1000)
        ) { members, replicas, zones, seed in
            let list = (0..<members).map {
                member($0, zone: "z\(($0 + seed) % zones)", capacity: 1 + (($0 * 7 + seed) % 3))
            }
            let layout = Layout.computed(members: list, replicationFactor: replicas, partitionCount: 64)
            #expect(layout.check().isEmpty, "\(layout.check().prefix(3))")
        }
    }

    /// Each member holds its capacity's share, within one replica.
    @Test func replicasFollowCapacity() {
        let members = [
            member(1, capacity: 1), member(2, capacity: 2), member(3, capacity: 3), member(4, capacity: 2),
        ]
        let layout = Layout.computed(members: members, replicationFactor: 2, partitionCount: 256)
        #expect(layout.check().isEmpty)
        let counts = layout.replicaCounts
        let slots = 2.0 * 256
        for entry in members {
            let expected = slots * Double(entry.capacity) / 8
            #expect(
                abs(Double(counts[entry.node]!) - expected) <= 1,
                "\(entry.capacity): \(counts[entry.node]!) vs \(expected)")
        }
    }

    /// A member can hold at most one replica per partition; the rest spreads over the others.
    @Test func oneReplicaPerPartitionCapsLargeMembers() {
        let members = [member(1, capacity: 10), member(2), member(3)]
        let layout = Layout.computed(members: members, replicationFactor: 2, partitionCount: 64)
        #expect(layout.check().isEmpty)
        #expect(layout.replicaCounts[members[0].node] == 64)
        #expect(layout.replicaCounts[members[1].node]! + layout.replicaCounts[members[2].node]! == 64)
    }

    @Test func replicasSpreadOverZones() {
        let members = (0..<6).map { member($0, zone: ["a", "b", "c"][$0 % 3]) }
        let layout = Layout.computed(members: members, replicationFactor: 3, partitionCount: 128)
        let zoneOf = Dictionary(uniqueKeysWithValues: members.map { ($0.node, $0.zone) })
        for partition in 0..<128 {
            let zones = Set(layout.replicas(of: PartitionID(rawValue: UInt32(partition))).map { zoneOf[$0]! })
            #expect(zones.count == 3, "partition \(partition)")
        }
    }

    /// Adding one member to M equal ones moves about 1/(M+1) of the replicas (within
    /// 10 % of ideal), and every moved replica goes to the new member.
    @Test func addingAMemberMovesOnlyItsShare() async {
        await propertyCheck(count: 40, input: Gen.int(in: 1...15), Gen.int(in: 1...3)) { existing, replicas in
            let before = Layout.computed(
                members: (0..<existing).map { member($0) }, replicationFactor: replicas, partitionCount: 256)
            let newcomer = member(existing)
            let after = Layout.computed(
                members: (0..<existing).map { member($0) } + [newcomer], replicationFactor: replicas,
                partitionCount: 256,
                previous: before)
            #expect(after.check().isEmpty)
            #expect(after.version == before.version + 1)
            let width = min(replicas, existing + 1)
            let ideal = Double(256 * width) / Double(existing + 1)
            let moved = after.movedReplicas(from: before)
            // Growing from fewer members than replicas adds a replica everywhere.
            if existing >= replicas {
                #expect(
                    abs(Double(moved) - ideal) <= ideal * 0.1 + 1,
                    "M=\(existing) N=\(replicas): moved \(moved), ideal \(ideal)")
            }
            for (old, new) in zip(before.assignments, after.assignments) {
                #expect(Set(new).subtracting(old).allSatisfy { $0 == newcomer.node })
            }
        }
    }

    @Test func removingAMemberMovesOnlyItsReplicas() {
        let members = (0..<5).map { member($0) }
        let before = Layout.computed(members: members, replicationFactor: 3, partitionCount: 256)
        let after = Layout.computed(
            members: Array(members.dropLast()), replicationFactor: 3, partitionCount: 256, previous: before)
        #expect(after.check().isEmpty)
        #expect(after.movedReplicas(from: before) == before.replicaCounts[members[4].node])
    }

    @Test func layoutsAreDeterministic() {
        let members = (0..<7).map { member($0, zone: "z\($0 % 2)", capacity: 1 + $0 % 2) }
        let first = Layout.computed(members: members, replicationFactor: 3, partitionCount: 256)
        let second = Layout.computed(members: members.reversed(), replicationFactor: 3, partitionCount: 256)
        #expect(first == second)
    }

    /// Prints the balance and movement figures for the record (docs/layout.md).
    @Test func balanceAndMovementFigures() {
        var lines: [String] = ["members  replicas/member min..max  moved on join  ideal"]
        for existing in [3, 4, 5, 8] {
            let before = Layout.computed(
                members: (0..<existing).map { member($0) }, replicationFactor: 3, partitionCount: 256)
            let after = Layout.computed(
                members: (0...existing).map { member($0) }, replicationFactor: 3, partitionCount: 256,
                previous: before)
            let counts = after.replicaCounts.values
            let ideal = 256.0 * 3 / Double(existing + 1)
            lines.append(
                "\(existing) -> \(existing + 1)  \(counts.min()!)..\(counts.max()!)  \(after.movedReplicas(from: before))  \(Int(ideal.rounded()))"
            )
            #expect(counts.max()! - counts.min()! <= 1)
        }
        print(lines.joined(separator: "\n"))
    }
}
