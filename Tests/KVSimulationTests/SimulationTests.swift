import Dispatch
import KVSimulation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Deterministic simulations of a 5-node, N=3 cluster under network faults and crashes.
@Suite("Cluster simulation")
struct SimulationTests {
    /// Seeds that once failed, each with what it caught. They run on every test run, so
    /// a fixed bug stays fixed.
    static let pinnedSeeds: [(seed: UInt64, caught: String)] = [
        // The workload once issued blind deletes, which remove whatever their
        // coordinator holds; the checker then reported superseded writes as lost. Seed 3
        // was the first to show it.
        (3, "blind deletes in the workload confused the lost-write checker"),
        // Once the simulator reaped tombstones, a row written again after its reap
        // restarted its dots from an empty clock, so contexts from before the reap
        // covered new writes, which were lost (9902: w49, w51 and w53, acknowledged,
        // then a read with no values). A coordinator now starts an actor new to a row
        // above every counter it issued.
        (2033, "dots reused after a reap: acknowledged writes lost"),
        (2258, "dots reused after a reap: acknowledged writes lost"),
        (5874, "dots reused after a reap: acknowledged writes lost"),
        (9902, "dots reused after a reap: acknowledged writes lost"),
        // The same reuse through a client's context: a context read before the reap
        // names the coordinator's actor, so the row learned the actor from it and
        // counted on from the old counter, repeating the reaped tombstone's dot. A
        // replica that had not reaped took the new write for the tombstone, and
        // anti-entropy repaired the key forever without converging.
        (8609, "dots reused through a context from before a reap: replicas never converged"),
        // A previous owner that had released its partition still took a write (its
        // coordinator used the old placement), then dropped its copy once the change was
        // over; with the coordinator's disk lost, the acknowledged write was gone. A copy
        // now goes to the owners before it is dropped.
        (6012, "a write taken after the release was dropped with the previous owner's copy"),
        // The nemesis's stalled join, under seeds: the joiner's connection to a previous
        // owner went silent. The previous owner's release pushes went unanswered (the
        // joiner answers over its own connection) while SWIM kept the joiner alive by
        // indirect probes, so the change never finished and tombstones were never
        // reaped. Reopening only the asking node's own connection did not help (73: 14
        // reopens, release still waiting); a node that finds a peer silent now closes
        // the peer's connection to it as well.
        (73, "a silent connection from the joiner stalled a release for good"),
        (201, "a silent connection from the joiner stalled a release for good"),
        // A silent connection from a node to a leaving one: the leaver's direct pings
        // went unanswered, it declared the node dead (indirect probes are not asked
        // about a dead member), and so never sent it a request whose silence it could
        // notice, while the node had no reason to talk to the leaver. The release waited
        // for good. An unacked direct ping now counts as an unanswered request.
        (791, "a member declared dead over a silent connection was never asked again"),
    ]

    /// How many seeds the sweep runs: 300 by default, `KV_SIMULATION_SEEDS` for more.
    static var sweepSize: Int {
        guard let text = getenv("KV_SIMULATION_SEEDS").map({ String(cString: $0) }), let count = Int(text),
            count > 0
        else { return 300 }
        return count
    }

    /// Runs a simulation of each configuration, as many side by side as the machine has
    /// cores, and returns their reports in the configurations' order. A run is pure and
    /// seeded, so running runs side by side changes none of them. They run on Dispatch's
    /// threads, not on Swift concurrency's pool, which a test running beside this one
    /// (under a plain `swift test`) may need.
    static func reports(_ configurations: [SimulationConfiguration]) -> [SimulationReport] {
        let reports = Mutex([SimulationReport?](repeating: nil, count: configurations.count))
        DispatchQueue.concurrentPerform(iterations: configurations.count) { index in
            let report = Simulation(configurations[index]).run()
            reports.withLock { $0[index] = report }
        }
        let finished = reports.withLock { $0.compactMap { $0 } }
        #expect(finished.count == configurations.count)
        return finished
    }

