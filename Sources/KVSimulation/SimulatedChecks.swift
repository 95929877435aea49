import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory

/// The checkers that run once a simulated run has healed, and the trace's message
/// summaries.
extension SimulatedWorld {
    // MARK: - Checkers

    /// The counter ends at the sum of every acknowledged increment plus some of those
    /// whose outcome is unknown, and its replicas agree.
    mutating func checkCounter() {
        let states = replicaStates(of: counterKey)
        if Set(states).count != 1 {
            report.violations.append("replicas of the counter did not converge")
        }
        let merged = states.reduce(StoredObject()) { $0.merging($1) }
        guard let value = (try? CounterState.merged(merged.liveValues))?.map(\.value) ?? Optional(0) else {
            report.violations.append("the counter's final state does not decode")
            return
        }
        let acknowledged = increments.values.filter { $0.acknowledged == true }.reduce(Int64(0)) {
            $0 + $1.delta
        }
        var reachable: Set<Int64> = [0]
        for record in increments.values where record.acknowledged != true {
            reachable.formUnion(reachable.map { $0 + record.delta })
        }
        if !reachable.contains(value - acknowledged) {
            report.violations.append(
                "the counter ends at \(value), but its acknowledged increments add up to \(acknowledged) and no set of the \(increments.values.filter { $0.acknowledged != true }.count) of unknown outcome makes up the difference"
            )
        }
    }

    /// The last-writer-wins key's replicas hold the same state and read one value, and
    /// a value is there if any write of it was acknowledged (the workload never deletes).
    mutating func checkLastWriterWins() {
        let states = replicaStates(of: lastWriterKey)
        if Set(states).count != 1 {
            report.violations.append("replicas of the last-writer-wins key did not converge")
        }
        let reads = Set(states.map { $0.visibleValues(at: 0) })
        if reads.count != 1 || reads.contains(where: { $0.count > 1 }) {
            report.violations.append(
                "replicas of the last-writer-wins key read different or several values: \(reads)")
        }
        if report.lastWriterWritesAcknowledged > 0, reads.contains(where: \.isEmpty) {
            report.violations.append("the last-writer-wins key lost every acknowledged write")
        }
    }

    /// What each replica of `key` holds.
    mutating func replicaStates(of key: ReplicaKey) -> [StoredObject] {
        nodes[0].core.coordinator.layout.replicas(of: key.partition).map { node -> StoredObject in
            if case .object(let object) = execute(.load(key), at: index(of: node)) { return object }
            return StoredObject()
        }
    }

    static func writeID(_ sibling: Sibling) -> Int { Int(sibling.timestampMilliseconds) }

    /// The writes that `writeID` supersedes, transitively.
    func ancestors(of writeID: Int, memo: inout [Int: Set<Int>]) -> Set<Int> {
        if let known = memo[writeID] { return known }
        var result: Set<Int> = []
        for parent in writes[writeID]?.observed.sorted() ?? [] {
            result.insert(parent)
            result.formUnion(ancestors(of: parent, memo: &memo))
        }
        memo[writeID] = result
        return result
    }

    mutating func checkSiblings(_ object: StoredObject, what: String) {
        let ids = object.values.map(Self.writeID)
        report.largestSiblingCount = max(report.largestSiblingCount, object.liveValues.count)
        if Set(ids).count != ids.count {
            report.violations.append("\(what) returned one write twice: \(ids.sorted())")
        }
        var memo: [Int: Set<Int>] = [:]
        for id in ids {
            let older = ancestors(of: id, memo: &memo)
            for other in ids where other != id && older.contains(other) {
                report.violations.append(
                    "\(what) returned w\(other) beside w\(id), which was written with a context that saw it")
            }
        }
    }

