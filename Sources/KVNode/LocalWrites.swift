import KVCluster
import KVCore
import NIOCore

/// Puts started where they arrive: a front end's event loop starts a put and gets its
/// outcome through a callback, without a task. A put the coordinator would carry out on
/// this node's replica alone (``LocalReadRule/writesAlone(_:_:)``: `n=1` on the node
/// holding the partition, as on a node of its own) goes straight to the write drain
/// with the client writes: it skips the hop to the core's event loop and back and the
/// coordinator's bookkeeping, and stores and answers exactly what the coordinator would
/// (the drain applies the same ``StorageCommand/coordinate(_:_:)`` under the same row
/// locks and group commit, so the write is synced before the callback). Any other put
/// goes through the coordinator as ``ClusterNode/put(_:value:options:)`` does.
///
/// A put applied alone answers `write.indeterminate` when the drain has not answered it
/// within the request timeout (the coordinator's timers are swept every 20 ms, and so is
/// this deadline) or when the node shuts down with it queued, as the coordinator's
/// writes do; the drain may still apply it.
extension ClusterNode {
    /// Starts a put of `key` and calls `completion` once with its outcome, on a storage
    /// thread or the core's event loop, possibly before this returns; `false` (and no
    /// call) when the request is invalid, which ``put(_:value:options:)`` then reports.
    public func startPut(
        _ key: RowKey, value: RowValue, options: WriteOptions,
        completion: @escaping @Sendable (PutOutcome) -> Void
    ) -> Bool {
        let rule = localReadRule.withLockedValue { $0 }
        let started = NIODeadline.now()
        let sibling = Sibling(value: value, timestampMilliseconds: NodeStorage.wallClockMilliseconds())
        guard (try? NodeStorage.validate(value, maximumBytes: local.settings.maximumInlineValueBytes)) != nil,
            (try? options.validateRequestID()) != nil,
            let (layout, row, replicaKey, quorum) = try? resolveInLayout(key, options.quorum),
            let proposed = try? proposedWrite(of: key, row, sibling, options, increment: nil)
        else { return false }
        let identity = row.identity
        let local = local
        let outcome: @Sendable (StorageOutcome) -> Void = { stored in
            switch stored {
            case .object(let object):
                completion(PutOutcome(stored: { local.writeResult(object, identity: identity) }))
            case .failed(let error):
                completion(PutOutcome(failed: error))
            }
        }
        countRequest(partition: Int(replicaKey.partition.rawValue), in: layout)
        if let rule, rule.writesAlone(replicaKey, quorum),
            applyAlone(.coordinate(replicaKey, proposed), under: rule, started: started, outcome)
        {
            return true
        }
        startOperation(
            { .write($0, key: replicaKey, proposed, quorum: quorum) },
            completion: { [metrics] result in
                switch result {
                case .written(let object), .read(let object): outcome(.object(object))
                case .failed(let error): outcome(.failed(error))
                }
                metrics.recordOperation(
                    "write", outcome: result, nanoseconds: (NIODeadline.now() - started).nanoseconds)
            })
        return true
    }

    /// Queues `command` on the write drain with the client writes, if `rule` is still
    /// the current one, and calls `outcome` with what the drain did; `false` (and no
    /// call) when the rule changed or the node stopped.
    ///
    /// It queues under the rule's lock: the core publishes a new rule before it carries
    /// out any action of the new placement, so the write is queued before all of them,
    /// as the coordinator's write that started under the old placement would have been.
    private func applyAlone(
        _ command: StorageCommand, under rule: LocalReadRule, started: NIODeadline,
        _ outcome: @escaping @Sendable (StorageOutcome) -> Void
    ) -> Bool {
        let id = takeID()
        let finish: @Sendable (StorageOutcome) -> Void = { [metrics] stored in
            outcome(stored)
            let operationOutcome: OperationOutcome
            switch stored {
            case .object(let object): operationOutcome = .written(object)
            case .failed(let error): operationOutcome = .failed(error)
            }
            metrics.recordOperation(
                "write", outcome: operationOutcome, nanoseconds: (NIODeadline.now() - started).nanoseconds)
        }
        let startDrain: Bool? = localReadRule.withLockedValue { current in
            guard current?.revision == rule.revision else { return nil }
            let registered = state.withLockedValue { state in
                guard !state.stopped else { return false }
                state.localWrites[id] = finish
                state.localWriteDeadlines[id] = started + .milliseconds(settings.requestTimeoutMilliseconds)
                return true
            }
            guard registered else { return nil }
            return writeQueue.withLockedValue { queue in
                queue.addClientWrite(.maintenance(id: id), command)
                return queue.startsDrain()
            }
        }
        guard let startDrain else { return false }
        metrics.writesAppliedLocally.add(1, ordering: .relaxed)
        if startDrain { startDraining() }
        return true
    }
}
