import FoundationEssentials
import KVCore
import NIOHTTP1

/// CSE138's shards and view changes over the cluster's layout (see `CSE138Dialect.swift`).
///
/// The cluster has no fixed replica groups: each partition has its own replicas. The
/// dialect shows what an assignment client expects: the placed members, in address
/// order, cut into groups of the replication factor (the last one takes the remainder),
/// and a key counted in the group of its partition's first replica.
extension Router {
    /// The members grouped into shards, as this node sees them.
    struct CSE138View {
        /// Each shard's member addresses.
        var shards: [[String]]
        /// The index of this node's shard, if it is placed.
        var shardOfThisNode: Int?
        /// Each member's shard index, by node id.
        var shardOf: [NodeID: Int]
        /// Each partition's replicas (node ids), as the layout places them.
        var partitions: [[NodeID]]
    }

    /// Orders `host:port` addresses by their numbers (`10.0.0.9` before `10.0.0.10`).
    static func addressOrder(_ left: String, _ right: String) -> Bool {
        func parts(_ address: String) -> [Int] {
            address.split(whereSeparator: { $0 == "." || $0 == ":" }).map { Int($0) ?? Int.max }
        }
        let (a, b) = (parts(left), parts(right))
        return a != b ? a.lexicographicallyPrecedes(b) : left < right
    }

    func cse138View() async throws(KVError) -> CSE138View {
        let status = try await service.clusterStatus()
        let layout = try await service.clusterLayout()
        let placed = Set(layout.partitions.flatMap { $0 })
        let members = status.members.filter { placed.contains($0.nodeID) && $0.state != "left" }
            .sorted { Self.addressOrder($0.httpAddress, $1.httpAddress) }
        let size = max(1, layout.replicationFactor)
        let count = max(1, members.count / size)
        var shards = [[String]](repeating: [], count: count)
        var shardOf: [NodeID: Int] = [:]
        for (index, member) in members.enumerated() {
            let shard = min(index / size, count - 1)
            shards[shard].append(member.httpAddress)
            shardOf[member.nodeID] = shard
        }
        let own = status.members.first { $0.state == "self" }.flatMap { shardOf[$0.nodeID] }
        return CSE138View(
            shards: shards, shardOfThisNode: own, shardOf: shardOf, partitions: layout.partitions)
    }

    /// The keys of the table in each shard (by index), from a scan of its keys.
    func cse138KeyCounts(_ view: CSE138View) async throws(KVError) -> [Int: Int] {
        var counts: [Int: Int] = [:]
        let partitionCount = view.partitions.count
        guard partitionCount > 0, partitionCount & (partitionCount - 1) == 0 else { return counts }
        var request = ScanRequest(table: Self.cse138Table, limit: ScanRequest.maximumLimit, keysOnly: true)
        while true {
            let page: ScanPage
            do {
                page = try await service.scan(request)
            } catch  where error.code == .tableNotFound {
                return counts
            }
            for row in page.rows {
                let partition = PartitionID.of(
                    namespace: Self.cse138Table.namespace, table: Self.cse138Table.table,
                    encodedPartitionKey: KeyEncoding.encode(row.key), partitionCount: partitionCount)
                if let primary = view.partitions[Int(partition.rawValue)].first,
                    let shard = view.shardOf[primary]
                {
                    counts[shard, default: 0] += 1
                }
            }
            guard let continuation = page.continuation else { return counts }
            request.continuation = continuation
        }
    }

    /// A read quorum of every replica of a `cse138/keys` row.
    func cse138AllReplicas() async throws(KVError) -> Int {
        let descriptor = try await service.table(Self.cse138Table)
        let layout = try await service.clusterLayout()
        return max(1, min(descriptor.defaults.n, layout.replicationFactor))
    }

    /// Makes the layout place exactly the members of `view`, then answers the shards.
    func cse138ViewChange(_ view: [String], replicationFactor: Int?, context: CSE138Context)
        async throws(KVError) -> HTTPResponse
    {
        let status = try await service.clusterStatus()
        let layout = try await service.clusterLayout()
        if let replicationFactor, replicationFactor != layout.replicationFactor {
            return Self.cse138Error(
                .PUT, .badRequest,
                "The replication factor is fixed when the cluster forms; this cluster's is \(layout.replicationFactor)"
            )
        }
        var byAddress: [String: NodeID] = [:]
        for member in status.members where member.state != "left" {
            byAddress[member.httpAddress] = member.nodeID
        }
        for address in view where byAddress[address] == nil {
            return Self.cse138Error(
                .PUT, .badRequest,
                "\(address) is not a member of the cluster: start it with VIEW naming the cluster's nodes first"
            )
        }
        let placed = Set(layout.partitions.flatMap { $0 })
        let wanted = Set(view.compactMap { byAddress[$0] })
        var changes: [LayoutChangeRequest] = []
        for id in wanted.subtracting(placed).sorted() {
            changes.append(LayoutChangeRequest(change: "join", node: id.description))
        }
        for id in placed.subtracting(wanted).sorted() {
            changes.append(LayoutChangeRequest(change: "leave", node: id.description))
        }
        if !changes.isEmpty {
            _ = try await service.clearLayoutChanges()
            var plan: LayoutPlanReport?
            for change in changes { plan = try await service.stageLayoutChange(change) }
            guard let id = plan?.id else {
                throw KVError(.internalError, "the staged view change has no plan")
            }
            _ = try await service.commitLayoutPlan(id)
            // The answer says where the keys are, so it waits until they are there.
            let deadline = ContinuousClock.now + .seconds(300)
            var moving = true
            while moving, ContinuousClock.now < deadline {
                if let report = try? await service.transfers(), !report.inProgress {
                    moving = false
                } else {
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            if moving {
                return Self.cse138Error(
                    .PUT, .serviceUnavailable,
                    "The view change is committed but its data is still moving after 300 s (see GET /v1/_cluster/transfers)"
                )
            }
        }
        let after = try await cse138View()
        let counts = try await cse138KeyCounts(after)
        let shards = after.shards.enumerated().map { index, replicas in
            CSE138Shard(shardID: index + 1, replicas: replicas, keyCount: counts[index] ?? 0)
        }
        return Self.cse138(
            .ok, CSE138Answer(message: "View change successful", shardList: shards, causalContext: context))
    }
}