    @Test("a sweep of seeded runs with faults keeps every safety property")
    func sweep() {
        var failed: [String] = []
        var totals = (acknowledged: 0, crashes: 0, dropped: 0, duplicated: 0, largestSiblings: 0)
        let seeds = 1...UInt64(Self.sweepSize)
        let reports = Self.reports(seeds.map { SimulationConfiguration(seed: $0) })
        for report in reports {
            totals.acknowledged += report.writesAcknowledged
            totals.crashes += report.crashes
            totals.dropped += report.messagesDropped
            totals.duplicated += report.messagesDuplicated
            totals.largestSiblings = max(totals.largestSiblings, report.largestSiblingCount)
            if !report.passed { failed.append(report.description) }
        }
        print(
            "simulation sweep: \(Self.sweepSize) seeds, \(totals.acknowledged) acknowledged writes, \(totals.crashes) crashes, "
                + "\(totals.dropped) messages dropped, \(totals.duplicated) duplicated, at most \(totals.largestSiblings) siblings"
        )
        #expect(failed.isEmpty, "\(failed.count) seeds failed:\n\(failed.joined(separator: "\n"))")
        // The faults must really happen, or the sweep proves little.
        #expect(totals.crashes > Self.sweepSize / 2)
        #expect(totals.dropped > Self.sweepSize)
        #expect(totals.duplicated > Self.sweepSize / 4)
        #expect(totals.largestSiblings >= 2)
    }

    @Test("blind last-writer-wins writes through every node converge to one value under faults")
    func lastWriterWins() {
        var failed: [String] = []
        var acknowledged = 0
        let seeds = UInt64(1)...100
        let reports = Self.reports(
            seeds.map { SimulationConfiguration(seed: $0, lastWriterWins: true) })
        for report in reports {
            acknowledged += report.lastWriterWritesAcknowledged
            if !report.passed { failed.append(report.description) }
        }
        #expect(failed.isEmpty, "\(failed.count) seeds failed:\n\(failed.joined(separator: "\n"))")
        #expect(acknowledged > 100)
    }

    @Test("handoffs whose writes fail (rows, cursors, receipts, releases, drops) finish and lose nothing")
    func failingWrites() {
        var failed: [String] = []
        var failures: [HandoffWrite: Int] = [:]
        var handedOff = 0
        let seeds = UInt64(1)...40
        let reports = Self.reports(seeds.map { SimulationConfiguration(seed: $0, failingWrites: true) })
        for report in reports {
            failures.merge(report.handoffWritesFailed, uniquingKeysWith: +)
            handedOff += report.partitionsHandedOff
            if !report.passed { failed.append(report.description) }
        }
        let counts = failures.map { "\($0.value) \($0.key.rawValue)" }.sorted().joined(separator: ", ")
        print("failing writes: \(counts) failed; \(handedOff) partitions handed off")
        #expect(failed.isEmpty, "\(failed.count) seeds failed:\n\(failed.joined(separator: "\n"))")
        // Every kind of failure must really happen, and the handoffs still complete.
        for write in HandoffWrite.allCases { #expect(failures[write, default: 0] > 0, "\(write)") }
        #expect(handedOff > 40)
    }

    @Test("a run's replay command names every option it ran with")
    func replayFlags() {
        let configuration = SimulationConfiguration(
            seed: 7, keyCount: 5, faults: false, layoutChanges: false, lastWriterWins: true,
            failingWrites: true, injectedBug: .nothingIsStored)
        #expect(
            Simulation(configuration).run().replayCommand
                == "swift run Simulator --seed 7 --keys 5 --no-faults --no-layout-changes --last-writer-wins "
                + "--failing-writes --inject nothingIsStored --trace")
    }

    @Test("without faults, every operation succeeds")
    func faultFree() {
        let seeds = UInt64(1)...50
        let reports = Self.reports(seeds.map { SimulationConfiguration(seed: $0, faults: false) })
        for report in reports {
            #expect(report.passed, "\(report)")
            #expect(report.writesNotAcknowledged == 0 && report.readsFailed == 0, "\(report)")
        }
    }

