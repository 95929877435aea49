import KVCluster
import KVCore
import NIOCore

/// Writes applied where they arrive: a write that the coordinator would carry out on
/// this node's replica alone (``LocalReadRule/writesAlone(_:_:)``: `n=1` on the node
/// holding the partition, as on a node of its own) goes straight to the write drain
/// with the client writes, and its outcome is handed to a callback on the drain's
/// thread. It skips a task, the hop to the core's event loop and back, and the
/// coordinator's bookkeeping, and stores and answers exactly what the coordinator would:
/// the drain applies the same ``StorageCommand/coordinate(_:_:)`` under the same row
/// locks and group commit, so the write is synced before `completion` is called.
///
/// Two things differ from the coordinator's write, neither in what is stored: the
/// coordinator's request timeout does not apply (the caller waits for the drain however
/// long it takes, as a write through the coordinator waits for its own replica before
/// anything else), and a node that shuts down with the write queued answers
/// `write.indeterminate`, as it does for every operation in flight.
extension ClusterNode {
    /// Starts a put of `key` with its table's quorum if this node can apply it by
    /// itself, and then calls `completion` once with its outcome, on the drain's thread;
    /// `false` (and no call) sends it through ``put(_:value:options:)`` instead, which
    /// gives every error.
    public func immediatePut(
        _ key: RowKey, value: RowValue, options: WriteOptions,
        completion: @escaping @Sendable (ImmediatePutOutcome) -> Void
    ) -> Bool {
        guard let rule = localReadRule.withLockedValue({ $0 }) else { return false }
        let started = NIODeadline.now()
        let sibling = Sibling(value: value, timestampMilliseconds: NodeStorage.wallClockMilliseconds())
        guard (try? NodeStorage.validate(value, maximumBytes: local.settings.maximumInlineValueBytes)) != nil,
            (try? options.validateRequestID()) != nil,
            let (layout, row, replicaKey, quorum) = try? resolveInLayout(key, options.quorum),
            rule.writesAlone(replicaKey, quorum),
            let proposed = try? proposedWrite(of: key, row, sibling, options, increment: nil)
        else { return false }
        let id = takeID()
        let identity = row.identity
        let finish: @Sendable (StorageOutcome) -> Void = { [self] outcome in
            let operationOutcome: OperationOutcome
            switch outcome {
            case .object(let object):
                operationOutcome = .written(object)
                completion(
                    ImmediatePutOutcome(stored: { [local] in local.writeResult(object, identity: identity) }))
            case .failed(let error):
                operationOutcome = .failed(error)
                completion(ImmediatePutOutcome(failed: error))
            }
            metrics.recordOperation(
                "write", outcome: operationOutcome, nanoseconds: (NIODeadline.now() - started).nanoseconds)
        }
        // Queued under the rule's lock, and only if the rule is still the current one:
        // the core publishes a new rule before it carries out any action of the new
        // placement, so the write is queued before all of them, as the coordinator's
        // write that started under the old placement would have been.
        let startDrain: Bool? = localReadRule.withLockedValue { current in
            guard current?.revision == rule.revision else { return nil }
            let registered = state.withLockedValue { state in
                guard !state.stopped else { return false }
                state.localWrites[id] = finish
                return true
            }
            guard registered else { return nil }
            return writeQueue.withLockedValue { queue in
                queue.addClientWrite(.maintenance(id: id), .coordinate(replicaKey, proposed))
                return queue.startsDrain()
            }
        }
        guard let startDrain else { return false }
        countRequest(partition: Int(replicaKey.partition.rawValue), in: layout)
        metrics.writesAppliedLocally.add(1, ordering: .relaxed)
        if startDrain { startDraining() }
        return true
    }
}
