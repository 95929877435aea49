import KVCluster
import KVCore
import PropertyBased
import Testing

/// A node record for node number `index`.
func clusterMember(_ index: Int) -> ClusterMember {
    ClusterMember(
        node: NodeID(rawValue: UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15),
        peerAddress: "127.0.0.1:\(8700 + index)",
        httpAddress: "127.0.0.1:\(7700 + index)")
}

/// Metadata that has seen some of `members` (in differing revisions and addresses,
/// as nodes that restarted would announce them), perhaps a later layout, and some table
/// changes, made from a seed.
func metadata(seed: Int, members: [ClusterMember], formed: ClusterMetadata?) -> ClusterMetadata {
    var random = SeededRandom(seed: UInt64(seed))
    var result =
        formed
        ?? ClusterMetadata(
            member: members[Int.random(in: 0..<members.count, using: &random)], partitionCount: 16,
            replicationFactor: 3)
    for member in members where Bool.random(using: &random) {
        var variant = member
        variant.revision = UInt64.random(in: 1...3, using: &random)
        if Bool.random(using: &random) { variant.peerAddress = "127.0.0.2:\(9000 + Int(variant.revision))" }
        if Bool.random(using: &random) { variant.capacity = Int.random(in: 1...2, using: &random) }
        result.announce(variant)
    }
    // Some copies move on to a later layout, staged and committed from the members they
    // know: two copies can hold different layouts of one version. Some record transfers
    // of the change as received or released, stage more, or change the transfer limits.
    if result.isFormed, Bool.random(using: &random), let layout = result.layout {
        let committer = members[Int.random(in: 0..<members.count, using: &random)].node
        let unplaced = result.members.keys.filter { node in !layout.members.contains { $0.node == node } }
            .sorted()
        for node in unplaced { try? result.stage(.join(node), by: committer) }
        if let plan = try? result.plan(), let next = try? result.committed(plan: plan.id, by: committer) {
            result = next
        }
        if let transition = result.transition, let target = result.layout {
            for index in 0..<target.partitionCount where Bool.random(using: &random) {
                let partition = PartitionID(rawValue: UInt32(index))
                for node in transition.destinations(of: partition, in: target)
                where Bool.random(using: &random) {
                    result.markReceived(partition, by: node)
                }
                for node in transition.leavers(of: partition, in: target) where Bool.random(using: &random) {
                    result.markReleased(partition, by: node)
                }
            }
        }
    }
    if result.isFormed, Bool.random(using: &random) {
        let node = members[Int.random(in: 0..<members.count, using: &random)].node
        try? result.control(by: node) { $0.paused = Bool.random(using: &random) }
    }
    for _ in 0..<Int.random(in: 0...4, using: &random) {
        let name = try! TableName(namespace: "ns", table: "t\(Int.random(in: 0...3, using: &random))")
        let schema = try! KeySchema([.string])
        let descriptor =
            Bool.random(using: &random)
            ? TableDescriptor(name: name, schema: schema, generation: random.next()) : nil
        result.record(name, descriptor, by: members[Int.random(in: 0..<members.count, using: &random)].node)
    }
    // Tokens created, and some revoked, through different nodes.
    for _ in 0..<Int.random(in: 0...3, using: &random) {
        let index = Int.random(in: 0...3, using: &random)
        let token = AccessTokenRecord(
            id: "000000000000000\(index)", name: "token \(index)",
            hash: Array(repeating: UInt8(index), count: 32),
            grants: try! AccessGrants([index == 0 ? "*" : "ns\(index)": .read]), createdAtMilliseconds: 1,
            expiresAtMilliseconds: Bool.random(using: &random) ? 5 : nil, revoked: Bool.random(using: &random)
        )
        try! result.record(token, by: members[Int.random(in: 0..<members.count, using: &random)].node)
    }
    return result
}

@Suite("Cluster metadata")
struct ClusterMetadataTests {
    static let members = (0..<4).map(clusterMember)

    static func formedCluster() -> ClusterMetadata {
        var metadata = ClusterMetadata(member: members[0], partitionCount: 16, replicationFactor: 3)
        for member in members.prefix(3) { metadata.announce(member) }
        let smallest = members.prefix(3).map(\.node).min()!
        return metadata.formed(
            by: smallest, clusterID: 42, secret: Array(repeating: 7, count: 16), expectedMembers: 3)!
    }

