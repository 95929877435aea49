import KVCore

/// Timeouts of a ``Coordinator``.
public struct CoordinatorSettings: Hashable, Sendable {
    /// How long a read or write waits for its quorum.
    public var requestTimeoutMilliseconds: Int64
    /// How long a node waits for a coordinator it forwarded a request to: the
    /// coordinator's own timeout plus a margin for the extra hop.
    public var forwardTimeoutMilliseconds: Int64 { requestTimeoutMilliseconds + 1_000 }

    /// Creates settings.
    public init(requestTimeoutMilliseconds: Int64 = 5_000) {
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
    }
}

/// The read and write coordination of one node, as a pure state machine: events in,
/// actions out, no I/O, no clock.
///
/// ## What it does
///
/// - **Routing.** A write must be coordinated by a replica of its key, so that a
///   replica's actor id makes the new dot. A node that is not one forwards the write to
///   the first preference-list replica it believes up (`coordinateWrite`). So does a
///   replica given a write with a precondition, which that one replica checks for every
///   writer of the key while it is up. Reads need no dot: any node coordinates them.
/// - **Writes.** The coordinator first applies the write to its own storage
///   (``StorageCommand/coordinate(_:_:)``), which makes the dot, then sends the
///   resulting object to the other replicas of the preference list (`store`). It
///   answers once `w` replicas (itself included) acknowledged, `dw` of them durably and
///   `pw` of them primaries. Before writing anything it checks that enough replicas are
///   believed up; if not, it fails with `quorum.unavailable` and nothing is stored.
/// - **Increments.** A counter increment, once its quorum is met, also fetches the
///   state of every other replica that acknowledged it and answers the merge, so the
///   new value includes every increment acknowledged through an overlapping quorum
///   (not only what the coordinating replica held).
/// - **Reads.** The coordinator fetches the key from every replica of the preference
///   list and answers once `r` replied (`pr` of them primaries) with the merge of the
///   replies. Absence is a reply.
/// - **Read repair.** A read stays open until every replica answered or the timeout
///   fired; then each replica whose reply differs from the merge of all replies gets
///   that merge (`repair`). The work is bounded: at most one message per replica that
///   answered, never to one that did not (hinted handoff and anti-entropy cover those).
/// - **Failures.** When the quorum can no longer be met, the operation fails with
///   `quorum.unavailable`, saying how many replicas answered and how many were needed.
///   A write whose timeout fires is `write.indeterminate`: it may have been stored.
///
/// ## Terms
///
/// The *preference list* of a key is the first `n` nodes of its partition's replica
/// list in the ``Layout``: its *primaries*. A primary believed down is stood in for by a
/// *fallback* (``fallbacks(of:excluding:)``) that keeps the write as a hint (sloppy
/// quorum, hinted handoff).
///
/// Late replies after an operation ended are ignored: ids are never reused.
public struct Coordinator: Sendable {
    /// What the shell must do.
    ///
    /// Interpreters switch over it without a `default:`, so a new action cannot be
    /// forgotten by one of them.
    public enum Action: Hashable, Sendable {
        /// Send a message to another node. If it cannot be sent, report
        /// ``Coordinator/sendFailed(_:to:)``.
        case send(ReplicaMessage, to: NodeID)
        /// Run a storage command under the row's lock, then report
        /// ``Coordinator/storageCompleted(_:_:)`` with the ticket.
        case storage(StorageTicket, StorageCommand)
        /// Report ``Coordinator/timerFired(_:)`` after the given time, unless cancelled.
        case startTimer(OperationID, afterMilliseconds: Int64)
        /// Cancel a timer started for the operation.
        case cancelTimer(OperationID)
        /// Answer the client operation.
        case reply(OperationID, OperationOutcome)
    }

    /// The actor this node makes dots with.
    public let actor: ActorID
    /// The node.
    public var node: NodeID { actor.node }
    /// Where reads and writes go: the layout, and the previous owners of partitions
    /// that are moving.
    public private(set) var placement: Placement
    /// How many times ``placement`` has changed (see ``LocalReadRule``).
    public private(set) var placementRevision: UInt64 = 0
    /// The layout that decides preference lists.
    public var layout: Layout { placement.layout }
    /// Timeouts.
    public let settings: CoordinatorSettings

