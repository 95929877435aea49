import KVCore
import Testing

@testable import KVCluster

/// How metadata spreads, event in, actions out, written from the rules in
/// ``MetadataGossip``'s documentation.
@Suite("Metadata gossip")
struct MetadataGossipTests {
    static let members = (0..<3).map { clusterMember($0) }
    static let me = members[1]
    static let secret = [UInt8](repeating: 9, count: 16)

    /// This node's copy, knowing `known` members, unformed.
    static func unformed(knowing known: [ClusterMember] = members) -> ClusterMetadata {
        var metadata = ClusterMetadata(member: me, partitionCount: 16, replicationFactor: 3)
        for member in known { metadata.announce(member) }
        return metadata
    }

    /// A formed copy of the three members, formed by the smallest id.
    static func formed() -> ClusterMetadata {
        let first = members.map(\.node).min()!
        return unformed().formed(by: first, clusterID: 77, secret: secret, expectedMembers: 3)!
    }

    @Test("each tick pushes to the next other member in node-id order, round after round")
    func rounds() {
        var machine = MetadataGossip(node: Self.me.node)
        let others = Self.members.map(\.node).filter { $0 != Self.me.node }.sorted()
        var targets: [NodeID] = []
        for _ in 0..<4 {
            for case .push(let peer) in machine.tick(Self.unformed()) { targets.append(peer) }
        }
        #expect(targets.count == 4)
        #expect(Set(targets.prefix(2)) == Set(others))
        #expect(targets[0] == targets[2] && targets[1] == targets[3])
        // Alone, there is no one to push to.
        #expect(machine.tick(Self.unformed(knowing: [])).isEmpty)
    }

