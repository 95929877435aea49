import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// How this node keeps the cluster metadata: merging what peers send, changing it
/// (formation, tables, layout changes) under the metadata lock, and spreading it by
/// push and gossip (the ``MetadataGossip`` machine in the node's core decides when and
/// to whom; each stored change and each peer's copy is reported to it).
extension ClusterNode {

    /// Merges a peer's metadata; answers with this node's copy when the peer lacks
    /// something, and acknowledges a push. Runs on the thread pool.
    func receivedMetadata(_ encoded: [UInt8], id: UInt64?, from sender: NodeID) {
        // A copy equal to this node's (the usual case once a change has spread: members
        // push structural changes they adopt on to every other) needs no decoding or merge.
        let current = state.withLockedValue { $0.encodedMetadata == encoded ? $0.metadata : nil }
        if let current {
            runCore(.gossip(.adopted(theirs: current, id: id, from: sender, refusal: nil, current: current)))
            return
        }
        let theirs: ClusterMetadata
        do throws(KVError) {
            theirs = try ClusterMetadata.decode(encoded)
        } catch {
            logger.warning(
                "a peer sent invalid cluster metadata", metadata: ["peer": "\(sender)", "error": "\(error)"])
            return
        }
        var refusal: String?
        let me = ownRecord()
        do throws(KVError) {
            try storeMetadata { metadata in
                let adoption = MetadataGossip.adopt(theirs, into: metadata, own: me, formation: nil)
                refusal = adoption.refusal
                metadata = adoption.metadata
                return adoption.cause(merging: true)
            }
        } catch {
            logger.error("storing cluster metadata failed", metadata: ["error": "\(error)"])
            return
        }
        runCore(.gossip(.adopted(theirs: theirs, id: id, from: sender, refusal: refusal, current: metadata)))
    }

    /// Carries out the gossip machine's actions (one step's, together: a push of a
    /// change goes to every member with one encoding of the copy).
    func performGossip(_ actions: [MetadataGossip.Action]) {
        guard !actions.isEmpty else { return }
        let encoded = state.withLockedValue { $0.encodedMetadata }
        for action in actions {
            switch action {
            case .push(let peer):
                transport.send(.metadata(.push(id: nil, encoded: encoded)), to: peer)
            case .acknowledge(let id, let peer):
                transport.send(.metadata(.merged(id: id)), to: peer)
            case .refused(let reason, let peer):
                logger.error(
                    "refusing a peer's metadata", metadata: ["peer": "\(peer)", "reason": "\(reason)"])
            }
        }
    }

    /// What gossip sees now.
    func gossipView() -> NodeCore.GossipView {
        state.withLockedValue { NodeCore.GossipView(metadata: $0.metadata, digest: $0.metadataDigest) }
    }

    /// Applies this node's own `change` to the metadata, then forms the cluster or
    /// recomputes the layout if this node is the one to, stores the result with the
    /// catalog it implies, and hands a new layout to the coordinator. Blocks: run it on
    /// the thread pool.
    func changeMetadata(_ change: (inout ClusterMetadata) -> Void) throws(KVError) {
        try storeMetadata { metadata in
            change(&metadata)
            return .own
        }
    }