    /// Nodes the shell reported unreachable.
    var down: Set<NodeID> = []
    /// The nodes of `down` that are still connected and only suspected by SWIM.
    var suspected: Set<NodeID> = []
    var nextMessageID: UInt64
    var writes: [OperationID: WriteRound] = [:]
    var reads: [OperationID: ReadRound] = [:]
    /// `store` and `fetch` requests in flight, by message id, with the replica asked:
    /// a reply counts only if it comes from that replica.
    var requests: [UInt64: (operation: OperationID, replica: NodeID)] = [:]
    /// The ids in `requests` of each operation, so finishing one forgets them without
    /// a scan of every request in flight.
    var requestIDs: [OperationID: [UInt64]] = [:]
    /// Operations forwarded to another coordinator, by message id.
    var forwards: [UInt64: OperationID] = [:]
    var forwardIDs: [OperationID: UInt64] = [:]
    /// Forwarded operations already started, so a duplicated request is not coordinated
    /// twice (which would make a second dot for the same write). Bounded: the oldest are
    /// forgotten first.
    var startedForwards: Set<OperationID> = []
    var startedForwardsOrder: [OperationID] = []
    var startedForwardsNext = 0
    /// How many started forwarded operations are remembered.
    static let rememberedForwards = 16_384

    /// Creates a coordinator.
    ///
    /// `firstMessageID` must differ for every life of the node (the shell draws it at
    /// random; the simulator from its seed): peers match replies and suppress duplicate
    /// forwards by message id, so a restarted node that counted from the same start
    /// would have a late reply to its previous life taken for an answer to a new request.
    public init(
        actor: ActorID, layout: Layout, settings: CoordinatorSettings = CoordinatorSettings(),
        firstMessageID: UInt64
    ) {
        self.actor = actor
        self.placement = Placement(layout: layout)
        self.settings = settings
        self.nextMessageID = firstMessageID
    }

    /// How many operations are in flight (coordinated or forwarded), for metrics and tests.
    public var operationsInFlight: Int { writes.count + reads.count + forwards.count }

    /// How many replica requests are awaiting a reply, for tests: finished operations
    /// must leave none behind.
    public var requestsInFlight: Int { requests.count + requestIDs.count }

    // MARK: - Events

    /// A new layout takes effect for operations that start from now on.
    public mutating func layoutChanged(_ layout: Layout) {
        placementChanged(Placement(layout: layout))
    }

    /// A new layout, or the progress of a layout change, takes effect for operations
    /// that start from now on.
    public mutating func placementChanged(_ placement: Placement) {
        guard placement.layout.version >= layout.version else { return }
        self.placement = placement
        placementRevision &+= 1
    }

    /// Which reads this node's front ends may answer without the coordinator, under the
    /// current placement.
    public var localReads: LocalReadRule {
        LocalReadRule(node: node, placement: placement, revision: placementRevision)
    }

    /// Whether a node counts as up changed: connected and alive to SWIM (`isUp`), or
    /// connected but merely suspected by SWIM (`isSuspected`, with `isUp` false).
    public mutating func reachabilityChanged(_ node: NodeID, isUp: Bool, isSuspected: Bool = false) {
        if isUp { down.remove(node) } else { down.insert(node) }
        if !isUp && isSuspected { suspected.insert(node) } else { suspected.remove(node) }
    }

    /// A client write arrived.
    public mutating func write(
        _ operation: OperationID, key: ReplicaKey, _ write: ProposedWrite, quorum: Quorum
    )
        -> [Action]
    {
        self.write(operation, key: key, write, quorum: quorum, forwardingConditional: true)
    }

