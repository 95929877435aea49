import KVCluster
import KVCore
import KVReplica
import KVStorage

/// The simulator's interpreter of ``PartitionRelease``: the same machine the node runs,
/// its listings, loads, releases and drops done inline on the node's volume and metadata,
/// its listings and merges carried to the owners as messages the network may drop, delay
/// or cut, and answered by the owners as the node shell answers them.
extension SimulatedWorld {
    /// A short drop grace, so that copies go within a run.
    static let releaseSettings = ReleaseSettings(
        requestTimeoutMilliseconds: requestTimeout, dropGraceMilliseconds: 500)

    /// What node `node`'s release machine sees.
    func releaseView(_ node: Int) -> ReleaseView {
        let me = nodes[node].id
        let metadata = nodes[node].metadata
        return ReleaseView(
            node: me, layout: metadata?.layout, transition: metadata?.transition,
            reachable: reachablePeers(of: node),
            indexComplete: nodes[node].store.antiEntropy.indexComplete,
            nowMilliseconds: nodes[node].localTime(now))
    }

    /// Carries out one of the release machine's actions. The `switch` has no `default:`
    /// on purpose.
    mutating func performRelease(_ action: PartitionRelease.Action, at node: Int) {
        let delay = Int64.random(in: 0...3, using: &random)
        switch action {
        case .list(let id, let partition, let after, let withHashes):
            let listing =
                withHashes
                ? listing(partition, MerkleTree.everyLeaf, after: after, at: node)
                : unhashedListing(partition, after: after, at: node)
            complete(.release(.listed(id: id, listing)), after: delay, at: node)
        case .load(let id, let partition, let bytes):
            let key = ReplicaKey(
                partition: partition, bytes: bytes, generation: SimulatedNode.table.generation)
            let row: PartitionRelease.LoadedRow
            if case .object(let object) = execute(.load(key), at: node) {
                row = .row(key, object)
            } else {
                row = .failed
            }
            complete(.release(.loaded(id: id, row)), after: delay, at: node)
        case .send(.antiEntropy(.reconcile(let id, _, let object)), let target)
        where configuration.injectedBug == .releasesPushNothing:
            // The planted defect: the owner's merge is taken as done without being sent.
            send(
                .antiEntropy(.reconciled(id: id, outcome: .object(object))), from: index(of: target),
                to: node)
        case .send(let message, let target):
            send(message, from: node, to: index(of: target))
        case .startTimer(let id, let milliseconds):
            startCoreTimer(NodeCore.Timer(.release, id: id), afterMilliseconds: milliseconds, at: node)
        case .cancelTimer(let id):
            nodes[node].cancelledCoreTimers.insert(NodeCore.Timer(.release, id: id))
        case .recordReleases(let records) where handoffWriteFails(.releases):
            complete(.release(.recorded(records, ok: false)), after: delay, at: node)
        case .recordReleases(let records):
            let version = nodes[node].metadata?.layout?.version
            for record in records where version == record.layoutVersion {
                checkOwnersHoldCopy(of: record.partition, at: node, what: "released")
                log("n\(node) released p\(record.partition)")
            }
            let me = nodes[node].id
            changeMetadata(at: node) { metadata in
                for record in records where metadata.layout?.version == record.layoutVersion {
                    metadata.markReleased(record.partition, by: me)
                }
            }
            complete(.release(.recorded(records, ok: true)), after: delay, at: node)
        case .drop(let partition):
            // As the node shell does, checked again against the node's metadata now.
            let metadata = nodes[node].metadata
            var ok = !PartitionRelease.holds(
                partition, node: nodes[node].id, layout: metadata?.layout,
                transition: metadata?.transition)
            // A drop the check refuses writes nothing, so only one it allows can fail.
            if ok, handoffWriteFails(.drop) { ok = false }
            if ok {
                checkOwnersHoldCopy(of: partition, at: node, what: "dropped its copy of")
                log("n\(node) drops its copy of p\(partition)")
                var batch = WriteBatch()
                batch.deleteRange(StorageLayout.partitionRange(partition), in: .data)
                batch.deleteRange(StorageLayout.partitionRange(partition), in: .antiEntropy)
                try? nodes[node].engine.write(batch, durability: .buffered)
                try? nodes[node].store.antiEntropy.rebuild(partition, engine: nodes[node].engine)
            }
            complete(.release(.dropped(partition, ok: ok)), after: delay, at: node)
        case .unanswered(let peer):
            noteUnanswered(by: peer, at: node)
        case .waits(let partition, _, let reason):
            log("n\(node): p\(partition) waits: \(reason)")
        }
    }

    /// One page of the node's rows of `partition` after `after`, without hashes (as the
    /// node lists them before its hash index is complete).
    func unhashedListing(_ partition: PartitionID, after: [UInt8]?, at node: Int) -> KeyListing {
        let following = rows(of: partition, at: node).keys.filter { key in
            after.map { $0.lexicographicallyPrecedes(key) } ?? true
        }.sorted { $0.lexicographicallyPrecedes($1) }
        let page = following.prefix(Self.keysPerListing).map { KeyHash(key: $0, hash: 0) }
        return KeyListing(entries: Array(page), truncated: page.count < following.count)
    }

    /// The node's rows of `partition`, by engine key.
    func rows(of partition: PartitionID, at node: Int) -> [[UInt8]: StoredObject] {
        // The in-memory engine cannot fail to read.
        let entries = try! nodes[node].engine.entries(in: StorageLayout.partitionRange(partition), of: .data)
        var rows: [[UInt8]: StoredObject] = [:]
        for entry in entries {
            guard let object = try? StoredObjectCodec.decode(entry.value) else { continue }
            rows[entry.key] = object
        }
        return rows
    }

    /// The release checker: when a node records a release or drops a copy, every owner
    /// holds every version of every row the copy held unchanged since its push started.
    /// Rows written during the push (a previous owner takes writes until the change is
    /// over), rows reaped anywhere, owners that are down, and owners that lost their disk
    /// meanwhile prove nothing either way.
    mutating func checkOwnersHoldCopy(of partition: PartitionID, at node: Int, what: String) {
        guard let start = nodes[node].pushesStarted[partition] else { return }
        let now = rows(of: partition, at: node)
        for owner in start.owners
        where owner != node && nodes[owner].isUp && nodes[owner].disksLost == start.disksLost[owner] {
            let held = rows(of: partition, at: owner)
            for (key, object) in start.rows where now[key] == object && !object.entries.isEmpty {
                if let row = keys.firstIndex(where: { $0.bytes == key }), reaped[row] != nil { continue }
                let theirs = held[key] ?? StoredObject()
                guard !theirs.descends(object) else { continue }
                report.violations.append(
                    "n\(node) \(what) p\(partition) as pushed, but owner n\(owner) lacks \(ids(object)) of a row it held, holding \(ids(theirs))"
                )
                return
            }
        }
    }
}

/// What a node's copy held when the push of one of its partitions started.
struct PushStart {
    var rows: [[UInt8]: StoredObject]
    /// Every node's disk losses then.
    var disksLost: [Int]
    /// The owners it is pushed to.
    var owners: [Int]
}