    /// ``changeMetadata(_:)`` for a change that says what caused it (gossip spreads a
    /// node's own changes further than the copies it adopts).
    func storeMetadata(_ change: (inout ClusterMetadata) -> MetadataGossip.ChangeCause) throws(KVError) {
        metadataLock.lock()
        defer { metadataLock.unlock() }
        do {
            let before = metadata
            var after = before
            var cause = change(&after)
            var random = SystemRandomNumberGenerator()
            let formation = state.withLockedValue { $0.expectedMembers }.map {
                MetadataGossip.Formation(
                    expectedMembers: $0, clusterID: max(1, random.next()),
                    secret: local.identity.contextSecret)
            }
            let adoption = MetadataGossip.adopt(nil, into: after, own: ownRecord(), formation: formation)
            if adoption.formed {
                after = adoption.metadata
                cause = .own
                logger.info(
                    "cluster formed",
                    metadata: [
                        "cluster": "\(String(after.clusterID, radix: 16))",
                        "members": "\(after.members.count)",
                    ])
            }
            guard after != before else { return }
            let encoded = after.encoded()
            if try local.adoptCatalog(after.liveTables, writing: [(Self.metadataKey, encoded)]) {
                // Rows went by range; their index entries with them, so the trees must
                // be rebuilt from the index.
                antiEntropy.invalidateAll()
            }
            // The secret first: a request that sees the formed cluster must seal with it.
            if after.isFormed {
                local.sealerBox.withLockedValue { $0 = ContextSealer(secret: after.contextSecret) }
            }
            let digest = StableHash.hash(encoded)
            state.withLockedValue {
                $0.metadata = after
                $0.metadataDigest = digest
                $0.encodedMetadata = encoded
            }
            for member in after.members.keys where before.members[member] == nil {
                runCore(.memberAdded(member))
            }
            for member in after.members.values where member.node != nodeID && !member.peerAddress.isEmpty {
                if before.members[member.node]?.peerAddress != member.peerAddress
                    || !transport.knowsAddress(of: member.node),
                    let socket = Self.socketAddress(member.peerAddress)
                {
                    transport.setAddress(socket, of: member.node)
                }
            }
            // A placement is made from the layout and its transition; making one takes a
            // pass over every partition, so only a change of either is worth it.
            if after.layout != before.layout || after.transition != before.transition,
                let placement = after.placement, placement != before.placement
            {
                runCore(.placementChanged(placement))
            }
            // A member counted as departed by a lagging copy is probed again.
            for member in before.departed.subtracting(after.departed) {
                runCore(.memberAdded(member))
            }
            for member in after.departed.subtracting(before.departed) {
                runCore(.memberRemoved(member))
                logger.info("a member left the cluster", metadata: ["node": "\(member)"])
            }
            if let layout = after.layout, layout != before.layout {
                logger.info("layout changed", metadata: ["version": "\(layout.version)"])
            }
            runCore(.gossip(.changed(from: before, to: after, cause: cause)))
        }
    }

    /// Runs `body` holding the metadata lock: no metadata change is stored meanwhile.
    func withMetadataLock<Result>(_ body: () throws(KVError) -> Result) throws(KVError) -> Result {
        metadataLock.lock()
        defer { metadataLock.unlock() }
        return try body()
    }

    /// One gossip round: this node's metadata to the next peer in turn.
    func gossip() {
        runCore(.tick(.gossip))
    }

    /// Records a table change, stores it, then pushes it to every member and waits (a
    /// bounded time) until each reachable one has stored it, so the next request through
    /// any node sees it.
    func changeTables(_ change: @escaping @Sendable (inout ClusterMetadata) throws(KVError) -> Void)
        async throws(KVError)
    {
        try await local.blocking { [self] () throws(KVError) in
            var failure: KVError?
            try changeMetadata { metadata in
                do throws(KVError) { try change(&metadata) } catch { failure = error }
            }
            if let failure { throw failure }
        }
        let (encoded, peers) = state.withLockedValue { state in
            (
                state.metadata.encoded(),
                Set(state.metadata.members.keys.filter { $0 != nodeID }).subtracting(state.unreachable)
            )
        }
        guard !peers.isEmpty else { return }
        let id = takeID()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.withLockedValue { $0.metadataAcks[id] = (peers, continuation) }
            eventLoop.scheduleTask(in: .milliseconds(min(2_000, settings.requestTimeoutMilliseconds))) {
                [self] in
                state.withLockedValue { $0.metadataAcks.removeValue(forKey: id) }?.continuation.resume()
            }
            for peer in peers { transport.send(.metadata(.push(id: id, encoded: encoded)), to: peer) }
        }
    }
}