    /// A write to coordinate; `forwardingConditional` is false once the replica a
    /// conditional write was forwarded to proved unreachable.
    mutating func write(
        _ operation: OperationID, key: ReplicaKey, _ write: ProposedWrite, quorum: Quorum,
        forwardingConditional: Bool
    ) -> [Action] {
        let sets: [[NodeID]]
        switch writeSets(key, quorum) {
        case .failure(let error): return finish(operation, .failed(error))
        case .success(let lists): sets = lists
        }
        // While a partition moves, the write goes to the old and the new replicas and
        // needs its quorum among each (see ``Placement``).
        var preference: [NodeID] = []
        for set in sets {
            for replica in set where !preference.contains(replica) { preference.append(replica) }
        }
        // While the partition moves, a replica of both the old and the new set is one
        // whatever layout the receiver has seen yet, so it is asked first.
        let both = preference.filter { replica in sets.allSatisfy { $0.contains(replica) } }
        let target =
            both.first { !down.contains($0) } ?? preference.first { !down.contains($0) } ?? preference[0]
        var isForwarded = false
        if case .forwarded = operation { isForwarded = true }
        guard preference.contains(node) else {
            if isForwarded {
                // Two nodes disagree about the layout; forwarding again could loop.
                return finish(
                    operation,
                    .failed(
                        KVError(
                            .quorumUnavailable,
                            "this node is not a replica of the key in layout version \(layout.version); retry once the layout has settled"
                        )))
            }
            return forward(operation, to: target) {
                .quorum(.coordinateWrite(id: $0, key: key, write: write, quorum: quorum))
            }
        }
        // A precondition is checked against the coordinating replica's copy, so two
        // replicas coordinating writes of one key could each pass it. Conditional writes
        // therefore go to one coordinator per key while it is up: the replica a
        // non-replica would forward to. A forwarded one stays where it arrived, so that
        // nodes with different views cannot bounce it.
        if write.condition != .none, target != node, !isForwarded, forwardingConditional {
            return forward(operation, to: target) {
                .quorum(.coordinateWrite(id: $0, key: key, write: write, quorum: quorum))
            }
        }
        // Sloppy quorum: each primary believed down is stood in for by the next healthy
        // node on the ring, which keeps the write as a hint for it. W and DW count the
        // stand-ins' acks; PW counts primaries only.
        let upPrimaries = preference.filter { !down.contains($0) }
        // Stand-ins go to the primaries that are certainly down before the merely
        // suspected ones, which can still take the write themselves.
        let absent =
            preference.filter { down.contains($0) && !suspected.contains($0) }
            + preference.filter { suspected.contains($0) }
        let standIns = fallbacks(of: key.partition, excluding: preference).filter { !down.contains($0) }
        let hints = Dictionary(uniqueKeysWithValues: zip(standIns, absent))
        let covered = min(standIns.count, absent.count)
        // A down primary nobody stands in for still gets the write: the transport fails
        // fast if it is down, and a send that gets through is how it is seen up again.
        // The coordinator also keeps a hint for it itself (as Cassandra does), so a node
        // back from a short outage is whole in seconds, not at anti-entropy's pace. The
        // hint does not count towards W: the coordinator's own ack already does.
        let uncovered = Array(absent.dropFirst(covered))
        let targets = upPrimaries + standIns.prefix(covered) + uncovered
        // A primary that is only suspected (connected, but late with its SWIM acks) is
        // stood in for when a stand-in is free; one that nobody stands in for still
        // counts as reachable. A node starved of CPU answers probes late and is
        // suspected, but so is every member by a node that is itself starved (its acks
        // arrive "late" because it reads them late): refusing writes on suspicion alone
        // fails them on the busiest nodes. If the suspect is really gone, the write
        // times out as indeterminate instead of failing at once.
        let suspectedTargets = uncovered.filter(suspected.contains)
        let quorumSets = sets.map { Set($0) }
        for set in quorumSets {
            let reachable =
                upPrimaries.filter(set.contains).count + hints.values.filter(set.contains).count
                + suspectedTargets.filter(set.contains).count
            let (w, dw) = WriteRound.requirement(quorum, in: set)
            guard reachable >= w, reachable >= dw, upPrimaries.count + suspectedTargets.count >= quorum.pw
            else {
                return finish(
                    operation,
                    .failed(
                        KVError(
                            .quorumUnavailable,
                            "\(upPrimaries.filter(set.contains).count) of \(set.count) replicas and \(hints.values.filter(set.contains).count) stand-ins are reachable and the write needs w=\(quorum.w), dw=\(quorum.dw), pw=\(quorum.pw)\(quorumSets.count > 1 ? " in both the old and the new replicas of this moving partition" : ""); nothing was written"
                        )))
            }
        }
        writes[operation] = WriteRound(
            key: key, targets: targets, primaries: Set(upPrimaries + uncovered), hintFor: hints,
            keptHints: Set(uncovered), isIncrement: write.increment != nil, quorumSets: quorumSets,
            quorum: quorum)
        return [
            .storage(.operation(operation), .coordinate(key, write)),
            .startTimer(operation, afterMilliseconds: settings.requestTimeoutMilliseconds),
        ]
    }

    /// The nodes that stand in for down primaries of `partition`, in order: the layout's
    /// further replicas of the partition, then every other member by its placement rank
    /// in the partition (so each partition has its own order and the load of a down node
    /// spreads over all the others).
    func fallbacks(of partition: PartitionID, excluding primaries: [NodeID]) -> [NodeID] {
        let further = layout.replicas(of: partition).filter { !primaries.contains($0) }
        let placed = Set(primaries + further)
        let others = layout.members.map(\.node).filter { !placed.contains($0) }.sorted {
            (Layout.rank(Int(partition.rawValue), $0), $0) < (Layout.rank(Int(partition.rawValue), $1), $1)
        }
        return further + others
    }