    @Test("merging is commutative, associative and idempotent, so nodes converge in any order")
    func mergeIsASemilattice() async {
        let formed = Self.formedCluster()
        await propertyCheck(
            count: 300, input: Gen.int(in: 0...1_000_000), Gen.int(in: 0...1_000_000),
            Gen.int(in: 0...1_000_000)
        ) {
            a, b, c in
            let x = metadata(seed: a, members: Self.members, formed: a % 3 == 0 ? nil : formed)
            let y = metadata(seed: b, members: Self.members, formed: b % 3 == 0 ? nil : formed)
            let z = metadata(seed: c, members: Self.members, formed: formed)
            var xy = x
            xy.merge(y)
            var yx = y
            yx.merge(x)
            #expect(xy == yx)
            var twice = xy
            #expect(twice.merge(y) == .unchanged)
            var left = xy
            left.merge(z)
            var yz = y
            yz.merge(z)
            var right = x
            right.merge(yz)
            #expect(left == right)
        }
    }

    @Test("only the smallest node forms, and only once every expected member is known")
    func formation() {
        var metadata = ClusterMetadata(member: Self.members[1], partitionCount: 16, replicationFactor: 3)
        let secret = Array(repeating: UInt8(1), count: 16)
        #expect(
            metadata.formed(by: Self.members[1].node, clusterID: 9, secret: secret, expectedMembers: 2) == nil
        )
        metadata.announce(Self.members[2])
        let smallest = [Self.members[1].node, Self.members[2].node].min()!
        let other = [Self.members[1].node, Self.members[2].node].max()!
        #expect(metadata.formed(by: other, clusterID: 9, secret: secret, expectedMembers: 2) == nil)
        let formed = metadata.formed(by: smallest, clusterID: 9, secret: secret, expectedMembers: 2)
        #expect(formed?.isFormed == true)
        #expect(formed?.layout?.version == 1)
        #expect(formed?.layout?.check().isEmpty == true)
        #expect(formed?.formed(by: smallest, clusterID: 10, secret: secret, expectedMembers: 2) == nil)
    }

    @Test("a joiner adopts the cluster and waits unplaced until a staged join is committed")
    func joinIsStaged() throws {
        let formed = Self.formedCluster()
        var joiner = ClusterMetadata(member: Self.members[3], partitionCount: 16, replicationFactor: 3)
        #expect(joiner.merge(formed) == .changed)
        #expect(joiner.clusterID == 42 && joiner.contextSecret == formed.contextSecret)
        var seed = formed
        seed.merge(joiner)
        #expect(seed.members.count == 4)
        #expect(seed.layout == formed.layout, "nothing changes the layout before a commit")
        try seed.stage(.join(Self.members[3].node), by: Self.members[0].node)
        let plan = try seed.plan()
        let committed = try seed.committed(plan: plan.id, by: Self.members[0].node)
        #expect(committed.layout!.version == 2)
        #expect(committed.layout!.members.count == 4)
        #expect(plan.movedReplicas == committed.layout!.replicaCounts[Self.members[3].node])
        #expect(
            committed.layout!.movedReplicas(from: formed.layout!)
                == committed.layout!.replicaCounts[Self.members[3].node])
        #expect(committed.staged.changes.isEmpty)
        #expect(throws: KVError.self) { _ = try committed.committed(plan: plan.id, by: Self.members[0].node) }
    }

    @Test("another cluster's metadata, or another partition count, is refused")
    func refusals() {
        var mine = Self.formedCluster()
        var other = ClusterMetadata(member: Self.members[3], partitionCount: 16, replicationFactor: 3)
        other = other.formed(
            by: Self.members[3].node, clusterID: 99, secret: Array(repeating: 3, count: 16),
            expectedMembers: 1)!
        guard case .refused = mine.merge(other) else {
            Issue.record("merged another cluster")
            return
        }
        let wrongCount = ClusterMetadata(member: Self.members[3], partitionCount: 32, replicationFactor: 3)
        guard case .refused = mine.merge(wrongCount) else {
            Issue.record("merged another partition count")
            return
        }
        #expect(mine == Self.formedCluster())
    }

    @Test("the encoding round-trips, and arbitrary or corrupted bytes are refused without crashing")
    func encoding() async {
        let formed = Self.formedCluster()
        await propertyCheck(count: 200, input: Gen.int(in: 0...1_000_000)) { seed in
            let value = metadata(seed: seed, members: Self.members, formed: seed % 2 == 0 ? nil : formed)
            #expect((try? ClusterMetadata.decode(value.encoded())) == value)
            var bytes = value.encoded()
            var random = SeededRandom(seed: UInt64(seed))
            for _ in 0...Int.random(in: 0...3, using: &random) {
                bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(
                    in: 0...255, using: &random)
            }
            _ = try? ClusterMetadata.decode(bytes)
            _ = try? ClusterMetadata.decode(
                Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random))))
        }
        await propertyCheck(count: 500, input: Gen.int(in: 0...255).array(of: 0...300)) { numbers in
            _ = try? ClusterMetadata.decode([1] + numbers.map { UInt8($0) })
        }
    }

    @Test("a clock so large that the next change would overflow it is refused, not adopted")
    func clockNearTheLimit() throws {
        var metadata = Self.formedCluster()
        metadata.clock = 1 << 62
        #expect(try ClusterMetadata.decode(metadata.encoded()) == metadata)
        // A change made there stays at the limit, so the copy this node stores and
        // pushes still decodes.
        var changed = metadata
        changed.record(try TableName(namespace: "a", table: "b"), nil, by: changed.members.keys.sorted()[0])
        #expect(changed.clock == 1 << 62)
        #expect(try ClusterMetadata.decode(changed.encoded()) == changed)
        for clock: UInt64 in [(1 << 62) + 1, .max] {
            metadata.clock = clock
            let error = #expect(throws: KVError.self) { try ClusterMetadata.decode(metadata.encoded()) }
            #expect(error?.code == .corruptObject)
        }
    }
}

