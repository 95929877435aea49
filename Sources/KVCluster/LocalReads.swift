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
}

/// Which client reads a node answers alone, from its own replica, without a step of
/// its coordinator: those whose preference list is the node itself and nothing else
/// (a table or request with `n=1` whose partition the node holds). The coordinator
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
}
