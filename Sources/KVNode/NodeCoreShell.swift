import KVCluster
import KVCore
import NIOCore

/// What only the core's event loop touches: the machines, and the timers they and the
/// clients' operations wait on.
struct CoreLoopState: Sendable {
    /// The coordinator, SWIM, hint delivery, anti-entropy exchanges, tombstone reaping,
    /// transfers, releases and gossip, composed.
    var core: NodeCore
    /// The machines' timers.
    var timers: [NodeCore.Timer: Scheduled<Void>] = [:]
    /// Operation timers by deadline. One sweep every ``ClusterNode/timerResolution`` fires
    /// the expired ones: scheduling a task per operation would wake the event loop twice
    /// for every request (start and cancel).
    var operationTimers: [OperationID: NIODeadline] = [:]
    /// The coordinator's placement revision whose ``LocalReadRule`` is published.
    var publishedPlacementRevision: UInt64?

    /// The coordinator's rule for local reads if its placement changed since the rule
    /// last published, else `nil`.
    mutating func takeChangedLocalReads() -> LocalReadRule? {
        let revision = core.coordinator.placementRevision
        guard revision != publishedPlacementRevision else { return nil }
        publishedPlacementRevision = revision
        return core.coordinator.localReads
    }
}

/// The shell of ``NodeCore``: every input of the coordinator, SWIM, the maintenance
/// machines and gossip goes through ``runCore(_:)``, and every action comes back through
/// one dispatch. The machines' own shells (`ClusterNode.swift` for the coordinator,
/// `HintHandoff.swift`, `AntiEntropyExchanges.swift`, `TombstoneReaping.swift`,
/// `TransferReceiving.swift`, `PartitionReleasing.swift`, `MetadataExchange.swift`) carry
/// out their storage work and report its completion as an input.
///
/// One event loop, the node's `eventLoop`, owns the core: an input from another thread
/// (a client's request on another loop, a peer's message, a storage completion on the
/// thread pool) is carried to it, and is taken in the order it was handed over. So the
/// machines need no lock, and every view of the node's other state is read when the input
/// is taken, never from a moment before.
extension ClusterNode {
    /// Feeds one input to the core (on its event loop) and carries out what it asks.
    func runCore(_ input: NodeCore.Input) {
        if eventLoop.inEventLoop {
            stepCore(input)
        } else {
            eventLoop.execute { [self] in stepCore(input) }
        }
    }

    /// Runs `body` with the core on its event loop, from any thread, for status reads.
    func readCore<Value: Sendable>(_ body: @escaping @Sendable (NodeCore) -> Value) async throws(KVError)
        -> Value
    {
        if eventLoop.inEventLoop { return body(coreLoop.value.core) }
        do {
            return try await eventLoop.submit { [self] in body(coreLoop.value.core) }.get()
        } catch {
            throw KVError(.unavailable, "the node is shutting down")
        }
    }

    /// One input, on the core's event loop. The actions are carried out after the step:
    /// a send can fail at once, or a read be answered from memory, which is another input
    /// taken right there.
    private func stepCore(_ input: NodeCore.Input) {
        let view = input.procedure.map(coreView(for:)) ?? .none
        let actions = coreLoop.value.core.handle(input, view: view)
        if let rule = coreLoop.value.takeChangedLocalReads() {
            // Before the step's actions: none of a new placement's may run while an
            // older rule still lets front ends read by themselves.
            localReadRule.withLockedValue { $0 = rule }
        }
        // A stopping node does no more maintenance, but its coordinator and other parts
        // still answer or fail their waiters. Asked only when a maintenance action comes:
        // the coordinator's steps are the hot path.
        var maintaining: Bool?
        func maintains() -> Bool {
            if maintaining == nil { maintaining = !isStopped }
            return maintaining == true
        }
        var gossip: [MetadataGossip.Action] = []
        defer { performGossip(gossip) }
        for action in actions {
            switch action {
            case .coordinator(let action): performCoordinator(action)
            case .membership(let action): performMembership(action)
            case .gossip(let action): gossip.append(action)
            case .hints(let action): if maintains() { performHints(action) }
            case .antiEntropy(let action): if maintains() { performAntiEntropy(action) }
            case .reaper(let action): if maintains() { performReaping(action) }
            case .transfers(let action): if maintains() { performTransfers(action) }
            case .release(let action): if maintains() { performRelease(action) }
            case .deliver(let message, let sender): deliver(message, from: sender)
            case .undeliverable(let message, let target): undeliverable(message, to: target)
            }
        }
    }

    /// The view `procedure` needs now.
    private func coreView(for procedure: NodeCore.Procedure) -> NodeCore.View {
        switch procedure {
        case .membership: .membership(nowMilliseconds: Self.monotonicMilliseconds(), gossipView())
        case .gossip: .gossip(gossipView())
        case .hints: .hints(hintView())
        case .antiEntropy: .antiEntropy(antiEntropyView())
        case .reaper: .reaper(reaperView())
        case .transfers: .transfers(transferView())
        case .release: .release(releaseView())
        }
    }

    /// Fires `timer` into the core after `milliseconds`, unless cancelled first. On the
    /// core's event loop, like the timer's firing.
    func startCoreTimer(_ timer: NodeCore.Timer, afterMilliseconds milliseconds: Int64) {
        let scheduled = eventLoop.scheduleTask(in: .milliseconds(milliseconds)) { [self] in
            coreLoop.value.timers[timer] = nil
            stepCore(.timerFired(timer))
        }
        coreLoop.value.timers[timer] = scheduled
    }

    /// Cancels `timer`, if it has not fired. On the core's event loop.
    func cancelCoreTimer(_ timer: NodeCore.Timer) {
        coreLoop.value.timers.removeValue(forKey: timer)?.cancel()
    }

    /// Fires every operation timer whose deadline passed, and fails the writes applied
    /// alone that the drain has not answered within the request timeout. On the core's
    /// event loop.
    func fireExpiredOperationTimers() {
        let now = NIODeadline.now()
        let due = coreLoop.value.operationTimers.filter { $0.value <= now }.map(\.key)
        for operation in due {
            coreLoop.value.operationTimers[operation] = nil
            stepCore(.operationTimerFired(operation))
        }
        let expired = state.withLockedValue { state -> [@Sendable (StorageOutcome) -> Void] in
            guard !state.localWriteDeadlines.isEmpty else { return [] }
            return state.localWriteDeadlines.filter { $0.value <= now }.compactMap { id, _ in
                state.localWriteDeadlines[id] = nil
                return state.localWrites.removeValue(forKey: id)
            }
        }
        guard !expired.isEmpty else { return }
        // What the coordinator answers a write none of whose replicas acknowledged in time.
        let timedOut = KVError(
            .writeIndeterminate,
            "0 of 1 needed replicas acknowledged within \(settings.requestTimeoutMilliseconds) ms; the write may or may not become visible"
        )
        for finish in expired { finish(.failed(timedOut)) }
    }
}
