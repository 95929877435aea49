import KVCore

/// A node's coordinator, failure detection and maintenance procedures composed behind one
/// input type and one action type: the ``Coordinator`` (clients' reads and writes, and the
/// replica side of other coordinators' requests), SWIM (``Membership``), hint delivery,
/// anti-entropy exchanges, tombstone reaping, partition transfers, partition releases and
/// metadata gossip (``MetadataGossip``). The node and the simulator each hold one
/// `NodeCore` per node, feed it every input and carry out its actions; neither routes a
/// peer's message to a machine itself.
///
/// ## Terms
///
/// - **Procedure**: one of the composed machines. Each keeps its own message ids, timers
///   and settings; ``Timer`` names a timer by its procedure and the machine's id (the
///   coordinator's timers are named by their ``OperationID``).
/// - **View**: what a machine reads of the node when an input arrives (its layout, which
///   peers are reachable, the clock; for SWIM the clock and the metadata's digest). The
///   shell builds the one view an input needs (``Input/procedure``) when the core takes
///   the input, so the core never reads the node's other state.
/// - **Delivered**: a message none of the machines takes (a peer's metadata, a scan, or a
///   request this node serves from its storage) goes back to the shell as
///   ``Action/deliver(_:from:)``. The shell merges and stores a peer's metadata, and
///   reports the outcome to gossip as an ``Input/gossip(_:)`` completion.
///
/// ## Routing
///
/// Quorum messages and hint handoffs go to the coordinator (a handoff is stored like a
/// replicated write), probes to SWIM and the metadata digest each carries to gossip.
/// Answers go to the machine that asked. Releases ask with anti-entropy's requests, so an
/// anti-entropy answer goes to ``PartitionRelease`` when it waits for that id and to
/// ``AntiEntropyExchange`` otherwise (each machine's ids are its own; a stray answer is
/// ignored by both). A failed anti-entropy request is reported to both machines: only the
/// one that sent it knows its id.
public struct NodeCore: Sendable {
    /// One of the composed machines.
    public enum Procedure: Hashable, Sendable {
        case membership, hints, antiEntropy, reaper, transfers, release, gossip
    }

    /// A machine's timer.
    public struct Timer: Hashable, Sendable {
        /// The machine that started it.
        public var procedure: Procedure
        /// The machine's id of it.
        public var id: UInt64

        /// Names a timer.
        public init(_ procedure: Procedure, id: UInt64) {
            self.procedure = procedure
            self.id = id
        }
    }

    /// The view an input needs, built by the shell (see ``Input/procedure``).
    public enum View: Sendable {
        /// The input needs no view.
        case none
        /// SWIM's clock, in milliseconds, and the metadata a probe's digest is checked
        /// against (`nil` where no metadata is kept: the simulator's runs without layout
        /// changes gossip nothing).
        case membership(nowMilliseconds: Int64, GossipView?)
        /// What hint delivery sees.
        case hints(HintDeliveryView)
        /// What anti-entropy exchanges see.
        case antiEntropy(AntiEntropyView)
        /// What the reaper sees.
        case reaper(ReaperView)
        /// What the transfers see.
        case transfers(TransferView)
        /// What the releases see.
        case release(ReleaseView)
        /// What gossip sees.
        case gossip(GossipView)
    }

    /// What gossip reads of the node: its copy of the metadata and that copy's digest
    /// (the one its probes carry).
    public struct GossipView: Sendable {
        /// This node's copy.
        public var metadata: ClusterMetadata
        /// Its digest.
        public var digest: UInt64

        /// Creates a view.
        public init(metadata: ClusterMetadata, digest: UInt64) {
            self.metadata = metadata
            self.digest = digest
        }
    }

