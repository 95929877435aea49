import KVCluster
import KVCore
import KVStorageMemory

/// The operator's layout changes during a run: a join, then a leave (sometimes a node
/// gone for good).
extension SimulatedWorld {
    /// Commits the next layout change through a node that is up (the first if it is):
    /// the unplaced node joins, or else a placed node other than the first (which the
    /// final reads go through) and the committing one leaves while enough remain for the
    /// replication factor.
    mutating func changeLayout() {
        // The operator commits through the first node, or another if it is down.
        guard let committer = nodes.indices.first(where: { nodes[$0].isUp && !gone.contains($0) }),
            var next = nodes[committer].metadata, let layout = next.layout
        else { return }
        let placed = layout.members.map(\.node)
        let unplaced = next.activeMembers.filter { !placed.contains($0) && !next.departing.contains($0) }
        if let joiner = unplaced.first {
            try? next.stage(.join(joiner), by: nodes[0].id)
        } else if placed.count > configuration.replicationFactor {
            let leaving = placed.filter { $0 != nodes[0].id && $0 != nodes[committer].id }
            guard !leaving.isEmpty else { return }
            let leaver = leaving[Int.random(in: 0..<leaving.count, using: &random)]
            // Sometimes the node is gone for good instead (a dead disk, counted as the
            // run's one disk loss): its leave is forced and it never comes back.
            let force = configuration.faults && !diskLossPlanned && random.chance(0.4)
            try? next.stage(.leave(leaver, force: force), by: nodes[0].id)
            if force {
                let index = self.index(of: leaver)
                log("n\(index) is gone for good: its disk died; its leave is forced")
                if nodes[index].isUp { crash(index) }
                nodes[index].volume = MemoryVolume()
                nodes[index].disksLost += 1
                gone.insert(index)
                diskLossPlanned = true
                report.disksLost += 1
            }
        }
        guard let plan = try? next.plan(), let committed = try? next.committed(plan: plan.id, by: nodes[0].id)
        else { return }
        log(
            "layout change: \(plan.changes) → version \(plan.proposed.version), \(plan.movedReplicas) copies move"
        )
        report.layoutChanges += 1
        changeMetadata(at: committer) { $0 = committed }
    }
}