@Suite("Replica rules for retries")
struct RetryRuleTests {
    static let actor = ActorID(node: NodeID(rawValue: 5), incarnation: 1)

    @Test("a write whose request id the row already holds changes nothing")
    func sameRequestIDIsApplied() {
        let first = ProposedWrite(
            sibling: Sibling(value: RowValue(bytes: [1]), timestampMilliseconds: 1, requestID: "r1"),
            context: nil)
        let stored = ReplicaRules.coordinate(StoredObject(), first, actor: Self.actor)!
        #expect(ReplicaRules.coordinate(stored, first, actor: Self.actor) == nil)
        var other = first
        other.sibling.requestID = "r2"
        #expect(ReplicaRules.coordinate(stored, other, actor: Self.actor)?.liveValues.count == 2)
    }

    @Test("an increment retried with its request id counts once")
    func incrementRetry() throws {
        let once = try ReplicaRules.increment(
            StoredObject(), by: 5, actor: Self.actor, timestampMilliseconds: 1, requestID: "i1")!
        #expect(
            try ReplicaRules.increment(
                once, by: 5, actor: Self.actor, timestampMilliseconds: 2, requestID: "i1") == nil)
        let twice = try ReplicaRules.increment(
            once, by: 5, actor: Self.actor, timestampMilliseconds: 2, requestID: "i2")!
        #expect(try CounterState.merged(twice.liveValues)?.value == 10)
    }
}

@Suite("Access tokens in cluster metadata")
struct AccessTokenMetadataTests {
    static func token(revoked: Bool) -> AccessTokenRecord {
        AccessTokenRecord(
            id: "00000000000000aa", name: "app", hash: Array(repeating: 9, count: 32),
            grants: try! AccessGrants(parsing: "orders:write"), createdAtMilliseconds: 1,
            expiresAtMilliseconds: nil, revoked: revoked)
    }

    @Test("a revocation is never undone by a copy that missed it, in either merge order")
    func revocationSticks() throws {
        let members = ClusterMetadataTests.members
        var created = ClusterMetadataTests.formedCluster()
        try created.record(Self.token(revoked: false), by: members[0].node)
        var revoked = created
        try revoked.record(Self.token(revoked: true), by: members[1].node)
        var stale = created
        stale.merge(revoked)
        #expect(stale.tokens["00000000000000aa"]?.record.revoked == true)
        revoked.merge(created)
        #expect(revoked.tokens["00000000000000aa"]?.record.revoked == true)
        #expect(try ClusterMetadata.decode(revoked.encoded()) == revoked)
    }

    @Test("the metadata keeps a bounded number of token records")
    func bounded() throws {
        var metadata = ClusterMetadataTests.formedCluster()
        for index in 0..<ClusterMetadata.maximumTokens {
            var token = Self.token(revoked: false)
            token.id = String(index, radix: 16)
            try metadata.record(token, by: ClusterMetadataTests.members[0].node)
        }
        var one = Self.token(revoked: false)
        one.id = "ffffffffffffffff"
        #expect(throws: KVError.self) { try metadata.record(one, by: ClusterMetadataTests.members[0].node) }
    }
}
