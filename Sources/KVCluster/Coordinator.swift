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
///   the first preference-list replica it believes up (`coordinateWrite`). Reads need no
///   dot: any node coordinates them.
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
    /// The layout that decides preference lists.
    public var layout: Layout { placement.layout }
    /// Timeouts.
    public let settings: CoordinatorSettings

    /// Nodes the shell reported unreachable.
    private var down: Set<NodeID> = []
    /// The nodes of `down` that are still connected and only suspected by SWIM.
    private var suspected: Set<NodeID> = []
    private var nextMessageID: UInt64
    private var writes: [OperationID: WriteRound] = [:]
    private var reads: [OperationID: ReadRound] = [:]
    /// `store` and `fetch` requests in flight, by message id, with the replica asked:
    /// a reply counts only if it comes from that replica.
    private var requests: [UInt64: (operation: OperationID, replica: NodeID)] = [:]
    /// The ids in `requests` of each operation, so finishing one forgets them without
    /// a scan of every request in flight.
    private var requestIDs: [OperationID: [UInt64]] = [:]
    /// Operations forwarded to another coordinator, by message id.
    private var forwards: [UInt64: OperationID] = [:]
    private var forwardIDs: [OperationID: UInt64] = [:]
    /// Forwarded operations already started, so a duplicated request is not coordinated
    /// twice (which would make a second dot for the same write). Bounded: the oldest are
    /// forgotten first.
    private var startedForwards: Set<OperationID> = []
    private var startedForwardsOrder: [OperationID] = []
    private var startedForwardsNext = 0
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
        if placement.layout.version >= layout.version { self.placement = placement }
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
        guard preference.contains(node) else {
            if case .forwarded = operation {
                // Two nodes disagree about the layout; forwarding again could loop.
                return finish(
                    operation,
                    .failed(
                        KVError(
                            .quorumUnavailable,
                            "this node is not a replica of the key in layout version \(layout.version); retry once the layout has settled"
                        )))
            }
            // While the partition moves, a replica of both the old and the new set is one
            // whatever layout the receiver has seen yet, so it is asked first.
            let both = preference.filter { replica in sets.allSatisfy { $0.contains(replica) } }
            let target =
                both.first { !down.contains($0) } ?? preference.first { !down.contains($0) } ?? preference[0]
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
            return [.storage(.store(from: sender, id: id), .merge(key, object))]
        case .quorum(.fetch(let id, let key)):
            return [.storage(.fetch(from: sender, id: id), .load(key))]
        case .quorum(.repair(let key, let object)):
            return [.storage(.repair, .merge(key, object))]
        case .quorum(.storeHint(let id, let key, let object, let target)):
            return [
                .storage(.store(from: sender, id: id), .storeHint(target: target, key: key, object: object))
            ]
        case .hints(.handoff(let id, let key, let object)):
            return [.storage(.handoff(from: sender, id: id), .merge(key, object))]
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

    // MARK: - Writes

    private mutating func localWriteCompleted(_ operation: OperationID, _ outcome: StorageOutcome) -> [Action]
    {
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
    private mutating func confirmationAnswered(
        _ operation: OperationID, from replica: NodeID, _ object: StoredObject?
    ) -> [Action] {
        guard var round = writes[operation], round.confirming?.remove(replica) != nil else { return [] }
        if let object, let own = round.object { round.object = own.merging(object) }
        writes[operation] = round
        return evaluateWrite(operation)
    }

    private mutating func replicaAcknowledged(_ operation: OperationID, from replica: NodeID, durable: Bool)
        -> [Action]
    {
        guard writes[operation] != nil else { return [] }
        writes[operation]!.acknowledged[replica] = durable
        return evaluateWrite(operation)
    }

    private mutating func replicaFailed(_ operation: OperationID, _ replica: NodeID) -> [Action] {
        guard writes[operation] != nil else { return [] }
        writes[operation]!.failed.insert(replica)
        return evaluateWrite(operation)
    }

    private mutating func evaluateWrite(_ operation: OperationID) -> [Action] {
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

    private mutating func replicaAnswered(
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

    private mutating func evaluateRead(_ operation: OperationID) -> [Action] {
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
    private func repairs(_ round: ReadRound) -> [Action] {
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

    // MARK: - Helpers

    /// Checks the quorum and the key against the layout.
    private func validate(_ key: ReplicaKey, _ quorum: Quorum) -> KVError? {
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

    /// The replicas a read of `key` asks.
    private func preferenceList(_ key: ReplicaKey, _ quorum: Quorum) -> Result<[NodeID], KVError> {
        if let error = validate(key, quorum) { return .failure(error) }
        let replicas = placement.readReplicas(of: key.partition).prefix(quorum.n)
        guard replicas.count == quorum.n else {
            return .failure(
                KVError(
                    .quorumUnavailable,
                    "the layout places \(replicas.count) replicas of this key and the request needs \(quorum.n)"
                ))
        }
        return .success(Array(replicas))
    }

    /// The replica sets a write of `key` needs its quorum in: the layout's, and the
    /// previous owners' while the partition moves (a previous layout of fewer nodes may
    /// have fewer replicas; the quorum there is capped at their number).
    private func writeSets(_ key: ReplicaKey, _ quorum: Quorum) -> Result<[[NodeID]], KVError> {
        if let error = validate(key, quorum) { return .failure(error) }
        let sets = placement.writeSets(of: key.partition).map { Array($0.prefix(quorum.n)) }
        guard sets[0].count == quorum.n else {
            return .failure(
                KVError(
                    .quorumUnavailable,
                    "the layout places \(sets[0].count) replicas of this key and the request needs \(quorum.n)"
                ))
        }
        return .success(sets.filter { !$0.isEmpty })
    }

    private mutating func forward(
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
    private func finish(_ operation: OperationID, _ outcome: OperationOutcome) -> [Action] {
        switch operation {
        case .local: [.reply(operation, outcome)]
        case .forwarded(let from, let id): [.send(.quorum(.coordinated(id: id, outcome: outcome)), to: from)]
        }
    }

    /// Records a forwarded operation; `false` if it was seen before (a duplicate).
    private mutating func rememberForward(_ operation: OperationID) -> Bool {
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

    private mutating func takeMessageID() -> UInt64 {
        defer { nextMessageID += 1 }
        return nextMessageID
    }

    private mutating func forgetRequests(of operation: OperationID) {
        for id in requestIDs.removeValue(forKey: operation) ?? [] { requests[id] = nil }
    }

    /// Records a request in flight to `replica` for `operation` and returns its id.
    private mutating func request(for operation: OperationID, to replica: NodeID) -> UInt64 {
        let id = takeMessageID()
        requests[id] = (operation, replica)
        requestIDs[operation, default: []].append(id)
        return id
    }

    /// The operation a reply belongs to, if `id` is a request in flight to `replica`.
    private mutating func takeRequest(_ id: UInt64, answeredBy replica: NodeID) -> OperationID? {
        guard let request = requests[id], request.replica == replica else { return nil }
        requests[id] = nil
        return request.operation
    }
}

/// The state of one write this node coordinates.
private struct WriteRound: Sendable {
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
private struct ReadRound: Sendable {
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
