import KVClient
import KVNode

/// Introduces a node to its seeds (the static members, or the member it joins through)
/// until it belongs to a formed cluster that knows every static member: each seed's
/// HTTP API names its peer address, and the introduction goes there.
///
/// Every seed is tried once even by a node that restarts into a formed cluster: members
/// restored from backups onto new machines know each other only by their old addresses,
/// and an introduction is how they learn the new ones.
struct Bootstrap {
    let node: ClusterNode
    let seeds: [String]
    let ownAddress: String
    /// How to reach the seeds' HTTP APIs (HTTPS with the cluster's CA when TLS is on).
    let client: HTTPClientOptions

    func run() async {
        var done = Set<String>()
        var selves = Set<String>()
        var tried = Set<String>()
        while !Task.isCancelled {
            let metadata = node.metadata
            let placed = metadata.layout?.members.contains { $0.node == node.nodeID } ?? false
            if metadata.isFormed, placed, metadata.members.count >= (node.expectedMembers ?? 0),
                tried.union([ownAddress]).isSuperset(of: seeds)
            {
                return
            }
            for seed in seeds where seed != ownAddress && !selves.contains(seed) {
                tried.insert(seed)
                do {
                    let client = try await HTTPKeyValueService(
                        url: (self.client.useTLS ? "https://" : "http://") + seed, options: self.client)
                    let info = try? await client.nodeInfo()
                    await client.close()
                    guard let info, let peer = info.peerAddress else { continue }
                    if info.nodeID == node.nodeID {
                        // The list names this node under another spelling of its address.
                        selves.insert(seed)
                        try? await node.memberListNamesThisNodeTwice()
                        continue
                    }
                    if !metadata.members.keys.contains(info.nodeID) || !done.contains(seed) {
                        node.introduce(toPeerAt: peer)
                        done.insert(seed)
                    } else if !metadata.isFormed || !placed {
                        node.introduce(toPeerAt: peer)
                    }
                } catch {
                    continue
                }
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}
