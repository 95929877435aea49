import KVCluster
import KVCore
import NIOCore

/// The shell of ``NodeCore``: every input of the maintenance machines goes through
/// ``runCore(_:)``, and every action comes back through one dispatch. The machines'
/// own shells (`HintHandoff.swift`, `AntiEntropyExchanges.swift`,
/// `TombstoneReaping.swift`, `TransferReceiving.swift`, `PartitionReleasing.swift`) carry
/// out their storage work and report its completion as an input.
extension ClusterNode {
    /// Feeds one input to the core and carries out what it asks. The view is built before
    /// the core's lock is taken, and the actions are carried out after it is released: a
    /// send can fail at once, which is another input.
    func runCore(_ input: NodeCore.Input) {
        let view = coreView(for: input.procedure)
        let actions = core.withLockedValue { $0.handle(input, view: view) }
        // A stopping node does no more maintenance, but messages for its other parts
        // still reach them (they answer or fail their waiters).
        let stopped = isStopped
        for action in actions {
            switch action {
            case .hints(let action): if !stopped { performHints(action) }
            case .antiEntropy(let action): if !stopped { performAntiEntropy(action) }
            case .reaper(let action): if !stopped { performReaping(action) }
            case .transfers(let action): if !stopped { performTransfers(action) }
            case .release(let action): if !stopped { performRelease(action) }
            case .deliver(let message, let sender): deliver(message, from: sender)
            case .undeliverable(let message, let target): undeliverable(message, to: target)
            }
        }
    }

    /// The view `procedure` needs now.
    private func coreView(for procedure: NodeCore.Procedure?) -> NodeCore.View {
        switch procedure {
        case .hints?: .hints(hintView())
        case .antiEntropy?: .antiEntropy(antiEntropyView())
        case .reaper?: .reaper(reaperView())
        case .transfers?: .transfers(transferView())
        case .release?: .release(releaseView())
        case nil: .none
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