    /// What the shell reports of the metadata it stores.
    public enum GossipCompletion: Hashable, Sendable {
        /// A peer's copy `theirs` (pushed with `id`, if it wants an acknowledgement) was
        /// merged and stored, so this node's copy is now `current`, or it was refused.
        case adopted(
            theirs: ClusterMetadata, id: UInt64?, from: NodeID, refusal: String?, current: ClusterMetadata)
        /// This node's copy changed from `from` to `to`, by `cause`, and is stored.
        case changed(from: ClusterMetadata, to: ClusterMetadata, cause: MetadataGossip.ChangeCause)
    }

    /// What hint delivery's storage reports.
    public enum HintCompletion: Hashable, Sendable {
        /// ``HintDelivery/Action/readHints(target:limit:)`` read these.
        case read(target: NodeID, [StoredHint])
        /// A rerouted hint's merge finished.
        case reconciled(id: UInt64, StorageOutcome)
        /// A ``HintDelivery/Action/remove(_:)`` is durable.
        case removalStored(target: NodeID)
        /// A ``HintDelivery/Action/remove(_:)`` failed.
        case removalFailed(target: NodeID)
    }

    /// What an anti-entropy exchange's storage reports.
    public enum ExchangeCompletion: Hashable, Sendable {
        /// ``AntiEntropyExchange/Action/readTree(partition:)`` read this (`nil`: not built yet).
        case treeRead(MerkleTree?)
        /// A listing of this node's key hashes (`nil`: it failed).
        case listed(id: UInt64, KeyListing?)
        /// A row load finished (`nil` key: its table is unknown here).
        case loaded(id: UInt64, ReplicaKey?, StorageOutcome)
        /// A repair's merge finished.
        case merged(id: UInt64, StorageOutcome)
    }

    /// What the reaper's storage reports.
    public enum ReapCompletion: Hashable, Sendable {
        /// ``TombstoneReaper/Action/readCandidates(partition:limit:minimumAge:start:)`` read these.
        case candidatesRead([ReapCandidate])
        /// A reap finished.
        case reaped(id: UInt64, StorageOutcome)
    }

    /// What the transfers' storage and metadata report.
    public enum TransferCompletion: Hashable, Sendable {
        /// A stored cursor was read (`nil`: none).
        case cursorRead(PartitionID, layoutVersion: UInt64, TransferCursor?)
        /// A page of rows was merged (`false`: pull it again).
        case stored(id: UInt64, ok: Bool)
        /// A cursor was saved.
        case cursorSaved(id: UInt64, ok: Bool)
        /// A batch of receipts was recorded in the metadata (`false`: it was not).
        case receiptsRecorded([LayoutPartition], ok: Bool)
    }

    /// What the releases' storage and metadata report.
    public enum ReleaseCompletion: Hashable, Sendable {
        /// A listing of this node's rows (`nil`: it failed).
        case listed(id: UInt64, KeyListing?)
        /// A row load finished.
        case loaded(id: UInt64, PartitionRelease.LoadedRow)
        /// A batch of releases was recorded in the metadata (`false`: it was not).
        case recorded([LayoutPartition], ok: Bool)
        /// A copy was deleted (`false`: it is kept, for now).
        case dropped(PartitionID, ok: Bool)
    }

