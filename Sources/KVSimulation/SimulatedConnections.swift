import KVCluster
import KVCore

/// The connections of the simulated network, as far as they can fail without either
/// side noticing: a node's connection to a peer can go silent (everything sent on it
/// vanishes without a reset, as through a proxy or a path that drops everything), while
/// the peer still looks alive, because others probe it on the node's behalf. The node
/// finds out only from its own requests going unanswered (``PeerSilence``), and closes
/// both its connection to the peer and the peer's to it, as the node's transport does; a
/// crash of either side also ends them.
extension SimulatedWorld {
    /// One node's connection to another (each direction is a connection of its own: a
    /// node sends requests and answers over its own connection to the peer).
    struct Connection: Hashable {
        var from: Int
        var to: Int
    }

    /// Whether what `from` sends to `to` vanishes on a silent connection.
    func isSilent(from: Int, to: Int) -> Bool {
        silentConnections.contains(Connection(from: from, to: to))
    }

    /// The connection from `from` to `to` goes silent, until `from` reopens it or either
    /// side crashes.
    mutating func silence(from: Int, to: Int) {
        guard faultsActive, nodes[from].isUp, nodes[to].isUp, from != to else { return }
        log("n\(from)'s connection to n\(to) goes silent")
        report.silentConnections += 1
        silentConnections.insert(Connection(from: from, to: to))
    }

    /// A crashed process's connections are gone, and so are its peers' connections to it
    /// (the next send on them meets a reset and connects anew).
    mutating func closeConnections(of node: Int) {
        silentConnections = silentConnections.filter { $0.from != node && $0.to != node }
    }

    /// One of `node`'s machines reports a request `peer` left unanswered; once the peer
    /// has been silent long enough the node reopens its connection to it.
    mutating func noteUnanswered(by peer: NodeID, at node: Int) {
        guard nodes[node].silence.unanswered(by: peer, nowMilliseconds: nodes[node].localTime(now)) else {
            return
        }
        // The planted defect: the node never reopens a silent connection.
        guard configuration.injectedBug != .silentConnectionsStay else { return }
        log("n\(node) reopens its connections with \(peer): its requests went unanswered")
        report.connectionsReopened += 1
        // As the node's transport does: its own connection, and the one the peer opened
        // to it (which the peer's answers travel on).
        silentConnections.remove(Connection(from: node, to: index(of: peer)))
        silentConnections.remove(Connection(from: index(of: peer), to: node))
    }
}