    @Test("pinned regression seeds pass", arguments: SimulationTests.pinnedSeeds.map(\.seed))
    func pinned(seed: UInt64) {
        for faults in [true, false] {
            let report = Simulation(SimulationConfiguration(seed: seed, faults: faults)).run()
            #expect(report.passed, "\(report)")
        }
    }

    @Test("the same seed replays the same run")
    func determinism() {
        var traces: [[String]] = []
        for _ in 0..<2 {
            var lines: [String] = []
            let report = Simulation(SimulationConfiguration(seed: 42)) { lines.append($0) }.run()
            lines.append(report.description)
            traces.append(lines)
        }
        #expect(traces[0].count > 100)
        #expect(traces[0] == traces[1])
    }

    @Test("seeds run side by side report what they report one by one")
    func sideBySide() {
        let configurations = (UInt64(1)...4).map {
            SimulationConfiguration(seed: $0, failingWrites: $0 % 2 == 0)
        }
        let alone = configurations.map { Simulation($0).run().description }
        #expect(Self.reports(configurations).map(\.description) == alone)
    }

    @Test(
        "each checker catches the defect it exists for",
        arguments: SimulationConfiguration.InjectedBug.allCases)
    func checkersCatchInjectedBugs(bug: SimulationConfiguration.InjectedBug) {
        let expected =
            switch bug {
            case .replicasIgnoreStores: "did not converge"
            case .nothingIsStored: "is lost"
            case .mergeKeepsSupersededValues: "which was written with a context that saw it"
            case .amnesiaReusesIncarnation: "is lost"
            case .handoffsAreIgnored: "as delivered, but"
            case .conditionsAreIgnored: "beside versions its client never saw"
            case .incrementsLoseTheirSign: "no set of the"
            case .reapersIgnoreTheirCopy: "that superseded it was reaped"
            case .transfersSkipARow: "as received, but a row a page it took covered is not there"
            case .gossipPushesNothing: "metadata did not converge"
            case .releasesPushNothing: "as pushed, but owner"
            case .silentConnectionsStay: "still moves data"
            case .failedStoresCountAsStored: "as received, but a row a page it took covered is not there"
            }
        var caught = false
        // Amnesia shows only when the wiped node coordinates a write of a key whose old
        // dots it no longer holds, before repairs bring them back; since coordinators keep
        // hints for down replicas that is rare, so it takes more seeds than the others
        // (most are caught by seed 1). A reaper that agrees whatever it holds does harm
        // only when a replica still holds an older value once every hint holder (a member
        // that left included) has handed its hints back, which is rarer still: about one
        // seed in a few thousand, and it runs without layout changes. Which seeds catch
        // these two moves with every change to the random stream (batched progress records
        // moved them from 13 to 205 and from 1283 to 1664), so each search starts a little
        // before the first seed that caught it and runs 400: `Simulator --sweep 400 --inject
        // amnesiaReusesIncarnation` and `Simulator --sweep 6000 --no-layout-changes --inject
        // reapersIgnoreTheirCopy` find them again.
        let reaping = bug == .reapersIgnoreTheirCopy
        let failingWrites = bug == .failedStoresCountAsStored
        let first: UInt64 =
            switch bug {
            case .reapersIgnoreTheirCopy: 1650
            case .amnesiaReusesIncarnation: 190
            default: 1
            }
        let seeds = first...(first + 399)
        for seed in seeds {
            let report = Simulation(
                SimulationConfiguration(
                    seed: seed, layoutChanges: !reaping, failingWrites: failingWrites, injectedBug: bug)
            ).run()
            if report.violations.contains(where: { $0.contains(expected) }) {
                let flags =
                    (reaping ? " --no-layout-changes" : "") + (failingWrites ? " --failing-writes" : "")
                    + " --inject \(bug)"
                #expect(
                    report.description.contains("replay: swift run Simulator --seed \(seed)\(flags) --trace"))
                caught = true
                break
            }
        }
        #expect(caught, "no seed in \(seeds) caught \(bug)")
    }
}
