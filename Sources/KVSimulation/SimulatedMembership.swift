import KVCluster
import KVCore

/// SWIM as each node runs it, and the checks of what healing must leave behind.
extension SimulatedWorld {
    /// Carries out SWIM's actions: probes go over the simulated network; a changed
    /// status tells the coordinator whether the member is up (sloppy quorum follows).
    mutating func performMembership(_ action: Membership.Action, at node: Int) {
        switch action {
        case .send(let message, let target):
            send(
                .membership(message, metadataDigest: metadataDigest(at: node)), from: node,
                to: index(of: target))
        case .statusChanged(let member, let status):
            log("n\(node) sees \(member) \(status)")
            runCore(
                .reachabilityChanged(member, isUp: status == .alive, isSuspected: status == .suspect),
                at: node)
        case .unanswered(let member):
            noteUnanswered(by: member, at: node)
        }
    }

    /// The other nodes that node `node`'s SWIM sees alive: the peers its machines may
    /// ask. Views are built on every step of a core, so this reads each node's id in place
    /// rather than through a key path, which copies whole nodes in a debug build.
    func reachablePeers(of node: Int) -> Set<NodeID> {
        let membership = nodes[node].core.membership
        var peers = Set<NodeID>()
        for index in nodes.indices where index != node {
            let id = nodes[index].id
            if membership.state(of: id)?.status == .alive { peers.insert(id) }
        }
        return peers
    }

    /// After healing every node sees every other alive.
    mutating func checkMembershipSettled() {
        for observer in nodes.indices where !gone.contains(observer) {
            for (index, member) in nodes.enumerated()
            where member.id != nodes[observer].id && !gone.contains(index) {
                let status = nodes[observer].core.membership.state(of: member.id)?.status
                if status != .alive {
                    report.violations.append(
                        "after healing, n\(observer) still sees \(member.id) \(status.map { "\($0)" } ?? "unknown")"
                    )
                }
            }
        }
    }

    /// After healing every hint was handed back.
    mutating func checkHintsDelivered() {
        for node in nodes.indices {
            let left = (try? nodes[node].engine.entries(in: .all, of: .hints))?.count ?? 0
            report.hintsLeft += left
            if left > 0 {
                report.violations.append("n\(node) still holds \(left) hints after healing")
            }
        }
    }
}