    /// A client read arrived.
    public mutating func read(_ operation: OperationID, key: ReplicaKey, quorum: Quorum) -> [Action] {
        let preference: [NodeID]
        switch preferenceList(key, quorum) {
        case .failure(let error): return finish(operation, .failed(error))
        case .success(let list): preference = list
        }
        let round = ReadRound(key: key, preference: preference, quorum: quorum)
        var actions: [Action] = [
            .startTimer(operation, afterMilliseconds: settings.requestTimeoutMilliseconds)
        ]
        for replica in preference {
            if replica == node {
                actions.append(.storage(.operation(operation), .load(key)))
            } else {
                // Sent even to replicas believed down: the transport fails fast if they
                // are, and a send that gets through is how they are seen up again.
                let id = request(for: operation, to: replica)
                actions.append(.send(.quorum(.fetch(id: id, key: key)), to: replica))
            }
        }
        reads[operation] = round
        return actions + evaluateRead(operation)
    }

    /// A storage command finished.
    public mutating func storageCompleted(_ ticket: StorageTicket, _ outcome: StorageOutcome) -> [Action] {
        switch ticket {
        case .operation(let operation):
            if writes[operation] != nil { return localWriteCompleted(operation, outcome) }
            if reads[operation] != nil { return replicaAnswered(operation, from: node, outcome) }
            return []
        case .store(let from, let id):
            switch outcome {
            case .object: return [.send(.quorum(.stored(id: id, durable: true)), to: from)]
            case .failed(let error): return [.send(.quorum(.replicaFailed(id: id, error: error)), to: from)]
            }
        case .fetch(let from, let id):
            switch outcome {
            case .object(let object): return [.send(.quorum(.fetched(id: id, object: object)), to: from)]
            case .failed(let error): return [.send(.quorum(.replicaFailed(id: id, error: error)), to: from)]
            }
        case .handoff(let from, let id):
            switch outcome {
            case .object: return [.send(.hints(.handedOff(id: id, error: nil)), to: from)]
            case .failed(let error): return [.send(.hints(.handedOff(id: id, error: error)), to: from)]
            }
        case .repair, .maintenance, .hint:
            return []
        }
    }

    /// A message from another node arrived.
    public mutating func received(_ message: ReplicaMessage, from sender: NodeID) -> [Action] {
        switch message {
        case .quorum(.store(let id, let key, let object)):
            return peerStorage(.store(from: sender, id: id), .merge(key, object), of: key)
        case .quorum(.fetch(let id, let key)):
            return peerStorage(.fetch(from: sender, id: id), .load(key), of: key)
        case .quorum(.repair(let key, let object)):
            return peerStorage(.repair, .merge(key, object), of: key)
        case .quorum(.storeHint(let id, let key, let object, let target)):
            return peerStorage(
                .store(from: sender, id: id), .storeHint(target: target, key: key, object: object), of: key)
        case .hints(.handoff(let id, let key, let object)):
            return peerStorage(.handoff(from: sender, id: id), .merge(key, object), of: key)
        case .quorum(.stored(let id, let durable)):
            guard let operation = takeRequest(id, answeredBy: sender) else { return [] }
            return replicaAcknowledged(operation, from: sender, durable: durable)
        case .quorum(.fetched(let id, let object)):
            guard let operation = takeRequest(id, answeredBy: sender) else { return [] }
            if writes[operation] != nil { return confirmationAnswered(operation, from: sender, object) }
            return replicaAnswered(operation, from: sender, .object(object))
        case .quorum(.replicaFailed(let id, let error)):
            guard let operation = takeRequest(id, answeredBy: sender) else { return [] }
            if writes[operation]?.confirming != nil {
                return confirmationAnswered(operation, from: sender, nil)
            }
            if writes[operation] != nil { return replicaFailed(operation, sender) }
            return replicaAnswered(operation, from: sender, .failed(error))
        case .quorum(.coordinateWrite(let id, let key, let proposed, let quorum)):
            guard rememberForward(.forwarded(from: sender, id: id)) else { return [] }
            return write(.forwarded(from: sender, id: id), key: key, proposed, quorum: quorum)
        case .quorum(.coordinateRead(let id, let key, let quorum)):
            guard rememberForward(.forwarded(from: sender, id: id)) else { return [] }
            return read(.forwarded(from: sender, id: id), key: key, quorum: quorum)
        case .quorum(.coordinated(let id, let outcome)):
            guard let operation = forwards.removeValue(forKey: id) else { return [] }
            forwardIDs[operation] = nil
            return [.cancelTimer(operation)] + finish(operation, outcome)
        case .metadata, .scans, .membership, .hints(.handedOff), .antiEntropy, .reaping, .transfers:
            // Metadata, scans, membership, hint delivery, anti-entropy and reaping are the
            // node shell's business, not a quorum's.
            return []
        }
    }

