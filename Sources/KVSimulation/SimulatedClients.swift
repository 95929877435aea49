import KVCluster
import KVCore
import KVReplica
import KVStorage

/// What a client is doing.
enum ClientRequest {
    case read(key: Int)
    case write(key: Int, writeID: Int, isDelete: Bool)
    /// An increment of the counter key.
    case increment(incrementID: Int)
    /// A blind write to the last-writer-wins key.
    case lastWriterWrite
}

/// An increment the clients attempted, for the counter checker.
struct IncrementRecord {
    var delta: Int64
    /// `true` acknowledged, `false` refused (it certainly did not happen), `nil` unknown.
    var acknowledged: Bool?
}

/// One simulated client: sequential operations, remembering the last version it saw
/// of each key.
struct SimulatedClient {
    var remaining: Int
    /// The object whose context this client would write with next, per key.
    var lastSeen: [Int: StoredObject] = [:]
    var pending: (request: ClientRequest, node: Int, operation: UInt64)?
}

/// A write the clients attempted, for the checkers.
struct WriteRecord {
    var key: Int
    /// The writes the client's context covered (the values of the object it came from).
    var observed: Set<Int>
    /// Whether it is a delete (a tombstone).
    var isDelete: Bool
    /// Written without the context the client had: concurrent with that client's own
    /// earlier writes, so it may stay beside them.
    var isBlind = false
    /// Written with `If-Match` or `If-None-Match`: if acknowledged, the coordinating
    /// replica held exactly what the client saw, so the answer holds this write alone.
    var isConditional = false
    var acknowledged = false
}

/// The simulated clients: what each does next, and what its answers mean to the
/// checkers.
extension SimulatedWorld {
    mutating func startNextOperation(of client: Int) {
        guard clients[client].remaining > 0 else { return }
        clients[client].remaining -= 1
        let key = Int.random(in: 0..<keys.count, using: &random)
        let roll = Int.random(in: 0..<100, using: &random)
        // Which variant of the operation: an increment of the counter key instead, or a
        // write with a condition.
        let variant = Int.random(in: 0..<100, using: &random)
        let seen = clients[client].lastSeen[key]
        let request: ClientRequest
        var proposed: ProposedWrite?
        var target = keys[key]
        if variant < 12 {
            let incrementID = increments.count + 1
            let delta = Int64.random(in: -5...9, using: &random)
            increments[incrementID] = IncrementRecord(delta: delta)
            // Timestamps far above every write id, so counter versions are never taken
            // for writes in a trace.
            proposed = ProposedWrite(
                sibling: .tombstone(at: 1_000_000 + Int64(incrementID)), context: nil,
                generation: SimulatedNode.table.generation, increment: delta)
            request = .increment(incrementID: incrementID)
            target = counterKey
        } else if configuration.lastWriterWins && variant < 22 {
            // Timestamps from a narrow range, so clocks tie and the dot decides.
            let timestamp = 3_000_000 + Int64.random(in: 0...3, using: &random)
            proposed = ProposedWrite(
                sibling: Sibling(
                    value: RowValue(bytes: Array("l\(nextOperation)".utf8)), timestampMilliseconds: timestamp,
                    resolvesByLastWriter: true),
                context: nil, generation: SimulatedNode.table.generation)
            request = .lastWriterWrite
            target = lastWriterKey
        } else if roll < 35 || (roll >= 85 && seen == nil) {
            request = .read(key: key)
        } else {
            let writeID = nextWriteID
            nextWriteID += 1
            let isDelete = roll >= 85
            // Blind writes 15 % of the time; otherwise, and for every delete, with the
            // last context seen (a blind delete removes whatever its coordinator holds,
            // which no client observed, so the checker could not attribute it).
            let context = roll < 70 || isDelete ? seen : nil
            let sibling =
                isDelete
                ? Sibling.tombstone(at: Int64(writeID))
                : Sibling(
                    value: RowValue(bytes: Array("w\(writeID)".utf8)), timestampMilliseconds: Int64(writeID))
            // Some writes carry a condition: If-Match on the version the client saw, or
            // If-None-Match: * when it has seen nothing of the key.
            var condition = WriteCondition.none
            if variant < 30, !isDelete, let context, context == seen {
                let identity = RowChecks.identity(
                    generation: SimulatedNode.table.generation, dataKey: keys[key].bytes)
                condition = .ifMatch(
                    RowChecks.version(of: context, identity: identity, sealer: SimulatedNode.sealer).etag)
            } else if variant < 45, !isDelete, seen == nil {
                condition = .ifAbsent
            }
            writes[writeID] = WriteRecord(
                key: key, observed: Set((context?.values ?? []).map(Self.writeID)), isDelete: isDelete,
                isBlind: context == nil && seen != nil, isConditional: condition != .none)
            proposed = ProposedWrite(
                sibling: sibling, context: context?.context, condition: condition,
                generation: SimulatedNode.table.generation)
            request = .write(key: key, writeID: writeID, isDelete: isDelete)
        }
        let live = nodes.indices.filter { nodes[$0].isUp }
        guard let node = live.randomElement(using: &random) else {
            // Nobody to talk to: the client waits and tries again.
            clients[client].remaining += 1
            if case .write(_, let writeID, _) = request { writes[writeID] = nil }
            if case .increment(let incrementID) = request { increments[incrementID] = nil }
            schedule(.clientStep(client), after: 50)
            return
        }
        let number = nextOperation
        nextOperation += 1
        operationClients[number] = client
        clients[client].pending = (request, node, number)
        log("client \(client) -> n\(node): \(request)")
        if let proposed {
            runCore(.write(.local(number), key: target, proposed, quorum: quorum), at: node)
        } else {
            runCore(.read(.local(number), key: target, quorum: quorum), at: node)
        }
    }

    /// Records the end of a client's operation; `nil` when the connection was lost.
    mutating func finishClientOperation(_ client: Int, outcome: OperationOutcome?) {
        guard let pending = clients[client].pending else { return }
        clients[client].pending = nil
        operationClients[pending.operation] = nil
        log("client \(client) <- \(outcome.map(summary) ?? "connection lost")")
        switch (pending.request, outcome) {
        case (.read(let key), .read(let object)?):
            report.readsSucceeded += 1
            clients[client].lastSeen[key] = object
            checkSiblings(object, what: "a read of key \(key)")
        case (.read, _):
            report.readsFailed += 1
        case (.write(let key, let writeID, _), .written(let object)?):
            report.writesAcknowledged += 1
            writes[writeID]?.acknowledged = true
            clients[client].lastSeen[key] = object
            checkSiblings(object, what: "the result of write w\(writeID)")
            if writes[writeID]?.isConditional == true, object.liveValues.map(Self.writeID) != [writeID],
                writes[writeID]?.isDelete == false
            {
                report.violations.append(
                    "the conditional write w\(writeID) was acknowledged beside versions its client never saw: \(ids(object))"
                )
            }
        case (.write, .failed(let error)?) where error.code == .preconditionFailed:
            // The row changed since the client read it: the answer a conditional write
            // exists for, not a failure.
            report.conditionsNotMet += 1
        case (.write, _):
            report.writesNotAcknowledged += 1
        case (.increment(let incrementID), .written?):
            report.incrementsAcknowledged += 1
            increments[incrementID]?.acknowledged = true
        case (.increment, _):
            // A failed increment may still have been applied on some replicas.
            break
        case (.lastWriterWrite, .written?):
            report.lastWriterWritesAcknowledged += 1
        case (.lastWriterWrite, _):
            break
        }
        schedule(.clientStep(client), after: Int64.random(in: 0...20, using: &random))
    }
}
