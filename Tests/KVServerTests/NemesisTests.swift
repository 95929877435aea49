import Foundation
import Glibc
import KVClient
import KVCluster
import KVCore
import KVNode
import KVTestSupport
import NIOConcurrencyHelpers
import Testing

/// The nemesis: a real three-node cluster under a workload while faults are injected
/// (kill -9 and restart, SIGSTOP and SIGCONT, a cut link through the fault proxies, a
/// wiped data directory), then checks that every property held once the faults stop:
///
/// - **P1** no acknowledged write is lost;
/// - **P5** no deleted row comes back, even after its tombstone is reaped;
/// - **P9** the sides of a healed partition merge: every node ends with the same rows;
/// - **P15** a row written by read-modify-write clients has at most one sibling per
///   concurrent writer;
/// - **P16** repair stops once the replicas agree;
/// - **P7** layout changes finish: a fourth node joins while another is killed, then
///   leaves while a link is cut, and each change's data moves in a bound;
/// - **convergence** within a bound after the last fault.
///
/// CI runs one round of each fault (about a minute). `KV_NEMESIS_ROUNDS=N` adds N rounds
/// of randomly chosen faults.
@Suite("nemesis: faults against a real cluster", .serialized)
struct NemesisTests {
    static let table = try! TableName(namespace: "nemesis", table: "rows")
    static let clients = 3
    static let sharedKeys = 3
    static let convergenceBound: Duration = .seconds(150)

    @Test(
        "acknowledged writes survive kill -9, pauses, cut links, a wiped disk and layout changes, and the replicas converge",
        .timeLimit(.minutes(15)))
    func nemesis() async throws {
        let run = try await NemesisRun.start()
        defer { run.stop() }
        try await run.execute(
            extraRounds: Int(ProcessInfo.processInfo.environment["KV_NEMESIS_ROUNDS"] ?? "") ?? 0)
    }

    /// The same faults with TLS on every connection: HTTPS for the clients, mutual TLS
    /// between the nodes (through the fault proxies, which only see ciphertext).
    @Test(
        "with TLS between nodes and to clients, acknowledged writes survive the same faults",
        .timeLimit(.minutes(15)))
    func nemesisOverTLS() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let run = try await NemesisRun.start(environment: certificates.environment)
        defer { run.stop() }
        try await run.execute(extraRounds: 0)
    }
}

/// One operation of the workload and what came of it.
struct RecordedOperation: Sendable {
    enum Kind: Sendable { case put, delete, update }
    enum Outcome: String, Sendable { case ok, failed, indeterminate }

    var client: Int
    var node: Int
    var kind: Kind
    var key: String
    /// The value written (a unique write id), empty for deletes.
    var value: String
    /// For updates: the values of the read whose context the write carried.
    var observed: Set<String>
    var outcome: Outcome
    var detail: String
    var at: Duration
}

/// The state of one nemesis run: the cluster, its proxies, the history and the faults.
final class NemesisRun: @unchecked Sendable {
    let cluster: LocalCluster
    let proxies: [FaultProxy]
    let names: [String]
    let ids: [NodeID]
    let started = ContinuousClock.now
    /// How clients reach the nodes: HTTPS with the test CA when the nodes speak TLS.
    var clientOptions: HTTPClientOptions { HTTPClientOptions(caFile: cluster.caFile) }
    private let history = NIOLockedValueBox<[RecordedOperation]>([])
    private let faults = NIOLockedValueBox<[String]>([])
    /// Nodes the workload should not send to (killed or being wiped): a load balancer's
    /// health check. Paused and cut-off nodes stay in, as a client would not know.
    private let avoided = NIOLockedValueBox<Set<Int>>([])
    private let stopping = NIOLockedValueBox(false)
    /// Each layout change and how long its data took to move (`nil`: not in the bound).
    private let layoutChanges = NIOLockedValueBox<[(what: String, took: Duration?)]>([])
    /// Nodes started for a layout change, stopped with the run.
    private let extraNodes = NIOLockedValueBox<[ServerProcess]>([])

    init(cluster: LocalCluster, proxies: [FaultProxy], names: [String]) {
        self.cluster = cluster
        self.proxies = proxies
        self.names = names
        ids = names.map(NodeIdentity.nodeID(named:))
    }