    /// A message could not be sent (no connection, or the connection broke before it
    /// was written).
    public mutating func sendFailed(_ message: ReplicaMessage, to target: NodeID) -> [Action] {
        switch message {
        case .quorum(.store(let id, let key, let object)):
            // The replica missed the write: keep it as a hint for the replica, unless
            // the round already keeps one (it was down when the write started). The
            // message carries everything, so this holds after the round ended too.
            let operation = takeRequest(id, answeredBy: target)
            let kept = operation.flatMap { writes[$0]?.keptHints.contains(target) } ?? false
            let hint: [Action] =
                kept ? [] : [.storage(.hint, .storeHint(target: target, key: key, object: object))]
            guard let operation else { return hint }
            return hint + replicaFailed(operation, target)
        case .quorum(.storeHint(let id, let key, let object, let primary)):
            // The stand-in is unreachable too: the coordinator keeps the hint itself.
            let hint: [Action] = [.storage(.hint, .storeHint(target: primary, key: key, object: object))]
            guard let operation = takeRequest(id, answeredBy: target) else { return hint }
            return hint + replicaFailed(operation, target)
        case .quorum(.fetch(let id, _)):
            guard let operation = takeRequest(id, answeredBy: target) else { return [] }
            if writes[operation] != nil { return confirmationAnswered(operation, from: target, nil) }
            return replicaAnswered(
                operation, from: target,
                .failed(KVError(.quorumUnavailable, "replica \(target) is unreachable")))
        case .quorum(.coordinateWrite(let id, let key, let write, let quorum))
        where write.condition != .none && isReplica(key, quorum):
            // A replica sent a conditional write to the key's first replica, which is
            // unreachable: it checks the condition itself, as it would once that one is
            // known to be down.
            guard let operation = forwards.removeValue(forKey: id) else { return [] }
            forwardIDs[operation] = nil
            return [.cancelTimer(operation)]
                + self.write(operation, key: key, write, quorum: quorum, forwardingConditional: false)
        case .quorum(.coordinateWrite(let id, _, _, _)), .quorum(.coordinateRead(let id, _, _)):
            // It never left this node, so it certainly did not happen.
            guard let operation = forwards.removeValue(forKey: id) else { return [] }
            forwardIDs[operation] = nil
            return [.cancelTimer(operation)]
                + finish(
                    operation,
                    .failed(KVError(.quorumUnavailable, "the coordinating replica \(target) is unreachable")))
        case .quorum(.stored), .quorum(.fetched), .quorum(.replicaFailed), .quorum(.repair),
            .quorum(.coordinated),
            .metadata, .scans, .membership, .hints, .antiEntropy, .reaping, .transfers:
            // Replies and repairs are not retried; the other side times out or a later
            // read repairs.
            return []
        }
    }

    /// A timer started for `operation` fired.
    public mutating func timerFired(_ operation: OperationID) -> [Action] {
        if var round = writes.removeValue(forKey: operation) {
            forgetRequests(of: operation)
            guard !round.replied else { return [] }
            round.replied = true
            // An increment that met its quorum and was still gathering its replicas'
            // counters answers with what it has: the write itself succeeded.
            if round.confirming != nil, let object = round.object {
                return finish(operation, .written(object))
            }
            return finish(
                operation,
                .failed(
                    KVError(
                        .writeIndeterminate,
                        "\(round.acknowledged.count) of \(round.quorum.w) needed replicas acknowledged within \(settings.requestTimeoutMilliseconds) ms\(round.quorumSets.count > 1 ? " (the partition is moving: it needs them among both its old and its new replicas; silent: \(round.silent.map(\.description).joined(separator: ", ")))" : ""); the write may or may not become visible"
                    )))
        }
        if var round = reads.removeValue(forKey: operation) {
            forgetRequests(of: operation)
            var actions: [Action] = []
            if !round.replied {
                round.replied = true
                actions += finish(
                    operation,
                    .failed(
                        KVError(
                            .quorumUnavailable,
                            "\(round.replies.count) of \(round.quorum.r) needed replicas answered within \(settings.requestTimeoutMilliseconds) ms"
                        )))
            }
            return actions + repairs(round)
        }
        if let id = forwardIDs.removeValue(forKey: operation) {
            forwards[id] = nil
            return finish(
                operation,
                .failed(
                    KVError(
                        .writeIndeterminate,
                        "the coordinating replica did not answer within \(settings.forwardTimeoutMilliseconds) ms; the operation may or may not have happened"
                    )))
        }
        return []
    }

