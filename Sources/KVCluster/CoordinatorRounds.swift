import KVCore

/// The coordinator's quorum rounds: how acknowledgements, failures and replies of the
/// replicas move a write or a read to its answer (see ``Coordinator``).
extension Coordinator {
    // MARK: - Writes

    mutating func localWriteCompleted(_ operation: OperationID, _ outcome: StorageOutcome) -> [Action] {
        guard var round = writes[operation] else { return [] }
        switch outcome {
        case .failed(let error):
            writes[operation] = nil
            return [.cancelTimer(operation)] + finish(operation, .failed(error))
        case .object(let object):
            round.object = object
            round.acknowledged[node] = true
            var actions: [Action] = round.keptHints.sorted().map { target in
                .storage(.hint, .storeHint(target: target, key: round.key, object: object))
            }
            for replica in round.targets where replica != node {
                let id = request(for: operation, to: replica)
                if let target = round.hintFor[replica] {
                    actions.append(
                        .send(
                            .quorum(.storeHint(id: id, key: round.key, object: object, target: target)),
                            to: replica)
                    )
                } else {
                    actions.append(
                        .send(.quorum(.store(id: id, key: round.key, object: object)), to: replica))
                }
            }
            writes[operation] = round
            return actions + evaluateWrite(operation)
        }
    }

    /// An acknowledging replica answered an increment's confirming fetch (`nil`: it
    /// failed or could not be reached; the write stands all the same).
    mutating func confirmationAnswered(
        _ operation: OperationID, from replica: NodeID, _ object: StoredObject?
    ) -> [Action] {
        guard var round = writes[operation], round.confirming?.remove(replica) != nil else { return [] }
        if let object, let own = round.object { round.object = own.merging(object) }
        writes[operation] = round
        return evaluateWrite(operation)
    }

    mutating func replicaAcknowledged(_ operation: OperationID, from replica: NodeID, durable: Bool)
        -> [Action]
    {
        guard writes[operation] != nil else { return [] }
        writes[operation]!.acknowledged[replica] = durable
        return evaluateWrite(operation)
    }

    mutating func replicaFailed(_ operation: OperationID, _ replica: NodeID) -> [Action] {
        guard writes[operation] != nil else { return [] }
        writes[operation]!.failed.insert(replica)
        return evaluateWrite(operation)
    }

    mutating func evaluateWrite(_ operation: OperationID) -> [Action] {
        guard var round = writes[operation], !round.replied, let object = round.object else { return [] }
        let acks = round.acknowledged.count
        let durable = round.acknowledged.values.filter { $0 }.count
        let primaries = round.acknowledged.keys.filter { round.primaries.contains($0) }.count
        let pending = round.targets.count - acks - round.failed.count
        let quorum = round.quorum
        var met = primaries >= quorum.pw
        var reachable = primaries + pending >= quorum.pw
        for set in round.quorumSets {
            let (w, dw) = WriteRound.requirement(quorum, in: set)
            let counted = round.targets.filter { round.counts($0, in: set) }
            let setAcks = counted.filter { round.acknowledged[$0] != nil }.count
            let setDurable = counted.filter { round.acknowledged[$0] == true }.count
            let setPending = counted.filter { round.acknowledged[$0] == nil && !round.failed.contains($0) }
                .count
            if setAcks < w || setDurable < dw { met = false }
            if setAcks + setPending < w || setDurable + setPending < dw { reachable = false }
        }
        if met && round.isIncrement {
            if round.confirming == nil {
                let peers = round.acknowledged.keys.filter { $0 != node }.sorted()
                round.confirming = Set(peers)
                var actions: [Action] = []
                for peer in peers {
                    let id = request(for: operation, to: peer)
                    actions.append(.send(.quorum(.fetch(id: id, key: round.key)), to: peer))
                }
                writes[operation] = round
                if !peers.isEmpty { return actions }
            } else if round.confirming?.isEmpty == false {
                writes[operation] = round
                return []
            }
        }
        if met {
            round.replied = true
            writes[operation] = nil
            forgetRequests(of: operation)
            return [.cancelTimer(operation)] + finish(operation, .written(object))
        }
        if !reachable {
            round.replied = true
            writes[operation] = nil
            forgetRequests(of: operation)
            return [.cancelTimer(operation)]
                + finish(
                    operation,
                    .failed(
                        KVError(
                            .quorumUnavailable,
                            "\(acks) of \(round.targets.count) replicas acknowledged (\(durable) durably, \(primaries) primaries) and the write needs w=\(quorum.w), dw=\(quorum.dw), pw=\(quorum.pw)\(round.quorumSets.count > 1 ? " in both the old and the new replicas of this moving partition" : ""); it is stored on \(acks) and may become visible"
                        )))
        }
        writes[operation] = round
        return []
    }

    // MARK: - Reads

