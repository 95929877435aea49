import KVCluster
import KVCore
import KVReplica
import NIOCore

/// The operator's side of layout changes: staging, the plan, the commit, and the
/// transfers they start (`kv cluster join|leave|replace|set-capacity|set-zone|plan|commit|
/// transfers`, and `/v1/_cluster/…` over HTTP).
extension ClusterNode {
    /// The member `text` names: its id (16 hex digits), its node name, or its HTTP
    /// address.
    func member(named text: String) throws(KVError) -> NodeID {
        let members = metadata.members
        if let id = NodeID(text), members[id] != nil { return id }
        let named = NodeIdentity.nodeID(named: text)
        if members[named] != nil { return named }
        if let byAddress = members.values.first(where: { $0.httpAddress == text }) { return byAddress.node }
        throw KVError(
            .notFound,
            "no member is named '\(text)' (give a node id, a node name or an HTTP address; start a new node with --join first)"
        )
    }

    /// Stores a metadata change that may be refused, and returns what it returned.
    private func changeMetadataChecked<Result: Sendable>(
        _ change: @escaping @Sendable (inout ClusterMetadata) throws(KVError) -> Result
    ) async throws(KVError) -> Result {
        try await local.blocking { [self] () throws(KVError) -> Result in
            var outcome: Swift.Result<Result, KVError>?
            try changeMetadata { metadata in
                do throws(KVError) {
                    outcome = .success(try change(&metadata))
                } catch {
                    outcome = .failure(error)
                }
            }
            guard let outcome else { throw KVError(.internalError, "the metadata change did not run") }
            return try outcome.get()
        }
    }

    public func stageLayoutChange(_ request: LayoutChangeRequest) async throws(KVError) -> LayoutPlanReport {
        _ = try formedLayout()
        let node = try member(named: request.node)
        let change: LayoutChange
        switch request.change {
        case "join": change = .join(node)
        case "leave": change = .leave(node, force: request.force ?? false)
        case "replace":
            guard let replacement = request.replacement else {
                throw KVError(.invalidRequest, "replace needs the node that takes over ('replacement')")
            }
            change = .replace(node, with: try member(named: replacement), force: request.force ?? false)
        case "set-capacity":
            guard let capacity = request.capacity else {
                throw KVError(.invalidRequest, "set-capacity needs a 'capacity'")
            }
            change = .setCapacity(node, capacity)
        case "set-zone":
            guard let zone = request.zone else { throw KVError(.invalidRequest, "set-zone needs a 'zone'") }
            change = .setZone(node, zone)
        default:
            throw KVError(
                .invalidRequest,
                "unknown layout change '\(request.change)'; use join, leave, replace, set-capacity or set-zone"
            )
        }
        let me = nodeID
        try await changeMetadataChecked { metadata throws(KVError) in try metadata.stage(change, by: me) }
        return try await layoutPlan()
    }

    public func clearLayoutChanges() async throws(KVError) -> LayoutPlanReport {
        _ = try formedLayout()
        let me = nodeID
        try await changeMetadataChecked { metadata throws(KVError) in metadata.clearStaged(by: me) }
        return try await layoutPlan()
    }

    public func layoutPlan() async throws(KVError) -> LayoutPlanReport {
        let layout = try formedLayout()
        let metadata = metadata
        guard !metadata.staged.changes.isEmpty else {
            return LayoutPlanReport(
                id: nil, currentVersion: layout.version, proposedVersion: layout.version, changes: [],
                moves: [],
                movedReplicas: 0, estimatedBytes: 0, replicasPerNode: Self.replicasPerNode(layout),
                transitionInProgress: metadata.transition != nil)
        }
        return try await report(metadata.plan(), transitionInProgress: metadata.transition != nil)
    }

    public func commitLayoutPlan(_ id: String) async throws(KVError) -> LayoutPlanReport {
        _ = try formedLayout()
        let me = nodeID
        let plan = try await changeMetadataChecked { metadata throws(KVError) -> LayoutPlan in
            let plan = try metadata.plan()
            metadata = try metadata.committed(plan: id, by: me)
            return plan
        }
        logger.info(
            "layout change committed",
            metadata: [
                "version": "\(plan.proposed.version)", "moved_replicas": "\(plan.movedReplicas)",
                "changes": "\(plan.changes.map(\.description).joined(separator: ", "))",
            ])
        return try await report(plan, transitionInProgress: metadata.transition != nil)
    }