    // MARK: - Helpers

    /// A peer's storage request, answered as a failed one when its key's partition is
    /// outside the layout. Only a faulty or hostile peer sends such a key; stored as a
    /// hint, it would stop this node at every look-up of its replicas.
    private mutating func peerStorage(_ ticket: StorageTicket, _ command: StorageCommand, of key: ReplicaKey)
        -> [Action]
    {
        let count = placement.layout.partitionCount
        guard Int(key.partition.rawValue) < count else {
            return storageCompleted(
                ticket,
                .failed(
                    KVError(.invalidRequest, "partition \(key.partition) is outside the layout's \(count)")))
        }
        return [.storage(ticket, command)]
    }

    /// Checks the quorum and the key against the layout.
    func validate(_ key: ReplicaKey, _ quorum: Quorum) -> KVError? {
        placement.problem(key, quorum)
    }

    /// The replicas a read of `key` asks.
    func preferenceList(_ key: ReplicaKey, _ quorum: Quorum) -> Result<[NodeID], KVError> {
        placement.readPreference(key, quorum)
    }

    /// Whether this node is among the replicas a write of `key` goes to.
    func isReplica(_ key: ReplicaKey, _ quorum: Quorum) -> Bool {
        guard case .success(let sets) = writeSets(key, quorum) else { return false }
        return sets.contains { $0.contains(node) }
    }

    /// The replica sets a write of `key` needs its quorum in (see
    /// ``Placement/writeQuorumSets(_:_:)``).
    func writeSets(_ key: ReplicaKey, _ quorum: Quorum) -> Result<[[NodeID]], KVError> {
        placement.writeQuorumSets(key, quorum)
    }

    mutating func forward(
        _ operation: OperationID, to target: NodeID, _ request: (_ id: UInt64) -> ReplicaMessage
    ) -> [Action] {
        let id = takeMessageID()
        forwards[id] = operation
        forwardIDs[operation] = id
        return [
            .send(request(id), to: target),
            .startTimer(operation, afterMilliseconds: settings.forwardTimeoutMilliseconds),
        ]
    }

    /// The action that ends `operation`: a reply to the local client, or the outcome
    /// sent back to the node that forwarded it.
    func finish(_ operation: OperationID, _ outcome: OperationOutcome) -> [Action] {
        switch operation {
        case .local: [.reply(operation, outcome)]
        case .forwarded(let from, let id): [.send(.quorum(.coordinated(id: id, outcome: outcome)), to: from)]
        }
    }

    /// Records a forwarded operation; `false` if it was seen before (a duplicate).
    mutating func rememberForward(_ operation: OperationID) -> Bool {
        guard startedForwards.insert(operation).inserted else { return false }
        if startedForwardsOrder.count < Self.rememberedForwards {
            startedForwardsOrder.append(operation)
        } else {
            startedForwards.remove(startedForwardsOrder[startedForwardsNext])
            startedForwardsOrder[startedForwardsNext] = operation
            startedForwardsNext = (startedForwardsNext + 1) % Self.rememberedForwards
        }
        return true
    }

    mutating func takeMessageID() -> UInt64 {
        defer { nextMessageID += 1 }
        return nextMessageID
    }

    mutating func forgetRequests(of operation: OperationID) {
        for id in requestIDs.removeValue(forKey: operation) ?? [] { requests[id] = nil }
    }

    /// Records a request in flight to `replica` for `operation` and returns its id.
    mutating func request(for operation: OperationID, to replica: NodeID) -> UInt64 {
        let id = takeMessageID()
        requests[id] = (operation, replica)
        requestIDs[operation, default: []].append(id)
        return id
    }

    /// The operation a reply belongs to, if `id` is a request in flight to `replica`.
    mutating func takeRequest(_ id: UInt64, answeredBy replica: NodeID) -> OperationID? {
        guard let request = requests[id], request.replica == replica else { return nil }
        requests[id] = nil
        return request.operation
    }
}