    mutating func replicaAnswered(
        _ operation: OperationID, from replica: NodeID, _ outcome: StorageOutcome
    )
        -> [Action]
    {
        guard reads[operation] != nil else { return [] }
        switch outcome {
        case .object(let object): reads[operation]!.replies[replica] = object
        case .failed(let error):
            reads[operation]!.failed.insert(replica)
            if error.isStorageFault { reads[operation]!.reported[replica] = error }
        }
        return evaluateRead(operation)
    }

    mutating func evaluateRead(_ operation: OperationID) -> [Action] {
        guard var round = reads[operation] else { return [] }
        var actions: [Action] = []
        let replies = round.replies.count
        let pending = round.preference.count - replies - round.failed.count
        let quorum = round.quorum
        if !round.replied {
            if replies >= quorum.r && replies >= quorum.pr {
                round.replied = true
                actions += finish(operation, .read(round.merged()))
            } else if replies + pending < quorum.r || replies + pending < quorum.pr {
                round.replied = true
                let shortfall =
                    "\(replies) of \(round.preference.count) replicas answered and the read needs \(max(quorum.r, quorum.pr))"
                // A replica whose storage failed (a stored object that does not decode)
                // is not "unavailable": the client must see what went wrong.
                let reported = round.preference.lazy.compactMap { round.reported[$0] }.first
                actions += finish(
                    operation,
                    .failed(
                        reported.map { KVError($0.code, "\(shortfall); a replica reported: \($0.message)") }
                            ?? KVError(.quorumUnavailable, shortfall)))
            }
        }
        if pending == 0 {
            reads[operation] = nil
            forgetRequests(of: operation)
            return actions + [.cancelTimer(operation)] + repairs(round)
        }
        reads[operation] = round
        return actions
    }

    /// Sends the merge of every reply to each replica whose reply differs from it.
    func repairs(_ round: ReadRound) -> [Action] {
        guard round.replies.count > 1 else { return [] }
        let merged = round.merged()
        var actions: [Action] = []
        for replica in round.preference {
            guard let object = round.replies[replica], object != merged else { continue }
            if replica == node {
                actions.append(.storage(.repair, .merge(round.key, merged)))
            } else {
                actions.append(.send(.quorum(.repair(key: round.key, object: merged)), to: replica))
            }
        }
        return actions
    }
}

/// The state of one write this node coordinates.
struct WriteRound: Sendable {
    var key: ReplicaKey
    /// The replicas written: the reachable primaries and the stand-ins for the others.
    var targets: [NodeID]
    /// The reachable primaries among `targets` (PW counts only these).
    var primaries: Set<NodeID>
    /// For each stand-in, the primary it keeps a hint for.
    var hintFor: [NodeID: NodeID]
    /// Down primaries nobody stands in for: the coordinator keeps their hints itself.
    var keptHints: Set<NodeID>
    /// Whether the write is a counter increment: its answer then merges the replicas
    /// that acknowledged it (see ``Coordinator``).
    var isIncrement = false
    /// The acknowledging replicas an increment still waits to hear from before it
    /// answers; `nil` until its quorum is met.
    var confirming: Set<NodeID>?
    /// The replica sets that each need the quorum: one, or two while the partition moves.
    var quorumSets: [Set<NodeID>]
    var quorum: Quorum
    /// The object after the coordinator's own write; `nil` until it is stored.
    var object: StoredObject?
    /// Replicas that acknowledged, and whether durably.
    var acknowledged: [NodeID: Bool] = [:]
    var failed: Set<NodeID> = []
    var replied = false

    /// The targets that neither acknowledged nor failed, in node order.
    var silent: [NodeID] {
        targets.filter { acknowledged[$0] == nil && !failed.contains($0) }.sorted()
    }

    /// Whether an ack of `target` counts towards `set`: it is a member, or stands in for one.
    func counts(_ target: NodeID, in set: Set<NodeID>) -> Bool {
        set.contains(target) || hintFor[target].map(set.contains) == true
    }

    /// The acks and durable acks `set` needs: the quorum, capped at the set's size.
    static func requirement(_ quorum: Quorum, in set: Set<NodeID>) -> (w: Int, dw: Int) {
        (min(quorum.w, set.count), min(quorum.dw, set.count))
    }
}

/// The state of one read this node coordinates.
struct ReadRound: Sendable {
    var key: ReplicaKey
    var preference: [NodeID]
    var quorum: Quorum
    var replies: [NodeID: StoredObject] = [:]
    var failed: Set<NodeID> = []
    /// The storage faults replicas answered with.
    var reported: [NodeID: KVError] = [:]
    var replied = false

    /// The merge of every reply, in preference order (merging is commutative, so the
    /// order only keeps the work deterministic).
    func merged() -> StoredObject {
        let objects = preference.compactMap { replies[$0] }
        // Replicas in sync, the common case, answer equal objects, and an object merged
        // with itself (or with nothing) is itself, entry for entry: comparing is much
        // cheaper than merging, which a read does twice (to answer, then for repairs).
        if let first = objects.first, objects.dropFirst().allSatisfy({ $0 == first }) { return first }
        return objects.reduce(StoredObject()) { $0.merging($1) }
    }
}
