import KVCluster
import KVCore

/// The simulator's interpreter of ``MetadataGossip`` (composed in each node's
/// ``NodeCore``): each node keeps its own copy of the cluster metadata (on its disk: it
/// survives crashes), changes it as the node shell does (an operator's commit, a
/// transfer's receipt, a release), and spreads it by the same machine's pushes on its
/// ticks, on its changes and on probes that carry another digest, as messages the
/// network may drop, delay or cut.
extension SimulatedWorld {
    /// Gossip rounds happen every this many membership ticks (every 500 ms).
    static let gossipTickEvery = 10

    /// Node `node`'s copy in its binary form, encoded once per change.
    mutating func encodedMetadata(at node: Int) -> [UInt8]? {
        if let encoded = nodes[node].encodedMetadata { return encoded }
        let encoded = nodes[node].metadata?.encoded()
        nodes[node].encodedMetadata = encoded
        return encoded
    }

    /// The digest of node `node`'s copy, as its probes carry it: computed once per change.
    mutating func metadataDigest(at node: Int) -> UInt64 {
        if let digest = nodes[node].metadataDigest { return digest }
        let digest = encodedMetadata(at: node).map(StableHash.hash) ?? 0
        nodes[node].metadataDigest = digest
        return digest
    }

    /// What gossip sees at node `node`.
    mutating func gossipView(_ node: Int) -> NodeCore.GossipView? {
        guard let metadata = nodes[node].metadata else { return nil }
        return NodeCore.GossipView(metadata: metadata, digest: metadataDigest(at: node))
    }

    /// The record node `node` has of itself.
    func ownRecord(_ node: Int) -> ClusterMember {
        let id = nodes[node].id
        return ClusterMember(node: id, peerAddress: "n\(id)", httpAddress: "n\(id)")
    }

    /// Changes node `node`'s copy of the metadata, as the node shell stores a change:
    /// the coordinator gets the new placement, and gossip learns what changed and why
    /// (`cause`: the node's own change, or a peer's copy adopted).
    mutating func changeMetadata(
        at node: Int, cause: MetadataGossip.ChangeCause = .own, _ change: (inout ClusterMetadata) -> Void
    ) {
        guard let before = nodes[node].metadata else { return }
        var after = before
        change(&after)
        guard after != before else { return }
        nodes[node].metadata = after
        nodes[node].encodedMetadata = nil
        nodes[node].metadataDigest = nil
        if after.layout != before.layout || after.transition != before.transition,
            let placement = after.placement, placement != before.placement
        {
            runCore(.placementChanged(placement), at: node)
        }
        runCore(.gossip(.changed(from: before, to: after, cause: cause)), at: node)
    }

    /// Carries out one of the gossip machine's actions. The `switch` has no `default:` on
    /// purpose.
    mutating func performGossip(_ action: MetadataGossip.Action, at node: Int) {
        switch action {
        case .push(let peer):
            // The planted defect: nothing spreads but what the operator commits.
            if configuration.injectedBug == .gossipPushesNothing { return }
            guard let encoded = encodedMetadata(at: node) else { return }
            send(.metadata(.push(id: nil, encoded: encoded)), from: node, to: index(of: peer))
        case .acknowledge(let id, let peer):
            send(.metadata(.merged(id: id)), from: node, to: index(of: peer))
        case .refused(let reason, let peer):
            // Every simulated node belongs to one cluster.
            report.violations.append("n\(node) refused the metadata of \(peer): \(reason)")
        }
    }

    /// A metadata message arrived at `node`.
    mutating func receiveMetadata(_ message: MetadataMessage, from sender: Int, at node: Int) {
        guard case .push(let id, let encoded) = message, let mine = nodes[node].metadata else { return }
        let from = nodes[sender].id
        if encoded == encodedMetadata(at: node) {
            // The same copy (the usual case once converged): nothing to merge.
            runCore(
                .gossip(.adopted(theirs: mine, id: id, from: from, refusal: nil, current: mine)), at: node)
            return
        }
        // Most pushes repeat a copy some node sent before: each is decoded once.
        if decodedMetadata.count > 256 { decodedMetadata = [:] }
        guard let theirs = decodedMetadata[encoded] ?? (try? ClusterMetadata.decode(encoded)) else {
            report.violations.append("n\(node) could not decode the metadata n\(sender) sent")
            return
        }
        decodedMetadata[encoded] = theirs
        let adoption = MetadataGossip.adopt(theirs, into: mine, own: ownRecord(node), formation: nil)
        if adoption.refusal == nil {
            changeMetadata(at: node, cause: adoption.cause(merging: true)) { $0 = adoption.metadata }
        }
        guard let current = nodes[node].metadata else { return }
        runCore(
            .gossip(
                .adopted(theirs: theirs, id: id, from: from, refusal: adoption.refusal, current: current)),
            at: node)
    }

    /// The gossip checker: once the faults ended and the nodes gossiped for a while,
    /// every node that is not gone for good holds the same metadata, and no layout
    /// change still moves data.
    mutating func checkGossipConverged() {
        let copies = nodes.indices.filter { !gone.contains($0) }.compactMap { nodes[$0].metadata }
        guard let first = copies.first else { return }
        if copies.contains(where: { $0 != first }) {
            let versions = copies.map {
                "v\($0.layout?.version ?? 0)\($0.transition == nil ? "" : "+moving")"
            }
            report.violations.append(
                "the nodes' metadata did not converge after healing: \(versions.joined(separator: ", "))")
        }
        if let transition = first.transition, let layout = first.layout {
            report.violations.append(
                "after healing the layout change to version \(layout.version) still moves data: \(transition.pendingTransfers(in: layout).count) transfers pending"
            )
        }
    }
}
