import KVCluster
import KVCore
import KVReplica
import NIOConcurrencyHelpers
import NIOCore

/// The coordinator's shell: a client operation becomes a core input whose outcome a
/// continuation waits for, and the coordinator's actions become sends, storage work
/// (reads answered from memory at once, others on the thread pool; writes through one
/// drain) and operation timers.
extension ClusterNode {
    func takeID() -> UInt64 {
        state.withLockedValue { state in
            defer { state.nextID &+= 1 }
            return state.nextID
        }
    }

    /// Carries out one of the coordinator's actions.
    func performCoordinator(_ action: Coordinator.Action) {
        switch action {
        case .send(let message, let target):
            if case .quorum(.repair) = message { metrics.readRepairsSent.add(1, ordering: .relaxed) }
            transport.send(message, to: target)
        case .storage(let ticket, .load(let key)):
            // A read the engine can answer from memory runs here and now: handing
            // it to the thread pool would cost two thread wake-ups for a lookup.
            if (try? store.checkGeneration(key)) != nil, let object = cachedObject(key.bytes) {
                runCore(.storageCompleted(ticket, .object(object)))
                return
            }
            local.threadPool.submit { [self] workState in
                let started = NIODeadline.now()
                let outcome: StorageOutcome =
                    workState == .active
                    ? store.load(key) : .failed(KVError(.unavailable, "the node is shutting down"))
                metrics.storageRead.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
                runCore(.storageCompleted(ticket, outcome))
            }
        case .storage(let ticket, let command):
            enqueueWrite(ticket, command)
        case .startTimer(let operation, let milliseconds):
            coreLoop.value.operationTimers[operation] = NIODeadline.now() + .milliseconds(milliseconds)
        case .cancelTimer(let operation):
            coreLoop.value.operationTimers[operation] = nil
        case .reply(let operation, let outcome):
            guard case .local(let id) = operation else { return }
            state.withLockedValue { $0.operations.removeValue(forKey: id) }?(outcome)
        }
    }

    /// The stored object of `dataKey` if the engine has it in memory (or knows it is
    /// absent without I/O), else `nil`.
    func cachedObject(_ dataKey: [UInt8]) -> StoredObject? {
        guard case .found(let bytes)? = try? local.engine.getIfCached(dataKey, in: .data) else { return nil }
        guard let bytes else { return StoredObject() }
        return try? StoredObjectCodec.decode(bytes)
    }

    /// Starts a client operation (`operation` names it in the metrics: read or write)
    /// and waits for its outcome.
    func operate(_ operation: String, _ start: @Sendable (OperationID) -> NodeCore.Input) async
        -> OperationOutcome
    {
        let started = NIODeadline.now()
        let outcome = await withCheckedContinuation { continuation in
            startOperation(start) { continuation.resume(returning: $0) }
        }
        metrics.recordOperation(
            operation, outcome: outcome, nanoseconds: (NIODeadline.now() - started).nanoseconds)
        return outcome
    }

    /// Starts a client operation and calls `completion` once with its outcome: on the
    /// core's event loop, from the shutdown when the node stops meanwhile, or before this
    /// returns when it has stopped already or the core answers at once. It must return
    /// quickly: the core's next step waits for it.
    func startOperation(
        _ start: @Sendable (OperationID) -> NodeCore.Input,
        completion: @escaping @Sendable (OperationOutcome) -> Void
    ) {
        let id = takeID()
        let stopped = state.withLockedValue { state in
            if !state.stopped { state.operations[id] = completion }
            return state.stopped
        }
        if stopped {
            completion(.failed(KVError(.unavailable, "the node is shutting down")))
            return
        }
        runCore(start(.local(id)))
    }

    /// Queues a write command. One drain at a time takes everything queued and applies
    /// it with a single synced engine write: under load, tens of writes share one fsync
    /// and one thread wake-up, instead of each waiting on its own thread for RocksDB's
    /// group commit. Maintenance writes go in at most 256 per drain, after the client
    /// writes: a handoff queues thousands of rows at once, and a client write queued
    /// behind them all waited seconds (the elastic test's writes timed out at 5 s on a
    /// busy machine). Every maintenance write is a merge or a conditional removal, which
    /// commute with the writes that overtake them.
    func enqueueWrite(_ ticket: StorageTicket, _ command: StorageCommand) {
        let startDrain = writeQueue.withLockedValue { queue in
            queue.add(ticket, command)
            return queue.startsDrain()
        }
        if startDrain { startDraining() }
    }

    /// Queues maintenance writes together (one lock, at most one drain started).
    func enqueueWrites(_ writes: [(ticket: StorageTicket, command: StorageCommand)]) {
        guard !writes.isEmpty else { return }
        let startDrain = writeQueue.withLockedValue { queue in
            for write in writes { queue.add(write.ticket, write.command) }
            return queue.startsDrain()
        }
        if startDrain { startDraining() }
    }

    func startDraining() {
        local.threadPool.submit { [self] workState in drainWrites(active: workState == .active) }
    }

    private func drainWrites(active: Bool) {
        while true {
            let commands = writeQueue.withLockedValue { queue in
                if queue.isEmpty { queue.draining = false }
                return queue.take(backgroundLimit: Self.backgroundWritesPerDrain)
            }
            guard !commands.isEmpty else { return }
            let outcomes: [StorageOutcome]
            if active {
                // Every row lock, which orders the drain against catalog changes.
                do {
                    let started = NIODeadline.now()
                    outcomes = try local.withAllRowLocks { store.apply(commands.map(\.command)) }
                    metrics.writeBatch.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
                    metrics.writeBatchSize.record(commands.count)
                    compactChunkRowsIfDue()
                } catch {
                    outcomes = commands.map { _ in .failed(error) }
                }
            } else {
                outcomes = commands.map { _ in .failed(KVError(.unavailable, "the node is shutting down")) }
            }
            for (entry, outcome) in zip(commands, outcomes) {
                if case .maintenance(let id) = entry.ticket {
                    let finish = state.withLockedValue { state -> (@Sendable (StorageOutcome) -> Void)? in
                        if let finish = state.maintenance.removeValue(forKey: id) { return finish }
                        state.localWriteDeadlines[id] = nil
                        return state.localWrites.removeValue(forKey: id)
                    }
                    finish?(outcome)
                } else {
                    if entry.ticket == .repair, case .object = outcome {
                        metrics.readRepairsApplied.add(1, ordering: .relaxed)
                    }
                    runCore(.storageCompleted(entry.ticket, outcome))
                }
            }
        }
    }
}