    static func start(environment: [String: String] = [:]) async throws -> NemesisRun {
        let ports = try FreePorts.take(6)
        var proxies: [FaultProxy] = []
        let names = (1...3).map { "nemesis-\($0)-\(UInt32.random(in: 0...UInt32.max))" }
        // Over TLS the proxies cannot read a connection's hello; they ask which node's
        // process opened it: every node of the run is started with its --node-name.
        let lookUp: FaultProxy.ProcessOwner = { pid in
            let arguments = FaultProxy.procFile("/proc/\(pid)/cmdline").split(separator: "\0").map(
                String.init)
            guard let at = arguments.firstIndex(of: "--node-name"), at + 1 < arguments.count else {
                return nil
            }
            return NodeIdentity.nodeID(named: arguments[at + 1])
        }
        let owner = environment["KV_TLS_CERT_FILE"] == nil ? nil : lookUp
        for index in 0..<3 { proxies.append(try FaultProxy(targetPort: ports[3 + index], owner: owner)) }
        let perNode = (0..<3).map {
            ["--node-name", names[$0], "--advertise-peer-port", String(proxies[$0].port)]
        }
        let cluster = try await offCooperativePool {
            try LocalCluster(
                count: 3,
                arguments: [
                    "--partitions", "32", "--anti-entropy-interval-ms", "50", "--replica-timeout-ms", "1500",
                    "--log-level", "info",
                ], environment: environment, ports: ports, perNodeArguments: perNode)
        }
        return NemesisRun(cluster: cluster, proxies: proxies, names: names)
    }

    func stop() {
        for node in cluster.nodes + extraNodes.withLockedValue({ $0 }) { node.kill() }
        for proxy in proxies { proxy.close() }
    }

    var elapsed: Duration { ContinuousClock.now - started }

    func note(_ fault: String) {
        let line = "[\(format(elapsed))] fault: \(fault)"
        print(line)
        faults.withLockedValue { $0.append(line) }
    }

