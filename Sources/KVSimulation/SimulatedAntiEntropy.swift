import KVCluster
import KVCore
import KVReplica
import KVStorage

/// The simulator's interpreter of ``AntiEntropyExchange``: the same machine the node
/// runs, its tree reads, listings, loads and merges done inline on the node's replica
/// store and its completions, messages and timers delivered as events. Peers answer
/// from their own index, as the node shell does.
extension SimulatedWorld {
    static let antiEntropySettings = AntiEntropySettings(requestTimeoutMilliseconds: requestTimeout)
    /// The most keys one listing carries: one, so that exchanges page through their
    /// leaves even over the few keys of a run.
    static let keysPerListing = 1
    /// Exchanges start every this many membership ticks.
    static let antiEntropyTickEvery = 4

    /// What node `node`'s exchange machine sees.
    func antiEntropyView(_ node: Int) -> AntiEntropyView {
        let me = nodes[node].id
        return AntiEntropyView(
            node: me, layout: nodes[node].metadata?.layout ?? nodes[node].coordinator.layout,
            reachable: Set(
                nodes.map(\.id).filter { $0 != me && nodes[node].membership.state(of: $0)?.status == .alive })
        )
    }

    mutating func runAntiEntropy(
        at node: Int, _ event: (inout AntiEntropyExchange, AntiEntropyView) -> [AntiEntropyExchange.Action]
    ) {
        let view = antiEntropyView(node)
        let actions = event(&nodes[node].antiEntropyExchange, view)
        performAntiEntropy(actions, at: node)
    }

    mutating func handleAntiEntropyEvent(_ event: AntiEntropyEvent, at node: Int) {
        switch event {
        case .treeRead(let tree):
            runAntiEntropy(at: node) { machine, _ in machine.treeRead(tree) }
        case .listed(let id, let listing):
            runAntiEntropy(at: node) { machine, _ in machine.listed(id: id, listing) }
        case .loaded(let id, let key, let outcome):
            runAntiEntropy(at: node) { machine, _ in machine.loaded(id: id, key, outcome) }
        case .merged(let id, let outcome):
            runAntiEntropy(at: node) { machine, _ in machine.storageCompleted(id: id, outcome) }
        case .timer(let id):
            guard nodes[node].cancelledAntiEntropyTimers.remove(id) == nil else { return }
            runAntiEntropy(at: node) { machine, _ in machine.timerFired(id: id) }
        }
    }

    /// An anti-entropy message arrived at `node`: a request it serves from its own
    /// index and store, or an answer for its machine (or for the release machine).
    mutating func receiveAntiEntropy(_ message: AntiEntropyMessage, from sender: Int, at node: Int) {
        switch message {
        case .treeRequest(let id, let partition, let segments):
            let answer: AntiEntropyMessage
            if let tree = nodes[node].store.antiEntropy.tree(of: partition) {
                let hashes = segments.isEmpty ? tree.segmentHashes : tree.leafHashes(of: segments)
                answer = .treeHashes(id: id, ready: true, hashes: hashes)
            } else {
                answer = .treeHashes(id: id, ready: false, hashes: [])
            }
            send(.antiEntropy(answer), from: node, to: sender)
        case .keyHashesRequest(let id, let partition, let leaves, let after):
            let listing = listing(partition, leaves, after: after, at: node)
            send(
                .antiEntropy(
                    .keyHashes(id: id, entries: listing?.entries ?? [], truncated: listing?.truncated ?? true)
                ),
                from: node, to: sender)
        case .reconcile(let id, let key, let object):
            let outcome = execute(.reconcile(key, object), at: node)
            send(.antiEntropy(.reconciled(id: id, outcome: outcome)), from: node, to: sender)
        case .keyHashes(let id, _, _) where nodes[node].release.isWaiting(for: id),
            .reconciled(let id, _) where nodes[node].release.isWaiting(for: id):
            // Releases ask with anti-entropy's requests; each machine's ids are its own.
            let from = nodes[sender].id
            runRelease(at: node) { machine, _ in machine.received(message, from: from) }
        case .treeHashes, .keyHashes, .reconciled:
            let from = nodes[sender].id
            runAntiEntropy(at: node) { machine, _ in machine.received(message, from: from) }
        }
    }

