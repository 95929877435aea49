import KVCluster
import KVCore
import NIOCore

/// The shell of ``NodeCore``: every input of the coordinator, SWIM and the maintenance
/// machines goes through ``runCore(_:)``, and every action comes back through one
/// dispatch. The machines' own shells (`ClusterNode.swift` for the coordinator,
/// `HintHandoff.swift`, `AntiEntropyExchanges.swift`,
/// `TombstoneReaping.swift`, `TransferReceiving.swift`, `PartitionReleasing.swift`) carry
/// out their storage work and report its completion as an input.
extension ClusterNode {
    /// Feeds one input to the core and carries out what it asks. The view is built before
    /// the core's lock is taken, and the actions are carried out after it is released: a
    /// send can fail at once, which is another input.
    func runCore(_ input: NodeCore.Input) {
        let view = input.procedure.map(coreView(for:)) ?? .none
        let actions = core.withLockedValue { $0.handle(input, view: view) }
        // A stopping node does no more maintenance, but its coordinator and other parts
        // still answer or fail their waiters. Asked only when a maintenance action comes:
        // the coordinator's steps are the hot path.
        var maintaining: Bool?
        func maintains() -> Bool {
            if maintaining == nil { maintaining = !isStopped }
            return maintaining == true
        }
        for action in actions {
            switch action {
            case .coordinator(let action): performCoordinator(action)
            case .membership(let action): performMembership(action)
            case .probeDigest(let digest, let sender): probeArrived(digest: digest, from: sender)
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
        case .membership: .membership(nowMilliseconds: Self.monotonicMilliseconds())
        case .hints: .hints(hintView())
        case .antiEntropy: .antiEntropy(antiEntropyView())
        case .reaper: .reaper(reaperView())
        case .transfers: .transfers(transferView())
        case .release: .release(releaseView())
        }
    }

    /// Fires `timer` into the core after `milliseconds`, unless cancelled first.
    func startCoreTimer(_ timer: NodeCore.Timer, afterMilliseconds milliseconds: Int64) {
        let scheduled = eventLoop.scheduleTask(in: .milliseconds(milliseconds)) { [self] in
            coreTimers.withLockedValue { $0[timer] = nil }
            runCore(.timerFired(timer))
        }
        coreTimers.withLockedValue { $0[timer] = scheduled }
    }

    /// Cancels `timer`, if it has not fired.
    func cancelCoreTimer(_ timer: NodeCore.Timer) {
        coreTimers.withLockedValue { $0.removeValue(forKey: timer) }?.cancel()
    }
}