    private static func replicasPerNode(_ layout: Layout) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: layout.replicaCounts.map { ($0.key.description, $0.value) })
    }

    private func report(_ plan: LayoutPlan, transitionInProgress: Bool) async throws(KVError)
        -> LayoutPlanReport
    {
        // How much travels, from this node's own rows: its bytes over the partition
        // copies it holds, times the copies that move.
        let held = plan.current.replicaCounts[nodeID] ?? 0
        let bytes =
            (try? await local.blocking { [local] () throws(KVError) in
                try storageWork("estimating the data size") {
                    try local.engine.estimateSize(of: .all, in: .data).bytes
                }
            }) ?? 0
        let perCopy = held > 0 ? bytes / UInt64(held) : 0
        return LayoutPlanReport(
            id: plan.id, currentVersion: plan.current.version, proposedVersion: plan.proposed.version,
            changes: plan.changes.map(\.description),
            moves: plan.moves.map {
                LayoutPlanReport.Move(
                    partition: Int($0.partition.rawValue), from: $0.from.map(\.description),
                    to: $0.to.map(\.description))
            },
            movedReplicas: plan.movedReplicas, estimatedBytes: perCopy * UInt64(plan.movedReplicas),
            replicasPerNode: Self.replicasPerNode(plan.proposed), transitionInProgress: transitionInProgress)
    }

    public func transfers() async throws(KVError) -> TransfersReport {
        let layout = try formedLayout()
        let metadata = metadata
        let control = metadata.handoffControl
        // Every member's own view of its transfers, gathered at once.
        let peers = metadata.activeMembers.filter { $0 != nodeID && isReachable($0) }
        var reported = localTransfers(received: try await readCore { $0.transfers.inbound })
        await withTaskGroup(of: [TransfersReport.Transfer].self) { group in
            for peer in peers {
                group.addTask {
                    guard
                        case .transfers(.transfersReport(_, let encoded))? = await self.request(
                            { .transfers(.transfersRequest(id: $0)) }, to: peer),
                        let transfers = Self.decodeTransfers(encoded)
                    else { return [] }
                    return transfers
                }
            }
            for await transfers in group { reported += transfers }
        }
        struct Slot: Hashable {
            var partition: Int
            var destination: String
        }
        var bySlot: [Slot: TransfersReport.Transfer] = [:]
        var total = 0
        var received = 0
        var unreleased = 0
        if let transition = metadata.transition {
            for index in 0..<layout.partitionCount {
                let partition = PartitionID(rawValue: UInt32(index))
                for destination in transition.destinations(of: partition, in: layout) {
                    total += 1
                    let done = transition.received.contains(
                        TransferSlot(partition: partition, node: destination))
                    if done { received += 1 }
                    bySlot[Slot(partition: index, destination: destination.description)] =
                        TransfersReport.Transfer(
                            partition: index, destination: destination.description, source: nil,
                            state: done ? "received" : (control.paused ? "paused" : "waiting"))
                }
                if !transition.isRetired(partition, in: layout) && transition.isSettled(partition, in: layout)
                {
                    unreleased += 1
                }
            }
        }
        // The destination's record has the progress; the source's the re-sent batches.
        for transfer in reported where transfer.state != "sending" && transfer.state != "sent" {
            let slot = Slot(partition: transfer.partition, destination: transfer.destination)
            let state = bySlot[slot]?.state == "received" ? "received" : transfer.state
            var merged = transfer
            merged.state = state
            merged.resentBatches = bySlot[slot]?.resentBatches ?? 0
            bySlot[slot] = merged
        }
        for transfer in reported where transfer.state == "sending" || transfer.state == "sent" {
            let slot = Slot(partition: transfer.partition, destination: transfer.destination)
            var merged =
                bySlot[slot]
                ?? TransfersReport.Transfer(
                    partition: transfer.partition, destination: transfer.destination, source: transfer.source,
                    state: "received", rows: transfer.rows, bytes: transfer.bytes,
                    estimatedRows: transfer.estimatedRows, batches: transfer.batches)
            merged.resentBatches += transfer.resentBatches
            if merged.estimatedRows == 0 { merged.estimatedRows = transfer.estimatedRows }
            bySlot[slot] = merged
        }
        return TransfersReport(
            layoutVersion: layout.version, inProgress: metadata.transition != nil, paused: control.paused,
            clusterConcurrency: control.clusterConcurrency, nodeConcurrency: control.nodeConcurrency,
            bytesPerSecond: control.bytesPerSecond, total: total, received: received, unreleased: unreleased,
            transfers: bySlot.values.sorted {
                ($0.partition, $0.destination) < ($1.partition, $1.destination)
            })
    }

    public func controlTransfers(_ request: TransferControlRequest) async throws(KVError) -> TransfersReport {
        _ = try formedLayout()
        let me = nodeID
        try await changeMetadataChecked { metadata throws(KVError) in
            try metadata.control(by: me) { control in
                if let paused = request.paused { control.paused = paused }
                if let value = request.clusterConcurrency { control.clusterConcurrency = value }
                if let value = request.nodeConcurrency { control.nodeConcurrency = value }
                if let value = request.bytesPerSecond { control.bytesPerSecond = value }
            }
        }
        return try await transfers()
    }
}