    /// Everything that happens to the core.
    public enum Input: Sendable {
        /// A client's read, coordinated here.
        case read(OperationID, key: ReplicaKey, quorum: Quorum)
        /// A client's write, coordinated here.
        case write(OperationID, key: ReplicaKey, ProposedWrite, quorum: Quorum)
        /// A coordinator's storage command finished.
        case storageCompleted(StorageTicket, StorageOutcome)
        /// A coordinator's operation timer fired.
        case operationTimerFired(OperationID)
        /// Whether a peer counts as up changed (connected, and alive to SWIM), and
        /// whether one that does not is connected but only suspected by SWIM.
        case reachabilityChanged(NodeID, isUp: Bool, isSuspected: Bool)
        /// A new layout, or a layout change's progress, takes effect for operations
        /// that start from now on.
        case placementChanged(Placement)
        /// A member to probe from now on (it joined, or a lagging copy had it departed).
        case memberAdded(NodeID)
        /// A member no longer to probe (it left).
        case memberRemoved(NodeID)
        /// The shell's periodic tick of one procedure.
        case tick(Procedure)
        /// Start an anti-entropy exchange of `partition` with `peer` now.
        case startExchange(PartitionID, with: NodeID)
        /// A peer's message arrived.
        case received(ReplicaMessage, from: NodeID)
        /// A message could not be sent.
        case sendFailed(ReplicaMessage, to: NodeID)
        /// A timer fired.
        case timerFired(Timer)
        /// Hint delivery's storage work finished.
        case hints(HintCompletion)
        /// An exchange's storage work finished.
        case antiEntropy(ExchangeCompletion)
        /// The reaper's storage work finished.
        case reaper(ReapCompletion)
        /// The transfers' storage or metadata work finished.
        case transfers(TransferCompletion)
        /// The releases' storage or metadata work finished.
        case release(ReleaseCompletion)
        /// The shell stored a metadata change.
        case gossip(GossipCompletion)

        /// The procedure whose view this input needs, or `nil` when it needs none.
        public var procedure: Procedure? {
            switch self {
            case .tick(let procedure): procedure
            case .startExchange: .antiEntropy
            case .received(.membership, _): .membership
            case .received(.hints(.handedOff), _): .hints
            case .received(.transfers(.transferRows), _): .transfers
            case .sendFailed(.hints(.handoff), _): .hints
            case .sendFailed(.transfers(.transferPull), _): .transfers
            case .received, .sendFailed: nil
            case .timerFired(let timer):
                timer.procedure == .hints || timer.procedure == .transfers ? timer.procedure : nil
            case .hints(.removalStored), .hints(.removalFailed): nil
            case .hints: .hints
            case .reaper(.candidatesRead): .reaper
            case .transfers: .transfers
            case .antiEntropy, .reaper, .release, .gossip: nil
            case .read, .write, .storageCompleted, .operationTimerFired, .reachabilityChanged,
                .placementChanged, .memberAdded, .memberRemoved:
                nil
            }
        }
    }

    /// What the shell carries out: each machine's own actions, and messages for the
    /// node's other parts.
    public enum Action: Hashable, Sendable {
        /// The coordinator's.
        case coordinator(Coordinator.Action)
        /// SWIM's.
        case membership(Membership.Action)
        /// Hint delivery's.
        case hints(HintDelivery.Action)
        /// An exchange's.
        case antiEntropy(AntiEntropyExchange.Action)
        /// The reaper's.
        case reaper(TombstoneReaper.Action)
        /// The transfers'.
        case transfers(PartitionTransfers.Action)
        /// The releases'.
        case release(PartitionRelease.Action)
        /// Gossip's.
        case gossip(MetadataGossip.Action)
        /// A message none of the machines takes, for the shell's other parts.
        case deliver(ReplicaMessage, from: NodeID)
        /// A message of the shell's other parts could not be sent.
        case undeliverable(ReplicaMessage, to: NodeID)
    }

    /// Read and write coordination.
    public private(set) var coordinator: Coordinator
    /// SWIM failure detection.
    public private(set) var membership: Membership
    /// Hinted handoff.
    public private(set) var hintDelivery: HintDelivery
    /// Anti-entropy exchanges.
    public private(set) var exchanges: AntiEntropyExchange
    /// Tombstone reaping.
    public private(set) var reaper: TombstoneReaper
    /// The transfers this node receives.
    public private(set) var transfers: PartitionTransfers
    /// Releases and drops of copies this node no longer holds.
    public private(set) var release: PartitionRelease
    /// How metadata spreads.
    public private(set) var gossip: MetadataGossip
    /// Whether anti-entropy runs (the index can be turned off); without it, exchanges
    /// neither start nor take answers.
    public let exchangesEnabled: Bool