    @Test("a probe with another digest gets this node's copy, at most once per interval per peer")
    func probes() {
        var machine = MetadataGossip(node: Self.me.node)
        let peer = Self.members[0].node
        let metadata = Self.formed()
        #expect(
            machine.probeArrived(digest: 1, from: peer, metadata: metadata, ownDigest: 1, nowMilliseconds: 0)
                .isEmpty)
        #expect(
            machine.probeArrived(digest: 2, from: peer, metadata: metadata, ownDigest: 1, nowMilliseconds: 0)
                == [.push(to: peer)])
        #expect(
            machine.probeArrived(
                digest: 2, from: peer, metadata: metadata, ownDigest: 1, nowMilliseconds: 499
            )
            .isEmpty)
        // Another peer has its own interval.
        let other = Self.members[2].node
        #expect(
            machine.probeArrived(
                digest: 2, from: other, metadata: metadata, ownDigest: 1, nowMilliseconds: 499)
                == [.push(to: other)])
        #expect(
            machine.probeArrived(
                digest: 2, from: peer, metadata: metadata, ownDigest: 1, nowMilliseconds: 500)
                == [.push(to: peer)])
        // A node that knows no one has nothing to spread.
        var lonely = MetadataGossip(node: Self.me.node)
        var empty = Self.unformed(knowing: [])
        empty.members = [:]
        #expect(
            lonely.probeArrived(digest: 2, from: peer, metadata: empty, ownDigest: 1, nowMilliseconds: 0)
                .isEmpty)
    }

    @Test(
        "a peer's copy is merged; the peer gets this copy back only if it lacks something, and a push id is acknowledged"
    )
    func merging() {
        var machine = MetadataGossip(node: Self.me.node)
        let peer = Self.members[0].node
        let formed = Self.formed()
        // This node is behind: it takes the formed copy, and the peer lacks nothing.
        let behind = MetadataGossip.adopt(formed, into: Self.unformed(), own: Self.me, formation: nil)
        #expect(behind.refusal == nil && behind.metadata.isFormed && behind.metadata.clusterID == 77)
        #expect(
            machine.pushHandled(theirs: formed, id: 5, from: peer, refusal: nil, current: behind.metadata)
                == [.acknowledge(id: 5, to: peer)])
        // The peer is behind: it gets this node's copy back.
        let ahead = MetadataGossip.adopt(Self.unformed(), into: formed, own: Self.me, formation: nil)
        #expect(ahead.metadata == formed)
        #expect(
            machine.pushHandled(
                theirs: Self.unformed(), id: nil, from: peer, refusal: nil, current: ahead.metadata)
                == [.push(to: peer)])
    }

    @Test("a copy of another cluster is refused, reported once per reason, and changes nothing")
    func refusals() throws {
        var machine = MetadataGossip(node: Self.me.node)
        let peer = Self.members[0].node
        let other = ClusterMetadata(member: Self.members[0], partitionCount: 32, replicationFactor: 3)
        let adoption = MetadataGossip.adopt(other, into: Self.formed(), own: Self.me, formation: nil)
        #expect(adoption.metadata == Self.formed())
        let reason = try #require(adoption.refusal)
        #expect(reason.contains("partitions"))
        let first = machine.pushHandled(
            theirs: other, id: 3, from: peer, refusal: reason, current: adoption.metadata)
        #expect(first == [.refused(reason: reason, from: peer)])
        #expect(
            machine.pushHandled(theirs: other, id: 4, from: peer, refusal: reason, current: adoption.metadata)
                .isEmpty)
    }

    @Test("a copy whose record of this node is not what the node is gets corrected with a newer revision")
    func ownRecordCorrected() throws {
        var restored = Self.me
        restored.peerAddress = "10.0.0.9:1"
        restored.revision = 4
        var theirs = Self.formed()
        theirs.announce(restored)
        let adoption = MetadataGossip.adopt(theirs, into: Self.formed(), own: Self.me, formation: nil)
        let record = try #require(adoption.metadata.members[Self.me.node])
        #expect(record.peerAddress == Self.me.peerAddress)
        #expect(record.revision == 5)
    }

    @Test("the smallest known id forms the cluster once the expected members are known, and no one else does")
    func formation() {
        let formation = MetadataGossip.Formation(expectedMembers: 3, clusterID: 42, secret: Self.secret)
        let smallest = Self.members.min { $0.node < $1.node }!
        var known = ClusterMetadata(member: smallest, partitionCount: 16, replicationFactor: 3)
        for member in Self.members.prefix(2) { known.announce(member) }
        // Two of the three expected are known: not yet.
        let early = MetadataGossip.adopt(nil, into: known, own: smallest, formation: formation)
        #expect(!early.formed && !early.metadata.isFormed)
        known.announce(Self.members[2])
        let formed = MetadataGossip.adopt(nil, into: known, own: smallest, formation: formation)
        #expect(formed.formed && formed.metadata.clusterID == 42 && formed.metadata.layout != nil)
        // Any other member waits to learn it.
        let other = Self.members.first { $0.node != smallest.node }!
        #expect(!MetadataGossip.adopt(nil, into: known, own: other, formation: formation).formed)
        // A formed cluster is not formed again.
        #expect(!MetadataGossip.adopt(nil, into: formed.metadata, own: smallest, formation: formation).formed)
    }

    @Test(
        "a change of the layout, members, transition, staging, limits or departures goes to every other member, made here or adopted"
    )
    func changes() throws {
        let machine = MetadataGossip(node: Self.me.node)
        let before = Self.formed()
        var tables = before
        tables.record(try TableName(namespace: "a", table: "b"), nil, by: Self.me.node)
        #expect(machine.changed(from: before, to: tables, cause: .own).isEmpty)
        var control = before
        control.handoffControl.paused = true
        let others = Self.members.map(\.node).filter { $0 != Self.me.node }.sorted()
        #expect(machine.changed(from: before, to: control, cause: .adopted) == others.map { .push(to: $0) })
        var member = before
        var moved = Self.members[2]
        moved.revision += 1
        moved.peerAddress = "127.0.0.9:1"
        member.announce(moved)
        #expect(machine.changed(from: before, to: member, cause: .adopted).count == 2)
    }

    @Test("receipts and releases go to every other member from the node that records them, and no further")
    func progressSpreadsFromItsMaker() throws {
        let machine = MetadataGossip(node: Self.me.node)
        let others = Self.members.map(\.node).filter { $0 != Self.me.node }.sorted()
        var moving = Self.formed()
        let layout = try #require(moving.layout)
        // The first two members held every partition; the third receives each.
        let holders = Array(layout.members.prefix(2))
        let newcomer = layout.members[2].node
        moving.transition = LayoutTransition(
            previous: Layout(
                version: layout.version - 1, partitionCount: layout.partitionCount, replicationFactor: 2,
                members: holders,
                assignments: Array(repeating: holders.map(\.node), count: layout.partitionCount)))
        var received = moving
        received.markReceived(PartitionID(rawValue: 3), by: newcomer)
        var released = received
        released.markReleased(PartitionID(rawValue: 3), by: holders[0].node)
        #expect(received.transition != nil && released.transition != nil)
        for (before, after) in [(moving, received), (received, released)] {
            #expect(machine.changed(from: before, to: after, cause: .own) == others.map { .push(to: $0) })
            #expect(machine.changed(from: before, to: after, cause: .adopted).isEmpty)
        }
        // The last receipt settles the change: its end is pushed on by whoever adopts it.
        var settled = moving
        for partition in 0..<layout.partitionCount {
            settled.markReceived(PartitionID(rawValue: UInt32(partition)), by: newcomer)
        }
        #expect(settled.transition == nil)
        #expect(machine.changed(from: received, to: settled, cause: .adopted) == others.map { .push(to: $0) })
        // So is a transition that starts, or whose abandoned owners change.
        #expect(
            machine.changed(from: Self.formed(), to: moving, cause: .adopted) == others.map { .push(to: $0) })
        var abandoned = received
        abandoned.transition?.abandoned.insert(holders[1].node)
        #expect(
            machine.changed(from: received, to: abandoned, cause: .adopted) == others.map { .push(to: $0) })
    }

    @Test("an adoption is this node's own change when it formed the cluster or corrected its own record")
    func adoptionCause() {
        let peerCopy = Self.formed()
        let adopted = MetadataGossip.adopt(peerCopy, into: Self.unformed(), own: Self.me, formation: nil)
        #expect(adopted.cause(merging: true) == .adopted)
        #expect(adopted.cause(merging: false) == .own)
        // A peer's copy with a stale record of this node: the corrected copy is news to all.
        var moved = Self.me
        moved.peerAddress = "127.0.0.9:1"
        let corrected = MetadataGossip.adopt(peerCopy, into: Self.unformed(), own: moved, formation: nil)
        #expect(corrected.corrected && corrected.cause(merging: true) == .own)
        let smallest = Self.members.min { $0.node < $1.node }!
        let formation = MetadataGossip.Formation(expectedMembers: 3, clusterID: 42, secret: Self.secret)
        let formed = MetadataGossip.adopt(
            Self.unformed(), into: Self.unformed(), own: smallest, formation: formation)
        #expect(formed.formed && formed.cause(merging: true) == .own)
    }
}