    func format(_ duration: Duration) -> String {
        String(
            format: "%7.2fs",
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    // MARK: - The run

    func execute(extraRounds: Int) async throws {
        let first = try await HTTPKeyValueService(url: cluster.url(0), options: clientOptions)
        _ = try await first.createTable(
            TableDescriptor(name: NemesisTests.table, schema: try KeySchema([.string])))
        try await Task.sleep(for: .milliseconds(500))

        let workload = Task { await runWorkload() }
        try await Task.sleep(for: .seconds(2))
        // One round of every fault (or of those KV_NEMESIS_FAULTS names, comma-separated:
        // kill, pause, cut, wipe, layout).
        let chosen = ProcessInfo.processInfo.environment["KV_NEMESIS_FAULTS"].map {
            Set($0.split(separator: ",").map(String.init))
        }
        for fault in ["kill", "pause", "cut", "wipe", "layout"] where chosen?.contains(fault) ?? true {
            switch fault {
            case "kill": try await killAndRestart(1)
            case "pause": try await pause(2)
            case "cut": try await cutLink(0, 1)
            case "layout": try await changeLayout(killing: 1, cutting: (0, 2))
            default: try await wipe(2)
            }
            try await Task.sleep(for: .seconds(2))
        }
        var random = SystemRandomNumberGenerator()
        for _ in 0..<extraRounds {
            let node = Int.random(in: 0..<3, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0: try await killAndRestart(node)
            case 1: try await pause(node)
            case 2: try await cutLink(node, (node + 1) % 3)
            case 3: try await changeLayout(killing: 1 + node % 2, cutting: (node, (node + 1) % 3))
            default: try await wipe(node)
            }
            try await Task.sleep(for: .seconds(2))
        }
        stopping.withLockedValue { $0 = true }
        await workload.value
        note("none: the last fault ended; waiting for convergence")
        let healed = ContinuousClock.now

        let final = try await waitForConvergence()
        let convergedAfter = ContinuousClock.now - healed
        print("[\(format(elapsed))] converged \(format(convergedAfter)) after the last fault")
        printHistory()
        let verdicts = try await check(final)
        for verdict in verdicts {
            print(verdict.passed ? "PASS " : "FAIL ", verdict.property, verdict.detail)
        }
        print("verdict: \(verdicts.allSatisfy(\.passed) ? "PASS" : "FAIL")")
        for verdict in verdicts {
            #expect(verdict.passed, "\(verdict.property): \(verdict.detail)")
        }
    }

    // MARK: - Faults

    func pid(_ node: Int) -> pid_t? { cluster.nodes[node].child?.pid }

    func killAndRestart(_ node: Int) async throws {
        avoided.withLockedValue { _ = $0.insert(node) }
        note("kill -9 node \(node + 1)")
        cluster.nodes[node].kill()
        try await Task.sleep(for: .seconds(3))
        note("restart node \(node + 1)")
        try await offCooperativePool { [cluster] in try cluster.restart(node) }
        avoided.withLockedValue { _ = $0.remove(node) }
    }

    func pause(_ node: Int) async throws {
        guard let pid = pid(node) else { return }
        note("SIGSTOP node \(node + 1)")
        kill(pid, SIGSTOP)
        try await Task.sleep(for: .seconds(4))
        note("SIGCONT node \(node + 1)")
        kill(pid, SIGCONT)
    }

    func cutLink(_ a: Int, _ b: Int) async throws {
        note("cut the link between node \(a + 1) and node \(b + 1)")
        proxies[b].cut(from: [ids[a]])
        proxies[a].cut(from: [ids[b]])
        try await Task.sleep(for: .seconds(4))
        note("heal the link between node \(a + 1) and node \(b + 1)")
        proxies[a].heal()
        proxies[b].heal()
    }

    func wipe(_ node: Int) async throws {
        avoided.withLockedValue { _ = $0.insert(node) }
        note("kill -9 node \(node + 1) and wipe its data directory")
        cluster.nodes[node].kill()
        try? FileManager.default.removeItem(atPath: cluster.nodes[node].dataDirectory + "/rocksdb")
        try FileManager.default.createDirectory(
            atPath: cluster.nodes[node].dataDirectory, withIntermediateDirectories: true)
        try await Task.sleep(for: .seconds(1))
        note("restart node \(node + 1) on the empty directory")
        try await offCooperativePool { [cluster] in try cluster.restart(node) }
        // A wiped node serves once it has the cluster's metadata back; until then the
        // workload leaves it alone.
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let status = try? await HTTPKeyValueService(url: cluster.url(node), options: clientOptions)
                .clusterStatus(),
                status.layoutVersion > 0
            {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        avoided.withLockedValue { _ = $0.remove(node) }
    }

    /// P7: a fourth node joins (staged and committed through node 1) while `killing`
    /// is killed and restarted, then leaves while the link `cutting` is cut; each
    /// change's transfers must finish within a minute, and the node is stopped once it
    /// has left.
    func changeLayout(killing victim: Int, cutting link: (Int, Int)) async throws {
        let seed = try await HTTPKeyValueService(url: cluster.url(0), options: clientOptions)
        let ports = try FreePorts.take(2)
        let name = "nemesis-extra-\(UInt32.random(in: 0...UInt32.max))"
        note("start a fourth node and stage its join")
        let extra = try await offCooperativePool { [cluster] in
            try ServerProcess(
                arguments: [
                    "--peer-port", String(ports[1]), "--join", "127.0.0.1:\(cluster.httpPorts[0])",
                    "--node-name",
                    name, "--partitions", "32", "--anti-entropy-interval-ms", "50", "--replica-timeout-ms",
                    "1500", "--log-level", "info",
                ], environment: cluster.environment, port: ports[0])
        }
        extraNodes.withLockedValue { $0.append(extra) }
        let id = NodeIdentity.nodeID(named: name)
        let known = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < known,
            try await seed.clusterStatus().members.contains(where: { $0.nodeID == id }) == false
        {
            try await Task.sleep(for: .milliseconds(100))
        }
        func commit(_ change: String) async throws {
            let plan = try await seed.stageLayoutChange(
                LayoutChangeRequest(change: change, node: id.description))
            _ = try await seed.commitLayoutPlan(try #require(plan.id))
        }
        func waitForTransfers(_ what: String) async throws {
            let started = ContinuousClock.now
            while ContinuousClock.now - started < .seconds(60) {
                if let report = try? await seed.transfers(), !report.inProgress {
                    layoutChanges.withLockedValue { $0.append((what, ContinuousClock.now - started)) }
                    note("\(what): its data moved in \(format(ContinuousClock.now - started))")
                    return
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            layoutChanges.withLockedValue { $0.append((what, nil)) }
            note("\(what): its data did not move within a minute")
            // What the cluster says is missing, for whoever reads the failure.
            if let report = try? await seed.transfers() {
                note(
                    "\(what): \(report.received) of \(report.total) transfers received, "
                        + "\(report.unreleased) partitions wait for a release")
                for transfer in report.transfers where transfer.state != "received" {
                    note(
                        "  partition \(transfer.partition) to \(transfer.destination): \(transfer.state)"
                            + " from \(transfer.source ?? "-"), \(transfer.rows) rows")
                }
            }
        }
        note("commit the fourth node's join; partitions move while node \(victim + 1) is killed")
        try await commit("join")
        try await killAndRestart(victim)
        try await waitForTransfers("the join")
        note("commit the fourth node's leave; partitions move while a link is cut")
        try await commit("leave")
        try await cutLink(link.0, link.1)
        try await waitForTransfers("the leave")
        let left = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < left,
            try await seed.clusterStatus().members.first(where: { $0.nodeID == id })?.state != "left"
        {
            try await Task.sleep(for: .milliseconds(100))
        }
        note("stop the fourth node, which left")
        extra.kill()
        await seed.close()
    }

    // MARK: - The workload

    func runWorkload() async {
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<NemesisTests.clients {
                group.addTask { await self.client(client) }
            }
        }
    }

    private func record(_ operation: RecordedOperation) {
        history.withLockedValue { $0.append(operation) }
    }

    static func classify(_ error: KVError) -> RecordedOperation.Outcome {
        switch error.code {
        case .quorumUnavailable where error.message.contains("nothing was written"):
            return .failed
        case .unavailable where error.message.hasPrefix("cannot connect"):
            // Never sent. A connection that broke after the request went out is
            // indeterminate: the write may have been applied.
            return .failed
        case .invalidRequest, .invalidQuorum, .tableNotFound, .preconditionFailed:
            return .failed
        default:
            return .indeterminate
        }
    }

    private func client(_ client: Int) async {
        var services: [Int: HTTPKeyValueService] = [:]
        var random = SeededRandom(seed: UInt64(client) &+ 17)
        var sequence = 0
        // Own rows this client wrote and was told were written, with their contexts.
        var written: [(key: String, context: String)] = []
        while !stopping.withLockedValue({ $0 }) {
            let avoid = avoided.withLockedValue { $0 }
            let candidates = (0..<3).filter { !avoid.contains($0) }
            guard !candidates.isEmpty else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            let node = candidates[Int(random.next() % UInt64(candidates.count))]
            let service: HTTPKeyValueService
            if let existing = services[node] {
                service = existing
            } else if let created = try? await HTTPKeyValueService(
                url: cluster.url(node), options: clientOptions)
            {
                services[node] = created
                service = created
            } else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            sequence += 1
            let roll = random.next() % 100
            let at = elapsed
            if roll < 60 || (roll < 75 && written.isEmpty) {
                let key = "c\(client)-\(sequence)"
                let value = "w\(client)-\(sequence)"
                do throws(KVError) {
                    let result = try await service.put(
                        RowKey(table: NemesisTests.table, parts: [.string(key)]),
                        value: RowValue(bytes: Array(value.utf8)), options: WriteOptions())
                    written.append((key, result.context))
                    record(
                        .init(
                            client: client, node: node, kind: .put, key: key, value: value, observed: [],
                            outcome: .ok, detail: "", at: at))
                } catch {
                    record(
                        .init(
                            client: client, node: node, kind: .put, key: key, value: value, observed: [],
                            outcome: Self.classify(error), detail: "\(error.code.rawValue): \(error.message)",
                            at: at))
                }
            } else if roll < 75 {
                let (key, context) = written.remove(at: Int(random.next() % UInt64(written.count)))
                do throws(KVError) {
                    _ = try await service.delete(
                        RowKey(table: NemesisTests.table, parts: [.string(key)]),
                        options: WriteOptions(context: context))
                    record(
                        .init(
                            client: client, node: node, kind: .delete, key: key, value: "", observed: [],
                            outcome: .ok, detail: "", at: at))
                } catch {
                    record(
                        .init(
                            client: client, node: node, kind: .delete, key: key, value: "", observed: [],
                            outcome: Self.classify(error), detail: "\(error.code.rawValue): \(error.message)",
                            at: at))
                }
            } else {
                // Read-modify-write of a shared row: the write supersedes what was read.
                let key = "shared-\(random.next() % UInt64(NemesisTests.sharedKeys))"
                let value = "w\(client)-\(sequence)"
                let row = RowKey(table: NemesisTests.table, parts: [.string(key)])
                var observed: Set<String> = []
                var context: String?
                do throws(KVError) {
                    let read = try await service.get(row)
                    observed = Set(
                        read.siblings.compactMap {
                            $0.value.map { String(decoding: $0.bytes, as: UTF8.self) }
                        })
                    context = read.context
                } catch {
                    if error.code != .rowNotFound { continue }
                }
                do throws(KVError) {
                    _ = try await service.put(
                        row, value: RowValue(bytes: Array(value.utf8)),
                        options: WriteOptions(context: context))
                    record(
                        .init(
                            client: client, node: node, kind: .update, key: key, value: value,
                            observed: observed, outcome: .ok, detail: "", at: at))
                } catch {
                    record(
                        .init(
                            client: client, node: node, kind: .update, key: key, value: value,
                            observed: observed, outcome: Self.classify(error),
                            detail: "\(error.code.rawValue): \(error.message)",
                            at: at))
                }
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: - Convergence

    /// Every row of the table as node `index` holds it: a scan through that node with
    /// r=1 reads only its own replicas (every node replicates every partition here).
    func rows(at index: Int) async throws -> [String: Set<String>] {
        let service = try await HTTPKeyValueService(url: cluster.url(index), options: clientOptions)
        var rows: [String: Set<String>] = [:]
        var continuation: String?
        repeat {
            let page = try await service.scan(
                ScanRequest(table: NemesisTests.table, limit: 1000, continuation: continuation, r: 1))
            for row in page.rows {
                guard case .string(let key)? = row.key.first else { continue }
                rows[key] = Set(
                    row.siblings.compactMap { $0.value.map { String(decoding: $0.bytes, as: UTF8.self) } })
            }
            continuation = page.continuation
        } while continuation != nil
        return rows
    }

    func counters(at index: Int) async throws -> ClusterStatus {
        try await HTTPKeyValueService(url: cluster.url(index), options: clientOptions).clusterStatus()
    }

    /// Waits until every node holds the same rows, holds no hints and no tombstones, and
    /// sees every member up; returns the rows.
    func waitForConvergence() async throws -> [String: Set<String>] {
        let deadline = ContinuousClock.now + NemesisTests.convergenceBound
        var last = ""
        while ContinuousClock.now < deadline {
            do {
                var states: [[String: Set<String>]] = []
                var reasons: [String] = []
                for index in 0..<3 {
                    let status = try await counters(at: index)
                    if let pending = status.counters["hints.pending"], pending > 0 {
                        reasons.append("node \(index + 1) holds \(pending) hints")
                    }
                    if let held = status.counters["tombstones.held"], held > 0 {
                        let progress = [
                            "anti_entropy.exchanges", "anti_entropy.rounds", "tombstones.reaps_refused",
                        ]
                        .map { "\($0)=\(status.counters[$0] ?? -1)" }.joined(separator: " ")
                        reasons.append("node \(index + 1) holds \(held) tombstones (\(progress))")
                    }
                    let notUp = status.members.filter { !["up", "self", "left"].contains($0.state) }
                    if !notUp.isEmpty { reasons.append("node \(index + 1) sees \(notUp.map(\.state))") }
                    states.append(try await rows(at: index))
                }
                if states[0] != states[1] || states[1] != states[2] {
                    let counts = states.map(\.count)
                    reasons.append("the nodes hold different rows (\(counts) rows)")
                }
                if reasons.isEmpty { return states[0] }
                last = reasons.joined(separator: "; ")
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        Issue.record("the cluster did not converge within \(NemesisTests.convergenceBound): \(last)")
        if let hold = ProcessInfo.processInfo.environment["KV_NEMESIS_HOLD_SECONDS"].flatMap(Int.init) {
            // Leaves the unconverged cluster running for a look from outside.
            print("holding the cluster for \(hold) s: \((0..<3).map { cluster.url($0) })")
            try await Task.sleep(for: .seconds(hold))
        }
        for index in 0..<3 {
            if let status = try? await counters(at: index) {
                print(
                    "node \(index + 1): \(status.members.map { "\($0.nodeID)=\($0.state)" }) \(status.counters.sorted { $0.key < $1.key })"
                )
            }
        }
        return try await rows(at: 0)
    }

    // MARK: - Checking

    struct Verdict {
        var property: String
        var passed: Bool
        var detail: String
    }

    func printHistory() {
        let operations = history.withLockedValue { $0 }.sorted { $0.at < $1.at }
        print("operations (\(operations.count)):")
        for operation in operations {
            let what: String
            switch operation.kind {
            case .put: what = "put \(operation.key)=\(operation.value)"
            case .delete: what = "delete \(operation.key)"
            case .update:
                what =
                    "update \(operation.key)=\(operation.value) over [\(operation.observed.sorted().joined(separator: ","))]"
            }
            print(
                "[\(format(operation.at))] client \(operation.client) via node \(operation.node + 1): \(what) -> \(operation.outcome.rawValue) \(operation.detail)"
            )
        }
        let counts = Dictionary(grouping: operations, by: \.outcome).mapValues(\.count)
        print(
            "operations: \(operations.count) (ok \(counts[.ok] ?? 0), failed \(counts[.failed] ?? 0), indeterminate \(counts[.indeterminate] ?? 0))"
        )
        print("faults:")
        for line in faults.withLockedValue({ $0 }) { print(line) }
    }

    func check(_ final: [String: Set<String>]) async throws -> [Verdict] {
        let operations = history.withLockedValue { $0 }
        var verdicts: [Verdict] = []

        // P1: own rows put and acknowledged, and never deleted since, hold their value;
        // every acknowledged update of a shared row is there or superseded by a write
        // that read it.
        let deleteAttempts = Set(operations.filter { $0.kind == .delete }.map(\.key))
        var lost: [String] = []
        for put in operations
        where put.kind == .put && put.outcome == .ok && !deleteAttempts.contains(put.key) {
            if final[put.key] != [put.value] {
                lost.append("\(put.key)=\(put.value) (holds \(final[put.key].map { $0.sorted() } ?? []))")
            }
        }
        let updates = operations.filter { $0.kind == .update && $0.outcome != .failed }
        var supersededBy: [String: [String]] = [:]
        for update in updates {
            for seen in update.observed { supersededBy[seen, default: []].append(update.value) }
        }
        for update in updates where update.outcome == .ok {
            let present = final[update.key] ?? []
            var frontier = [update.value]
            var seen: Set<String> = []
            var covered = false
            while let value = frontier.popLast(), !covered {
                if present.contains(value) { covered = true }
                guard seen.insert(value).inserted else { continue }
                frontier += supersededBy[value] ?? []
            }
            if !covered { lost.append("\(update.key)=\(update.value)") }
        }
        let acknowledged = operations.filter { $0.outcome == .ok && $0.kind != .delete }.count
        verdicts.append(
            Verdict(
                property: "P1 no acknowledged write lost", passed: lost.isEmpty,
                detail: lost.isEmpty
                    ? "\(acknowledged) acknowledged writes all present" : "lost: \(lost.prefix(10))"))

        // P5: rows deleted with an acknowledged delete stay deleted (their tombstones
        // were reaped: convergence waited for none to be held).
        let deleted = operations.filter { $0.kind == .delete && $0.outcome == .ok }.map(\.key)
        let resurrected = deleted.filter { final[$0] != nil }
        verdicts.append(
            Verdict(
                property: "P5 no resurrection", passed: resurrected.isEmpty,
                detail: resurrected.isEmpty
                    ? "\(deleted.count) deleted rows absent on every node, tombstones reaped"
                    : "back: \(resurrected.prefix(10))"))

        // P9: convergence compared every node's rows; the updates from both sides of the
        // cut link are among them (checked by P1).
        verdicts.append(
            Verdict(
                property: "P9 healing merges", passed: true,
                detail: "every node holds the same \(final.count) rows"))

        // P15: read-modify-write clients leave at most one sibling each.
        let siblingCounts = (0..<NemesisTests.sharedKeys).map { final["shared-\($0)"]?.count ?? 0 }
        verdicts.append(
            Verdict(
                property: "P15 siblings bounded by concurrent writers",
                passed: siblingCounts.allSatisfy { $0 <= NemesisTests.clients },
                detail: "siblings per shared row \(siblingCounts), writers \(NemesisTests.clients)"))

        // P7: every layout change moved its data within the bound.
        let changes = layoutChanges.withLockedValue { $0 }
        verdicts.append(
            Verdict(
                property: "P7 layout changes finish under faults",
                passed: changes.allSatisfy { $0.took != nil },
                detail: changes.isEmpty
                    ? "no layout change in this run"
                    : changes.map { "\($0.what): \($0.took.map(format) ?? "unfinished")" }.joined(
                        separator: ", ")))

        // P16: once the replicas agree, anti-entropy repairs nothing more.
        func repaired() async throws -> [Int64] {
            var values: [Int64] = []
            for index in 0..<3 {
                values.append(try await counters(at: index).counters["anti_entropy.keys_repaired"] ?? -1)
            }
            return values
        }
        let before = try await repaired()
        try await Task.sleep(for: .seconds(4))
        let after = try await repaired()
        verdicts.append(
            Verdict(
                property: "P16 repair stops when the replicas agree", passed: before == after,
                detail: "keys repaired per node \(before) then, 4 s later, \(after)"))
        return verdicts
    }
}