    /// Composes the machines.
    public init(
        coordinator: Coordinator, membership: Membership, hintDelivery: HintDelivery,
        exchanges: AntiEntropyExchange,
        reaper: TombstoneReaper,
        transfers: PartitionTransfers, release: PartitionRelease, gossip: MetadataGossip,
        exchangesEnabled: Bool = true
    ) {
        self.coordinator = coordinator
        self.membership = membership
        self.hintDelivery = hintDelivery
        self.exchanges = exchanges
        self.reaper = reaper
        self.transfers = transfers
        self.release = release
        self.gossip = gossip
        self.exchangesEnabled = exchangesEnabled
    }

    /// Feeds one input to the machine it belongs to. `view` is the one
    /// ``Input/procedure`` names (``View/none`` when it names none); a shell that passes
    /// another has a bug, which debug builds stop at and release builds ignore the input of.
    public mutating func handle(_ input: Input, view: View) -> [Action] {
        switch input {
        case .read(let operation, let key, let quorum):
            return coordinator.read(operation, key: key, quorum: quorum).map(Action.coordinator)
        case .write(let operation, let key, let write, let quorum):
            return coordinator.write(operation, key: key, write, quorum: quorum).map(Action.coordinator)
        case .storageCompleted(let ticket, let outcome):
            return coordinator.storageCompleted(ticket, outcome).map(Action.coordinator)
        case .operationTimerFired(let operation):
            return coordinator.timerFired(operation).map(Action.coordinator)
        case .reachabilityChanged(let node, let isUp, let isSuspected):
            coordinator.reachabilityChanged(node, isUp: isUp, isSuspected: isSuspected)
            return []
        case .placementChanged(let placement):
            coordinator.placementChanged(placement)
            return []
        case .memberAdded(let member):
            membership.add(member)
            return []
        case .memberRemoved(let member):
            membership.remove(member)
            return []
        case .tick(.membership):
            guard let now = view.clock else { return mismatched(input) }
            return membership.tick(now: now).map(Action.membership)
        case .tick(.hints):
            guard let view = view.hints else { return mismatched(input) }
            return hintDelivery.tick(view).map(Action.hints)
        case .tick(.antiEntropy):
            guard let view = view.antiEntropy else { return mismatched(input) }
            return exchangesEnabled ? exchanges.tick(view).map(Action.antiEntropy) : []
        case .tick(.reaper):
            guard let view = view.reaper else { return mismatched(input) }
            return reaper.tick(view).map(Action.reaper)
        case .tick(.transfers):
            guard let view = view.transfers else { return mismatched(input) }
            return transfers.tick(view).map(Action.transfers)
        case .tick(.release):
            guard let view = view.release else { return mismatched(input) }
            return release.tick(view).map(Action.release)
        case .tick(.gossip):
            guard let view = view.gossip else { return mismatched(input) }
            return gossip.tick(view.metadata).map(Action.gossip)
        case .startExchange(let partition, let peer):
            guard let view = view.antiEntropy else { return mismatched(input) }
            return exchangesEnabled
                ? exchanges.start(partition, with: peer, view: view).map(Action.antiEntropy) : []
        case .received(let message, let sender):
            return received(message, from: sender, view: view, input: input)
        case .sendFailed(let message, let target):
            return sendFailed(message, to: target, view: view, input: input)
        case .timerFired(let timer):
            return timerFired(timer, view: view, input: input)
        case .hints(.removalStored(let target)):
            hintDelivery.removalStored(target: target)
            return []
        case .hints(.removalFailed(let target)):
            hintDelivery.removalFailed(target: target)
            return []
        case .hints(.read(let target, let hints)):
            guard let view = view.hints else { return mismatched(input) }
            return hintDelivery.hintsRead(target: target, hints, view: view).map(Action.hints)
        case .hints(.reconciled(let id, let outcome)):
            guard let view = view.hints else { return mismatched(input) }
            return hintDelivery.storageCompleted(id: id, outcome, view: view).map(Action.hints)
        case .antiEntropy(let completion):
            guard exchangesEnabled else { return [] }
            return exchangeCompleted(completion).map(Action.antiEntropy)
        case .reaper(.candidatesRead(let candidates)):
            guard let view = view.reaper else { return mismatched(input) }
            return reaper.candidatesRead(candidates, view: view).map(Action.reaper)
        case .reaper(.reaped(let id, let outcome)):
            return reaper.storageCompleted(id: id, outcome).map(Action.reaper)
        case .transfers(let completion):
            guard let view = view.transfers else { return mismatched(input) }
            return transfersCompleted(completion, view: view).map(Action.transfers)
        case .release(let completion):
            return releaseCompleted(completion).map(Action.release)
        case .gossip(.adopted(let theirs, let id, let sender, let refusal, let current)):
            return gossip.pushHandled(
                theirs: theirs, id: id, from: sender, refusal: refusal, current: current
            )
            .map(Action.gossip)
        case .gossip(.changed(let before, let after, let cause)):
            return gossip.changed(from: before, to: after, cause: cause).map(Action.gossip)
        }
    }

