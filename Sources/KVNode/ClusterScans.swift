import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Cluster scans: a covering set of replicas pages through its partitions, and the
/// pages are merged into one client page.
extension ClusterNode {
    // MARK: - Scans

    public func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage {
        let layout = try formedLayout()
        let descriptor = try local.descriptor(request.table)
        guard (1...ScanRequest.maximumLimit).contains(request.limit) else {
            throw KVError(
                .invalidRequest,
                "the scan limit must be 1 to \(ScanRequest.maximumLimit), not \(request.limit)")
        }
        let n = QuorumOverrides().applied(to: descriptor.defaults, availableReplicas: Self.width(of: layout))
            .n
        let r = request.r ?? 1
        guard (1...n).contains(r) else {
            throw KVError(.invalidQuorum, "a scan's r must be 1 to the table's n (\(n)), not \(r)")
        }
        let range = try NodeStorage.bounds(of: request, schema: descriptor.schema)
        let partitions = local.partitions(for: request.range, schema: descriptor.schema, table: request.table)
        let tablePrefix = KeyEncoding.encode([.string(request.table.namespace), .string(request.table.table)])
        let unreachable = state.withLockedValue { $0.unreachable }
        // While partitions move, their new owners may not hold them yet: a scan reads
        // where point reads do, the previous owners until the partition is retired.
        let placement = metadata.placement ?? Placement(layout: layout)

        // Each partition is read from r of its first n read replicas: this node first
        // when it is one, then reachable ones in preference order. A node that fails is
        // replaced by the partition's next untried replica.
        var tried: [PartitionID: Set<NodeID>] = [:]
        // The storage faults replicas answered with: a scan that runs out of replicas
        // because of them reports what went wrong (a corrupt object), not that nobody
        // answered.
        var reported: [PartitionID: KVError] = [:]
        var pages: [(PartitionScanPage, count: Int)] = []
        var pending: [PartitionID: Int] = Dictionary(uniqueKeysWithValues: partitions.map { ($0, r) })
        while !pending.isEmpty {
            var assignment: [NodeID: [PartitionID]] = [:]
            for (partition, needed) in pending.sorted(by: { $0.key < $1.key }) {
                let candidates = Array(placement.readReplicas(of: partition).prefix(n)).filter {
                    !(tried[partition]?.contains($0) ?? false)
                }
                let ordered =
                    candidates.filter { $0 == nodeID }
                    + candidates.filter { $0 != nodeID && !unreachable.contains($0) }
                    + candidates.filter { $0 != nodeID && unreachable.contains($0) }
                guard ordered.count >= needed else {
                    let shortfall =
                        "partition \(partition) has \(ordered.count) replicas left to ask and the scan needs r=\(needed)"
                    if let error = reported[partition] {
                        throw KVError(error.code, "\(shortfall); a replica reported: \(error.message)")
                    }
                    throw KVError(.quorumUnavailable, shortfall)
                }
                for node in ordered.prefix(needed) {
                    assignment[node, default: []].append(partition)
                    tried[partition, default: []].insert(node)
                }
            }
            pending = [:]
            let answers = await withTaskGroup(of: (NodeID, [PartitionID], PartitionScanPage).self) { group in
                for (node, assigned) in assignment {
                    let scan = PartitionScan(
                        tablePrefix: tablePrefix, partitions: assigned, lowerBound: range.lowerBound,
                        upperBound: range.upperBound, limit: request.limit, reverse: request.reverse,
                        keysOnly: request.keysOnly)
                    group.addTask { (node, assigned, await self.scanPage(scan, on: node)) }
                }
                var answers: [(NodeID, [PartitionID], PartitionScanPage)] = []
                for await answer in group { answers.append(answer) }
                return answers
            }
            for (_, assigned, page) in answers {
                if let error = page.error {
                    for partition in assigned {
                        pending[partition, default: 0] += 1
                        if error.isStorageFault { reported[partition] = error }
                    }
                } else {
                    pages.append((page, assigned.count))
                }
            }
        }
        return mergeScanPages(pages.map(\.0), request: request, descriptor: descriptor)
    }

    /// A page from `node`: local storage for this node, a `scan` message otherwise.
    private func scanPage(_ scan: PartitionScan, on node: NodeID) async -> PartitionScanPage {
        if node == nodeID {
            do {
                return try await local.blocking { [self] () throws(KVError) in
                    try local.partitionScanPage(scan, maximumBytes: maximumScanPageBytes)
                }
            } catch {
                return PartitionScanPage(rows: [], truncated: false, error: error)
            }
        }
        let id = takeID()
        return await withCheckedContinuation { continuation in
            state.withLockedValue { $0.scans[id] = continuation }
            eventLoop.scheduleTask(in: .milliseconds(settings.requestTimeoutMilliseconds)) { [self] in
                state.withLockedValue { $0.scans.removeValue(forKey: id) }?.resume(
                    returning: PartitionScanPage(
                        rows: [], truncated: false,
                        error: KVError(.quorumUnavailable, "replica \(node) did not answer the scan in time"))
                )
            }
            transport.send(.scans(.scan(id: id, request: scan)), to: node)
        }
    }

    /// The client page of merged node pages (``MergedScanPage``), with keys decoded
    /// and contexts sealed.
    private func mergeScanPages(
        _ pages: [PartitionScanPage], request: ScanRequest, descriptor: TableDescriptor
    )
        -> ScanPage
    {
        let now = NodeStorage.wallClockMilliseconds()
        let merged = MergedScanPage.merging(
            pages, limit: request.limit, reverse: request.reverse, nowMilliseconds: now,
            maximumValueBytes: local.settings.maximumResponseBytes)
        let tablePrefix = KeyEncoding.encode([.string(request.table.namespace), .string(request.table.table)])
        var rows: [ScanRow] = []
        for (key, object) in merged.rows {
            guard let parts = try? KeyEncoding.decode(key, schema: descriptor.schema) else { continue }
            let identity = NodeStorage.rowIdentity(
                generation: descriptor.generation, tableAndKey: (tablePrefix + key)[...])
            rows.append(
                ScanRow(
                    key: parts, siblings: request.keysOnly ? [] : object.visibleValues(at: now),
                    context: local.sealer.seal(object.context, row: identity)))
        }
        return ScanPage(
            rows: rows,
            continuation: merged.resumeAfter.map { ScanContinuation.encode($0, reverse: request.reverse) })
    }
}
