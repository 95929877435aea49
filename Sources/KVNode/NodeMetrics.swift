import CoreMetrics
import KVCluster
import KVCore
import NIOConcurrencyHelpers
import Synchronization

/// The node's metrics, through swift-metrics (whatever backend the process bootstrapped;
/// none in tests).
///
/// Client operations, quorum outcomes and storage latencies are recorded as they happen.
/// What the pure state machines count (hints, anti-entropy, reaping, transfers) they
/// keep themselves, since they may not call out; ``ClusterNode/refreshMetrics()`` carries
/// those over when the metrics are read, so a scrape sees them current.
final class NodeMetrics: Sendable {
    private let outcomes = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])
    /// The successes and timers of reads and writes, made once: they are counted on
    /// every request, without the lock and the label the rarer outcomes take.
    private let successes: [String: CoreMetrics.Counter]
    private let operationTimers: [String: CoreMetrics.Timer]
    /// The read's, also held apart for the read answered where it arrives, which takes
    /// them without hashing the operation's name (its whole time is a few microseconds).
    private let readSuccess: CoreMetrics.Counter
    private let readTimer: CoreMetrics.Timer
    /// One synced batch of writes: the engine write and its fsync.
    let writeBatch = CoreMetrics.Timer(label: "kv_storage_write_batch_duration_seconds")
    /// Writes per synced batch.
    let writeBatchSize = Recorder(label: "kv_storage_write_batch_commands", aggregate: true)
    /// A read that went to the engine on the thread pool (reads from memory do not).
    let storageRead = CoreMetrics.Timer(label: "kv_storage_read_duration_seconds")
    /// Row requests that arrived at a replica of their key, and at another node (which
    /// must forward a write, and fetch every replica of a read from afar): how well
    /// clients route.
    let requestsAtReplica = Atomic<Int64>(0)
    let requestsElsewhere = Atomic<Int64>(0)
    /// Reads the node answered from its own replica on the front end's thread, without
    /// a step of the coordinator (see ``ClusterNode/immediateGet(_:)``).
    let readsAnsweredLocally = Atomic<Int64>(0)
    /// Writes the node applied to its own replica without a step of the coordinator
    /// (see ``ClusterNode/startPut(_:value:options:completion:)``).
    let writesAppliedLocally = Atomic<Int64>(0)
    /// Read repairs: merges this node's reads sent to replicas that answered behind, and
    /// merges stored here because a read (this node's or another's) found this replica
    /// behind.
    let readRepairsSent = Atomic<Int64>(0)
    let readRepairsApplied = Atomic<Int64>(0)

    private struct Exported {
        var counters: [String: CoreMetrics.Counter] = [:]
        var gauges: [String: Gauge] = [:]
        var last: [String: Int64] = [:]
    }
    private let exported = NIOLockedValueBox(Exported())

    init() {
        let operations = ["read", "write"]
        successes = Dictionary(
            uniqueKeysWithValues: operations.map {
                (
                    $0,
                    CoreMetrics.Counter(
                        label: "kv_quorum_operations_total",
                        dimensions: [("operation", $0), ("outcome", "ok")])
                )
            })
        operationTimers = Dictionary(
            uniqueKeysWithValues: operations.map {
                ($0, CoreMetrics.Timer(label: "kv_quorum_duration_seconds", dimensions: [("operation", $0)]))
            })
        readSuccess = successes["read"]!
        readTimer = operationTimers["read"]!
    }

    /// Counts one successful read and its latency; the same series as
    /// `recordOperation("read", outcome: .read(…), …)`.
    func recordRead(nanoseconds: Int64) {
        readSuccess.increment()
        readTimer.recordNanoseconds(nanoseconds)
    }

    /// Counts one client operation's outcome and latency.
    func recordOperation(_ operation: String, outcome: OperationOutcome, nanoseconds: Int64) {
        let label: String
        switch outcome {
        case .read, .written:
            if let counter = successes[operation] {
                counter.increment()
                operationTimers[operation]?.recordNanoseconds(nanoseconds)
                return
            }
            label = "ok"
        case .failed(let error): label = error.code.rawValue
        }
        let key = "\(operation) \(label)"
        let counter = outcomes.withLockedValue { outcomes in
            if let known = outcomes[key] { return known }
            let made = CoreMetrics.Counter(
                label: "kv_quorum_operations_total",
                dimensions: [("operation", operation), ("outcome", label)])
            outcomes[key] = made
            return made
        }
        counter.increment()
        operationTimers[operation]?.recordNanoseconds(nanoseconds)
    }

    /// The node's own counts that only go up (the name of one of ``gaugeNames`` is a
    /// level instead): exported as `kv_<name>_total` counters, raised by what they grew
    /// since the last export.
    static let gaugeNames: Set<String> = [
        "anti_entropy.enabled", "anti_entropy.trees_ready", "anti_entropy.keys_in_flight",
        "anti_entropy.divergent_partitions_last_round", "tombstones.held", "hints.pending",
    ]

    /// Carries the machines' counters (`maintenanceCounters()` names) and levels over.
    func export(_ values: [String: Int64]) {
        exported.withLockedValue { exported in
            for (name, value) in values {
                var dimensions: [(String, String)] = []
                var base = name
                // Per-peer counts: `maintenance.timeouts.<node>` is labelled by node, under a
                // name of its own (one name, one set of labels).
                if name.hasPrefix("maintenance.timeouts.") {
                    base = "maintenance.peer_timeouts"
                    dimensions = [("peer", String(name.dropFirst("maintenance.timeouts.".count)))]
                }
                let metric = "kv_" + base.replacingDots
                if Self.gaugeNames.contains(base) {
                    Self.gauge(name, metric, dimensions, in: &exported).record(value)
                    continue
                }
                let counter =
                    exported.counters[name]
                    ?? {
                        let made = CoreMetrics.Counter(label: metric + "_total", dimensions: dimensions)
                        exported.counters[name] = made
                        return made
                    }()
                let grown = value - (exported.last[name] ?? 0)
                if grown > 0 { counter.increment(by: grown) }
                exported.last[name] = value
            }
        }
    }

    /// Sets a level by name and labels (member counts by state, peer connections).
    func level(_ metric: String, _ dimensions: [(String, String)], _ value: Int) {
        let key = metric + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        exported.withLockedValue { Self.gauge(key, metric, dimensions, in: &$0).record(value) }
    }

    /// The gauge kept under `key`, made on first use.
    private static func gauge(
        _ key: String, _ metric: String, _ dimensions: [(String, String)], in exported: inout Exported
    ) -> Gauge {
        if let known = exported.gauges[key] { return known }
        let made = Gauge(label: metric, dimensions: dimensions)
        exported.gauges[key] = made
        return made
    }
}

extension String {
    fileprivate var replacingDots: String { String(map { $0 == "." ? "_" : $0 }) }
}
