import KVCore

extension Placement {
    /// Why a request of `key` with `quorum` cannot be placed, or `nil` when it can: the
    /// quorum must be valid, ask for no more replicas than the layout keeps, and the
    /// key's partition must be one of the layout's.
    func problem(_ key: ReplicaKey, _ quorum: Quorum) -> KVError? {
        do throws(KVError) {
            try quorum.validate()
        } catch {
            return error
        }
        guard quorum.n <= layout.replicationFactor else {
            return KVError(
                .invalidQuorum,
                "n is \(quorum.n) but the cluster keeps at most \(layout.replicationFactor) replicas per partition"
            )
        }
        guard Int(key.partition.rawValue) < layout.partitionCount else {
            return KVError(
                .invalidRequest, "partition \(key.partition) is outside the layout's \(layout.partitionCount)"
            )
        }
        return nil
    }

    /// The replicas a read of `key` asks, in order.
    func readPreference(_ key: ReplicaKey, _ quorum: Quorum) -> Result<[NodeID], KVError> {
        if let error = problem(key, quorum) { return .failure(error) }
        let replicas = readReplicas(of: key.partition).prefix(quorum.n)
        guard replicas.count == quorum.n else {
            return .failure(
                KVError(
                    .quorumUnavailable,
                    "the layout places \(replicas.count) replicas of this key and the request needs \(quorum.n)"
                ))
        }
        return .success(Array(replicas))
    }

    /// The replica sets a write of `key` needs its quorum in: the layout's first
    /// `quorum.n` replicas, and the previous owners' while the partition moves (a previous
    /// layout of fewer nodes may have fewer replicas; the quorum there is capped at their
    /// number).
    func writeQuorumSets(_ key: ReplicaKey, _ quorum: Quorum) -> Result<[[NodeID]], KVError> {
        if let error = problem(key, quorum) { return .failure(error) }
        let sets = writeSets(of: key.partition).map { Array($0.prefix(quorum.n)) }
        guard sets[0].count == quorum.n else {
            return .failure(
                KVError(
                    .quorumUnavailable,
                    "the layout places \(sets[0].count) replicas of this key and the request needs \(quorum.n)"
                ))
        }
        return .success(sets.filter { !$0.isEmpty })
    }
}

/// Which client reads (and writes) a node answers alone, from its own replica, without
/// a step of its coordinator: those whose preference list is the node itself and nothing
/// else (a table or request with `n=1` whose partition the node holds). The coordinator
/// would ask only the local replica and answer with its object as it is (one reply is
/// not merged and leaves nothing to repair), so a front end may answer such a read on
/// the thread where it arrived instead of handing it to the core's event loop and back.
///
/// The coordinator makes a new rule whenever its placement changes, and ``revision``
/// counts those changes. A shell that answers a read under a rule checks, after reading
/// the row, that the rule is still the current one; otherwise the read goes through
/// the coordinator, so it is never served by a node that had already stopped being
/// the partition's replica.
public struct LocalReadRule: Hashable, Sendable {
    /// The node whose reads these are.
    public let node: NodeID
    /// Where the coordinator sends reads.
    public let placement: Placement
    /// How many times the coordinator's placement had changed when this rule was made.
    public let revision: UInt64

    /// Whether the coordinator would answer a read of `key` with `quorum` from this
    /// node's replica alone, with its object unchanged.
    public func answersAlone(_ key: ReplicaKey, _ quorum: Quorum) -> Bool {
        guard quorum.n == 1, case .success(let replicas) = placement.readPreference(key, quorum) else {
            return false
        }
        return replicas == [node]
    }

    /// Whether the coordinator would carry out a write of `key` with `quorum` on this
    /// node's replica alone: every replica set the write needs its quorum in is this node
    /// and nothing else (`n=1`, the partition not moving elsewhere). It would then apply
    /// ``StorageCommand/coordinate(_:_:)`` locally and answer with the stored object, or
    /// with the failure, and send nothing to any peer.
    ///
    /// A shell queues such a write only while its rule is still the current one (the
    /// core publishes a new rule before any action of the new placement). Once queued,
    /// the write is not checked again: the coordinator, too, keeps the replicas it picked
    /// when a write started if the placement changes before the write is stored.
    public func writesAlone(_ key: ReplicaKey, _ quorum: Quorum) -> Bool {
        guard quorum.n == 1, case .success(let sets) = placement.writeQuorumSets(key, quorum) else {
            return false
        }
        return !sets.isEmpty && sets.allSatisfy { $0 == [node] }
    }
}