    private func mismatched(_ input: Input) -> [Action] {
        assertionFailure("the shell passed the wrong view for \(input)")
        return []
    }

    // MARK: - Routing

    private mutating func received(_ message: ReplicaMessage, from sender: NodeID, view: View, input: Input)
        -> [Action]
    {
        switch message {
        case .hints(.handedOff):
            guard case .hints(let answer) = message else { return [] }
            guard let view = view.hints else { return mismatched(input) }
            return hintDelivery.received(answer, from: sender, view: view).map(Action.hints)
        case .antiEntropy(.treeHashes(let id, _, _)), .antiEntropy(.keyHashes(let id, _, _)),
            .antiEntropy(.reconciled(let id, _)):
            guard case .antiEntropy(let answer) = message else { return [] }
            if release.isWaiting(for: id) {
                return release.received(answer, from: sender).map(Action.release)
            }
            return exchangesEnabled ? exchanges.received(answer, from: sender).map(Action.antiEntropy) : []
        case .transfers(.transferRows):
            guard case .transfers(let answer) = message else { return [] }
            guard let view = view.transfers else { return mismatched(input) }
            return transfers.received(answer, from: sender, view: view).map(Action.transfers)
        case .reaping(.reapAnswer):
            guard case .reaping(let answer) = message else { return [] }
            return reaper.received(answer, from: sender).map(Action.reaper)
        case .quorum, .hints(.handoff):
            return coordinator.received(message, from: sender).map(Action.coordinator)
        case .membership(let probe, let digest):
            guard case .membership(let now, let known) = view else { return mismatched(input) }
            let probed = membership.received(probe, from: sender, now: now).map(Action.membership)
            guard let known else { return probed }
            return probed
                + gossip.probeArrived(
                    digest: digest, from: sender, metadata: known.metadata, ownDigest: known.digest,
                    nowMilliseconds: now
                ).map(Action.gossip)
        case .metadata, .scans, .antiEntropy(.treeRequest), .antiEntropy(.keyHashesRequest),
            .antiEntropy(.reconcile), .reaping(.reapQuery), .reaping(.reap), .transfers(.transferPull),
            .transfers(.transfersRequest), .transfers(.transfersReport):
            return [.deliver(message, from: sender)]
        }
    }