    func listing(_ partition: PartitionID, _ leaves: [Int], after: [UInt8]?, at node: Int) -> KeyListing? {
        (try? AntiEntropyIndex.keyHashes(
            in: partition, leaves: leaves, after: after, engine: nodes[node].engine,
            limit: Self.keysPerListing)).map { KeyListing(entries: $0.entries, truncated: $0.truncated) }
    }

    /// Carries out the exchange machine's actions. The `switch` has no `default:` on
    /// purpose.
    mutating func performAntiEntropy(_ actions: [AntiEntropyExchange.Action], at node: Int) {
        let life = nodes[node].life
        for action in actions {
            let delay = Int64.random(in: 0...3, using: &random)
            switch action {
            case .readTree(let partition):
                let tree = nodes[node].store.antiEntropy.tree(of: partition)
                schedule(.antiEntropyEvent(node: node, life: life, .treeRead(tree)), after: delay)
            case .send(let message, let target):
                send(message, from: node, to: index(of: target))
            case .list(let id, let partition, let leaves, let after):
                let listing = listing(partition, leaves, after: after, at: node)
                schedule(.antiEntropyEvent(node: node, life: life, .listed(id: id, listing)), after: delay)
            case .load(let id, let partition, let bytes):
                let key = ReplicaKey(
                    partition: partition, bytes: bytes, generation: SimulatedNode.table.generation)
                let outcome = execute(.load(key), at: node)
                schedule(
                    .antiEntropyEvent(node: node, life: life, .loaded(id: id, key, outcome)), after: delay)
            case .reconcile(let id, let key, let object):
                log("n\(node) repairs a key with \(ids(object))")
                report.keysRepaired += 1
                let outcome = execute(.reconcile(key, object), at: node)
                schedule(.antiEntropyEvent(node: node, life: life, .merged(id: id, outcome)), after: delay)
            case .startTimer(let id, let milliseconds):
                schedule(
                    .antiEntropyEvent(node: node, life: life, .timer(id: id)),
                    after: max(1, Int64(Double(milliseconds) / nodes[node].clockRate)))
            case .unanswered(let peer):
                noteUnanswered(by: peer, at: node)
            case .cancelTimer(let id):
                nodes[node].cancelledAntiEntropyTimers.insert(id)
            }
        }
    }

    /// One full round of anti-entropy by the nodes' own machines: every node exchanges
    /// every partition it replicates with every peer replica, one exchange at a time.
    /// Returns how many keys the round repaired.
    mutating func antiEntropyRound() -> Int {
        let before = nodes.map(\.antiEntropyExchange.counters.keysRepaired).reduce(0, +)
        for node in nodes.indices where nodes[node].isUp {
            let view = antiEntropyView(node)
            guard let layout = view.layout else { continue }
            for partition in (0..<layout.partitionCount).map({ PartitionID(rawValue: UInt32($0)) })
            where layout.replicas(of: partition).contains(view.node) {
                for peer in layout.replicas(of: partition) where peer != view.node {
                    runAntiEntropy(at: node) { $0.start(partition, with: peer, view: $1) }
                    drain()
                }
            }
        }
        return Int(nodes.map(\.antiEntropyExchange.counters.keysRepaired).reduce(0, +) - before)
    }
}

/// What a node's storage or clock reports to its exchange machine.
enum AntiEntropyEvent {
    case treeRead(MerkleTree?)
    case listed(id: UInt64, KeyListing?)
    case loaded(id: UInt64, ReplicaKey?, StorageOutcome)
    case merged(id: UInt64, StorageOutcome)
    case timer(id: UInt64)
}