    mutating func finalReadsAndChecks() {
        let everything = Quorum(
            n: configuration.replicationFactor, r: configuration.replicationFactor,
            w: configuration.replicationFactor, dw: 0, pr: 0, pw: 0)
        for key in keys.indices {
            let number = nextOperation
            nextOperation += 1
            let client = clients.count
            clients.append(SimulatedClient(remaining: 0))
            operationClients[number] = client
            clients[client].pending = (.read(key: key), 0, number)
            runCore(.read(.local(number), key: keys[key], quorum: everything), at: 0)
            drain()
            guard let object = clients[client].lastSeen[key] else {
                report.violations.append("the final read of key \(key) with R=N failed after healing")
                continue
            }
            finalReads[key] = object
        }
        drain()
        // Convergence: every replica holds the same state.
        for key in keys.indices {
            let states = replicaStates(of: keys[key])
            if Set(states).count != 1 {
                report.violations.append(
                    "replicas of key \(key) did not converge: "
                        + states.map { "\($0.values.map(Self.writeID).sorted())" }.joined(separator: " vs "))
            }
        }
        checkCounter()
        if configuration.lastWriterWins { checkLastWriterWins() }
        // Finished operations leave no bookkeeping behind.
        for (index, node) in nodes.enumerated()
        where node.core.coordinator.requestsInFlight != 0 && !gone.contains(index) {
            report.violations.append(
                "node \(index + 1) still tracks \(node.core.coordinator.requestsInFlight) replica requests after every operation ended"
            )
        }
        // No acknowledged write lost.
        for key in keys.indices {
            guard let final = finalReads[key] else { continue }
            // A reaped tombstone holds its delete, and what it superseded, as much as a
            // stored one.
            var valid = Set(final.values.map(Self.writeID)).union(reaped[key] ?? [])
            var frontier = Array(valid)
            while let id = frontier.popLast() {
                for parent in writes[id]?.observed ?? [] where valid.insert(parent).inserted {
                    frontier.append(parent)
                }
            }
            for (id, record) in writes.sorted(by: { $0.key < $1.key })
            where record.key == key && record.acknowledged && !valid.contains(id) {
                report.violations.append(
                    "acknowledged write w\(id) of key \(key) is lost: the final read holds \(final.values.map(Self.writeID).sorted()) and nothing there supersedes it"
                )
            }
        }
        // No resurrection: no value an acknowledged delete saw is live in the end.
        var memo: [Int: Set<Int>] = [:]
        for (id, record) in writes.sorted(by: { $0.key < $1.key })
        where record.acknowledged && record.isDelete {
            guard let final = finalReads[record.key] else { continue }
            let deleted = ancestors(of: id, memo: &memo)
            for value in final.liveValues.map(Self.writeID) where deleted.contains(value) {
                report.violations.append(
                    "w\(value) of key \(record.key) came back after the acknowledged delete w\(id) that saw it"
                )
            }
        }
        checkReapedTombstones()
        // Siblings bounded by concurrent writers: each client leaves at most its latest
        // write, plus any write whose outcome it never learned and any it wrote blind
        // (without the context it had, so beside its own earlier ones).
        for key in keys.indices {
            guard let final = finalReads[key] else { continue }
            let unknown = writes.values.filter { $0.key == key && !$0.acknowledged }.count
            let blind = writes.values.filter { $0.key == key && $0.isBlind }.count
            if final.liveValues.count > clients.count + unknown + blind {
                report.violations.append(
                    "key \(key) ends with \(final.liveValues.count) siblings, more than \(clients.count) writers, \(unknown) writes of unknown outcome and \(blind) blind writes"
                )
            }
        }
    }

    func summary(_ message: ReplicaMessage) -> String {
        switch message {
        case .quorum(.store(let id, _, let object)): "store #\(id) \(ids(object))"
        case .quorum(.stored(let id, _)): "stored #\(id)"
        case .quorum(.fetch(let id, _)): "fetch #\(id)"
        case .quorum(.fetched(let id, let object)): "fetched #\(id) \(ids(object))"
        case .quorum(.replicaFailed(let id, let error)): "failed #\(id) \(error.code)"
        case .quorum(.repair(_, let object)): "repair \(ids(object))"
        case .quorum(.coordinateWrite(let id, _, let write, _)):
            "coordinate write #\(id) w\(Self.writeID(write.sibling))"
        case .quorum(.coordinateRead(let id, _, _)): "coordinate read #\(id)"
        case .quorum(.coordinated(let id, let outcome)): "coordinated #\(id) \(summary(outcome))"
        case .metadata(.push(let id, _)): "metadata #\(id.map(String.init) ?? "-")"
        case .metadata(.merged(let id)): "metadata merged #\(id)"
        case .scans(.scan(let id, _)): "scan #\(id)"
        case .scans(.scanned(let id, let page)): "scanned #\(id) \(page.rows.count) rows"
        case .membership(let message, _): "membership \(message)"
        case .quorum(.storeHint(let id, _, let object, let target)):
            "hint #\(id) for \(target) \(ids(object))"
        case .hints(.handoff(let id, _, let object)): "handoff #\(id) \(ids(object))"
        case .hints(.handedOff(let id, let error)): "handed off #\(id) \(error?.code.rawValue ?? "ok")"
        case .antiEntropy(.treeRequest(let id, let partition, let segments)):
            "tree #\(id) p\(partition) \(segments.count)"
        case .antiEntropy(.treeHashes(let id, _, let hashes)): "tree hashes #\(id) \(hashes.count)"
        case .antiEntropy(.keyHashesRequest(let id, let partition, let leaves, _)):
            "keys #\(id) p\(partition) \(leaves.count)"
        case .antiEntropy(.keyHashes(let id, let entries, _)): "key hashes #\(id) \(entries.count)"
        case .antiEntropy(.reconcile(let id, _, let object)): "reconcile #\(id) \(ids(object))"
        case .antiEntropy(.reconciled(let id, _)): "reconciled #\(id)"
        case .reaping(.reapQuery(let id, _, _, _)): "reap query #\(id)"
        case .reaping(.reapAnswer(let id, let agrees)): "reap answer #\(id) \(agrees)"
        case .reaping(.reap): "reap"
        case .transfers(.transferPull(let id, let partition, _, _, _)): "transfer pull #\(id) p\(partition)"
        case .transfers(.transferRows(let id, let page, _)): "transfer rows #\(id) \(page.rows.count)"
        case .transfers(.transfersRequest(let id)): "transfers #\(id)"
        case .transfers(.transfersReport(let id, _)): "transfers report #\(id)"
        }
    }

    func summary(_ outcome: OperationOutcome) -> String {
        switch outcome {
        case .written(let object): "written \(ids(object))"
        case .read(let object): "read \(ids(object))"
        case .failed(let error): "failed \(error.code)"
        }
    }

    func ids(_ object: StoredObject) -> String {
        "["
            + object.values.map { ($0.isTombstone ? "†w" : "w") + String(Self.writeID($0)) }.joined(
                separator: " ") + "]"
    }
}