    private mutating func sendFailed(_ message: ReplicaMessage, to target: NodeID, view: View, input: Input)
        -> [Action]
    {
        switch message {
        case .hints(.handoff):
            guard case .hints(let handoff) = message else { return [] }
            guard let view = view.hints else { return mismatched(input) }
            return hintDelivery.sendFailed(handoff, to: target, view: view).map(Action.hints)
        case .reaping(.reapQuery):
            guard case .reaping(let query) = message else { return [] }
            return reaper.sendFailed(query, to: target).map(Action.reaper)
        case .antiEntropy(.treeRequest), .antiEntropy(.keyHashesRequest), .antiEntropy(.reconcile):
            guard case .antiEntropy(let request) = message else { return [] }
            let released = release.sendFailed(request, to: target).map(Action.release)
            guard exchangesEnabled else { return released }
            return released + exchanges.sendFailed(request, to: target).map(Action.antiEntropy)
        case .transfers(.transferPull):
            guard case .transfers(let request) = message else { return [] }
            guard let view = view.transfers else { return mismatched(input) }
            return transfers.sendFailed(request, view: view).map(Action.transfers)
        case .quorum:
            return coordinator.sendFailed(message, to: target).map(Action.coordinator)
        case .membership, .metadata, .scans, .hints(.handedOff), .antiEntropy(.treeHashes),
            .antiEntropy(.keyHashes), .antiEntropy(.reconciled), .reaping(.reapAnswer), .reaping(.reap),
            .transfers(.transferRows), .transfers(.transfersRequest), .transfers(.transfersReport):
            return [.undeliverable(message, to: target)]
        }
    }

    private mutating func timerFired(_ timer: Timer, view: View, input: Input) -> [Action] {
        switch timer.procedure {
        case .membership:
            return []
        case .hints:
            guard let view = view.hints else { return mismatched(input) }
            return hintDelivery.timerFired(id: timer.id, view: view).map(Action.hints)
        case .antiEntropy:
            return exchangesEnabled ? exchanges.timerFired(id: timer.id).map(Action.antiEntropy) : []
        case .reaper:
            return reaper.timerFired(id: timer.id).map(Action.reaper)
        case .transfers:
            guard let view = view.transfers else { return mismatched(input) }
            return transfers.timerFired(id: timer.id, view: view).map(Action.transfers)
        case .release:
            return release.timerFired(id: timer.id).map(Action.release)
        case .gossip:
            return []
        }
    }

    // MARK: - Completions

    private mutating func exchangeCompleted(_ completion: ExchangeCompletion) -> [AntiEntropyExchange.Action]
    {
        switch completion {
        case .treeRead(let tree): exchanges.treeRead(tree)
        case .listed(let id, let listing): exchanges.listed(id: id, listing)
        case .loaded(let id, let key, let outcome): exchanges.loaded(id: id, key, outcome)
        case .merged(let id, let outcome): exchanges.storageCompleted(id: id, outcome)
        }
    }

    private mutating func transfersCompleted(_ completion: TransferCompletion, view: TransferView)
        -> [PartitionTransfers.Action]
    {
        switch completion {
        case .cursorRead(let partition, let version, let cursor):
            transfers.cursorRead(partition, layoutVersion: version, cursor, view: view)
        case .stored(let id, let ok): transfers.stored(id: id, ok: ok, view: view)
        case .cursorSaved(let id, let ok): transfers.cursorSaved(id: id, ok: ok, view: view)
        case .receiptsRecorded(let records, let ok): transfers.receiptsRecorded(records, ok: ok, view: view)
        }
    }

    private mutating func releaseCompleted(_ completion: ReleaseCompletion) -> [PartitionRelease.Action] {
        switch completion {
        case .listed(let id, let listing): release.listed(id: id, listing)
        case .loaded(let id, let row): release.loaded(id: id, row)
        case .recorded(let records, let ok): release.recorded(records, ok: ok)
        case .dropped(let partition, let ok): release.dropped(partition, ok: ok)
        }
    }
}

extension NodeCore.View {
    var clock: Int64? { if case .membership(let now, _) = self { now } else { nil } }
    var gossip: NodeCore.GossipView? { if case .gossip(let view) = self { view } else { nil } }
    var hints: HintDeliveryView? { if case .hints(let view) = self { view } else { nil } }
    var antiEntropy: AntiEntropyView? { if case .antiEntropy(let view) = self { view } else { nil } }
    var reaper: ReaperView? { if case .reaper(let view) = self { view } else { nil } }
    var transfers: TransferView? { if case .transfers(let view) = self { view } else { nil } }
    var release: ReleaseView? { if case .release(let view) = self { view } else { nil } }
}
