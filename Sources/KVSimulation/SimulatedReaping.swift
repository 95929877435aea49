import KVCluster
import KVCore
import KVReplica
import KVStorage

/// The simulator's interpreter of ``TombstoneReaper``: the same machine the node runs,
/// its index reads and reaps done inline on the node's replica store and its
/// completions, messages and timers delivered as events.
extension SimulatedWorld {
    /// Twice the longest a message can take here (10 ms, plus up to 400 ms when slow,
    /// plus 50 ms when duplicated), and longer than a read's repair can trail its fetch:
    /// as the node's grace bounds its peer queues.
    static let reaperSettings = TombstoneReaperSettings(
        tombstonesPerPass: 16, graceMilliseconds: 2_000, requestTimeoutMilliseconds: requestTimeout)

    /// What node `node`'s reaper sees: SWIM's view of who is alive, its own copy of the
    /// metadata.
    func reaperView(_ node: Int) -> ReaperView {
        let me = nodes[node].id
        let metadata = nodes[node].metadata
        let membership = nodes[node].core.membership
        let alive = { (member: NodeID) in membership.state(of: member)?.status == .alive }
        // As the node shell does: a member that left is asked while it is reachable (it
        // may hold hints older than the tombstone).
        let members =
            (metadata?.activeMembers ?? nodes.map(\.id)).filter { $0 != me }
            + (metadata?.departed ?? []).filter { $0 != me && alive($0) }.sorted()
        return ReaperView(
            node: me, members: members,
            reachable: Set(members.filter(alive)),
            layout: metadata?.layout ?? nodes[node].core.coordinator.layout,
            // The coordinator holds the placement of the node's metadata.
            moving: metadata == nil ? [] : Set(nodes[node].core.coordinator.placement.previousOwners.keys),
            indexComplete: nodes[node].store.antiEntropy.indexComplete)
    }

    /// Carries out one of the reaper's actions. The `switch` has no `default:` on purpose.
    mutating func performReaping(_ action: TombstoneReaper.Action, at node: Int) {
        switch action {
        case .readCandidates(let partition, let limit, let minimumAge, let start):
            let candidates = nodes[node].store.reapCandidates(
                of: partition, limit: limit, minimumAge: minimumAge, start: start)
            complete(
                .reaper(.candidatesRead(candidates)), after: Int64.random(in: 0...3, using: &random), at: node
            )
        case .send(let message, let target):
            send(message, from: node, to: index(of: target))
        case .reap(let id, let key, let hash):
            let outcome = reap(key, objectHash: hash, at: node)
            complete(
                .reaper(.reaped(id: id, outcome)), after: Int64.random(in: 0...3, using: &random), at: node)
        case .startTimer(let id, let delay):
            startCoreTimer(NodeCore.Timer(.reaper, id: id), afterMilliseconds: delay, at: node)
        case .unanswered(let peer):
            noteUnanswered(by: peer, at: node)
        case .cancelTimer(let id):
            nodes[node].cancelledCoreTimers.insert(NodeCore.Timer(.reaper, id: id))
        }
    }

    /// Reaps `key` at `node` if it still holds exactly that tombstone, and remembers what
    /// went for the resurrection checker.
    mutating func reap(_ key: ReplicaKey, objectHash hash: UInt64, at node: Int) -> StorageOutcome {
        let before = execute(.load(key), at: node)
        let outcome = execute(.reap(key, objectHash: hash), at: node)
        if case .object(let held) = before, held.isDeleted, case .object(let after) = outcome,
            after.entries.isEmpty, let row = keys.firstIndex(where: { $0.bytes == key.bytes })
        {
            log("n\(node) reaps \(ids(held)) of key \(row)")
            report.tombstonesReaped += 1
            reaped[row, default: []].formUnion(held.values.map(Self.writeID))
        }
        return outcome
    }

    /// A reaped tombstone never lets an older value come back: no value that a reaped
    /// tombstone superseded is live in the final read.
    mutating func checkReapedTombstones() {
        var memo: [Int: Set<Int>] = [:]
        for (key, tombstones) in reaped.sorted(by: { $0.key < $1.key }) {
            guard let final = finalReads[key] else { continue }
            for tombstone in tombstones.sorted() {
                let covered = ancestors(of: tombstone, memo: &memo)
                for value in final.liveValues.map(Self.writeID) where covered.contains(value) {
                    report.violations.append(
                        "w\(value) of key \(key) came back after the tombstone †w\(tombstone) that superseded it was reaped"
                    )
                }
            }
        }
    }
}
