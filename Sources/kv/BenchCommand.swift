import ArgumentParser
import Foundation
import Histogram
import KVClient
import KVCluster
import KVCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `kv bench`: a closed-loop load generator. Each client keeps one request in flight on
/// its own connection; latencies go into HDR histograms.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load a cluster with gets and puts and report throughput and latency percentiles.",
        discussion: """
            Clients are spread over the --url nodes in turn. Before measuring, every key is \
            written once (unless --no-preload), so gets find values. A put carries the \
            context of the last answer for its key, as a read-modify-write would, so \
            siblings arise only from truly concurrent writes. Latency is measured \
            from sending a request to its complete answer, in microseconds, and reported as \
            p50, p99, p99.9 and max per operation. Failed operations are counted by error \
            code and not timed; a request unanswered for 30 s fails and its connection is \
            closed. --output writes the report as JSON.
            """)

    @Option(help: "Node URLs, comma-separated (default http://127.0.0.1:7700, or $KV_URL).") var url: String?
    @Option(help: "Concurrent clients, one connection each (default 16).") var clients = 16
    @Option(help: "Seconds to measure (default 10).") var duration = 10.0
    @Option(help: "Fraction of operations that are gets, 0 to 1 (default 0.5).") var getRatio = 0.5
    @Option(help: "Value size in bytes (default 256).") var valueSize = 256
    @Option(help: "Number of distinct keys (default 10000).") var keys = 10_000
    @Option(help: "Key distribution: uniform or zipf (default uniform).") var distribution = "uniform"
    @Option(help: "Zipf exponent (default 0.99).") var zipfExponent = 0.99
    @Option(help: "Table to use, NAMESPACE/TABLE (created if missing; default bench/kv).") var table =
        "bench/kv"
    @Option(help: "Random seed of the key choices (default 1).") var seed: UInt64 = 1
    @Option(
        help: """
            How requests find a node: 'node' gives each client one connection to a --url node in turn; \
            'direct' sends each request to a replica of its key, from the layout the cluster-aware \
            client learns (reads take the replicas in turn, puts carry request ids; a failed request \
            is counted, not retried elsewhere) (default node).
            """)
    var routing = "node"
    @Option(
        help: """
            Threads that run the clients' connections (default 1, as wrk -t1): on a machine \
            shared with the nodes, more threads wake more often for fewer answers each.
            """)
    var threads = 1
    @Flag(help: "Do not write every key before measuring.") var noPreload = false
    @Flag(help: "Do not draw the progress bar.") var noProgress = false
    @Option(help: "Write the report as JSON to this file ('-' for standard output).") var output: String?
    @OptionGroup var quorum: QuorumFlags

    func validate() throws {
        guard (1...10_000).contains(clients) else { throw ValidationError("--clients must be 1 to 10000") }
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1 to 256") }
        guard duration > 0, duration <= 86_400 else {
            throw ValidationError("--duration must be 0 to 86400 s")
        }
        guard (0...1).contains(getRatio) else { throw ValidationError("--get-ratio must be 0 to 1") }
        guard (0...(16 << 20)).contains(valueSize) else {
            throw ValidationError("--value-size must be 0 to 16 MiB")
        }
        guard (1...10_000_000).contains(keys) else { throw ValidationError("--keys must be 1 to 10000000") }
        guard ["uniform", "zipf"].contains(distribution) else {
            throw ValidationError("--distribution must be uniform or zipf")
        }
        guard ["node", "direct"].contains(routing) else {
            throw ValidationError("--routing must be node or direct")
        }
    }

    func run() async throws {
        let urls = (url ?? ProcessInfo.processInfo.environment["KV_URL"] ?? "http://127.0.0.1:7700")
            .split(separator: ",").map(String.init)
        let name = try parseTable(table)
        let keyDistribution: KeyDistribution =
            distribution == "zipf"
            ? .zipf(count: keys, exponent: zipfExponent) : .uniform(count: keys)
        let value = RowValue(bytes: (0..<valueSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        let progress = !noProgress && isatty(STDERR_FILENO) == 1

        // The table and the preload go through the client library; the measured load
        // then runs on connections of its own (see below).
        var connections: [any KeyValueService] = []
        let httpOptions = HTTPClientOptions.environment(ProcessInfo.processInfo.environment)
        func closeAll() async {
            for connection in connections {
                if let single = connection as? HTTPKeyValueService { await single.close() }
            }
            if let cluster = connections.first as? ClusterClient { await cluster.close() }
        }
        do {
            if routing == "direct" {
                // One client for all: it keeps a connection per request in flight to each
                // node, so each client task has one to every node.
                let cluster = try await ClusterClient(
                    seeds: urls, options: ClusterClientOptions(http: httpOptions, connectionsPerNode: clients)
                )
                connections = Array(repeating: cluster, count: clients)
            } else {
                for index in 0..<clients {
                    connections.append(
                        try await HTTPKeyValueService(url: urls[index % urls.count], options: httpOptions))
                }
            }
            _ = try await connections[0].createTable(
                TableDescriptor(name: name, schema: try KeySchema([.int64], partitionKeyLength: 1)))
        } catch {
            await closeAll()
            FileHandle.standardError.write(Data("error: \(error.code.rawValue): \(error.message)\n".utf8))
            throw ExitCode(1)
        }
        let writeOptions = WriteOptions(quorum: quorum.overrides)
        let readOptions = ReadOptions(quorum: quorum.overrides)
        func key(_ number: Int) -> RowKey { RowKey(table: name, parts: [.int64(Int64(number))]) }

        if !noPreload {
            let next = NIOLockedValueBox(0)
            let failures = NIOLockedValueBox(0)
            await withTaskGroup(of: Void.self) { group in
                for connection in connections {
                    group.addTask {
                        while true {
                            let number = next.withLockedValue { value -> Int? in
                                defer { value += 1 }
                                return value < keys ? value : nil
                            }
                            guard let number else { return }
                            do {
                                _ = try await connection.put(key(number), value: value, options: writeOptions)
                            } catch {
                                failures.withLockedValue { $0 += 1 }
                            }
                        }
                    }
                }
            }
            let failed = failures.withLockedValue { $0 }
            FileHandle.standardError.write(
                Data(
                    "preloaded \(keys - failed) of \(keys) keys\(failed > 0 ? " (\(failed) failed)" : "")\n"
                        .utf8))
        }

        // Puts carry the context of the key's last answer, as an application that reads
        // before it writes would: blind writes would pile up siblings and measure those.
        // Clients run on event loops, one request in flight per connection, so the
        // generator costs about what wrk does and measures the nodes. Direct routing
        // sends each step to a replica of its key, as the cluster-aware client would,
        // from the layout that client learned, with a request id on each put as it
        // sends them.
        var loadURLs = urls
        var route: (@Sendable (LoadStep, UInt64) -> Int)?
        if routing == "direct" {
            guard let cluster = connections.first as? ClusterClient,
                let direct = Self.directRoute(cluster.topology, table: name)
            else {
                await closeAll()
                FileHandle.standardError.write(
                    Data("error: the cluster-aware client learned no layout\n".utf8))
                throw ExitCode(1)
            }
            (loadURLs, route) = direct
        }
        await closeAll()
        connections = []
        let counters = NIOLockedValueBox(LiveCounters())
        let timeline = Timeline()
        let total = NIOLockedValueBox(ClientResult())
        let start = NIODeadline.now()
        let end = start + .nanoseconds(Int64(duration * 1e9))
        let drawer = Task {
            guard progress else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                let snapshot = counters.withLockedValue { $0 }
                Self.drawProgress(
                    elapsed: .nanoseconds((NIODeadline.now() - start).nanoseconds), total: duration,
                    counters: snapshot)
            }
        }
        let (getRatio, seed) = (getRatio, seed)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var failure: KVError?
        do {
            try await LoadGenerator.run(
                urls: loadURLs, clients: clients,
                target: LoadTarget(
                    table: name, value: value.bytes, readQuorum: readOptions.quorum,
                    writeQuorum: writeOptions.quorum, options: httpOptions,
                    identifiesWrites: routing == "direct"),
                contexts: LoadContexts(), group: group, route: route
            ) { index in
                BenchScript(
                    random: SeededRandom(seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15),
                    keys: keyDistribution, getRatio: getRatio, start: start, end: end,
                    timeline: timeline, counters: counters, total: total)
            }
        } catch {
            failure = error
        }
        // The run lasts from the start to its last answer: connections are made inside
        // it (a few milliseconds), the event loops' shutdown is not.
        let elapsed = NIODeadline.now() - start
        drawer.cancel()
        try? await group.shutdownGracefully()
        if let failure {
            FileHandle.standardError.write(Data("error: \(failure.code.rawValue): \(failure.message)\n".utf8))
            throw ExitCode(1)
        }
        let results = total.withLockedValue { $0 }
        if progress { FileHandle.standardError.write(Data("\n".utf8)) }

        let seconds = Double(elapsed.nanoseconds) / 1e9
        let report = BenchReport(
            clients: clients, routing: routing, seconds: seconds, getRatio: getRatio, valueSize: valueSize,
            keys: keys,
            distribution: distribution, quorum: Dictionary(uniqueKeysWithValues: quorum.overrides.named),
            gets: LatencySummary(results.gets, seconds: seconds),
            puts: LatencySummary(results.puts, seconds: seconds),
            errors: results.errors,
            timeline: timeline.summaries())
        print(report.text)
        if let output {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(report)
            if output == "-" {
                FileHandle.standardOutput.write(data + Data("\n".utf8))
            } else {
                try data.write(to: URL(fileURLWithPath: output))
            }
        }
    }

    /// The nodes of `topology` and, for each step, the one to send it to: a write to
    /// its key's first replica, as the cluster-aware client sends it; a read to its
    /// replicas in turn, as that client spreads reads. `nil` when the client has learned
    /// no member.
    static func directRoute(_ topology: ClusterTopology, table: TableName) -> (
        [String], @Sendable (LoadStep, UInt64) -> Int
    )? {
        let urls = topology.memberURLs
        let replicas: [[Int]] = topology.partitions.map { nodes in
            nodes.compactMap { node in topology.addresses[node].flatMap { urls.firstIndex(of: $0) } }
        }
        guard !urls.isEmpty, let schema = try? KeySchema([.int64], partitionKeyLength: 1) else { return nil }
        return (
            urls,
            { step, turn in
                let key = RowKey(table: table, parts: [.int64(Int64(step.key))])
                guard let partition = topology.partition(of: key, schema: schema),
                    case let nodes = replicas[Int(partition.rawValue)], !nodes.isEmpty
                else { return 0 }
                return step.isGet ? nodes[Int(turn % UInt64(nodes.count))] : nodes[0]
            }
        )
    }

    static func drawProgress(elapsed: Duration, total: Double, counters: LiveCounters) {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let fraction = min(1, seconds / total)
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let rate = seconds > 0 ? Double(counters.operations) / seconds : 0
        let line = String(
            format: "\r[%@] %5.1fs/%.0fs  %d ops  %.0f ops/s  %d errors", bar, seconds, total,
            counters.operations, rate,
            counters.errors)
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// One client's steps and measurements, on its connections' event loop: a seeded
/// choice of key and operation until the run's end, latencies into the client's own
/// histograms, which go into `total` when the client is done.
final class BenchScript: LoadScript {
    private var random: SeededRandom
    private let keys: KeyDistribution
    private let getRatio: Double
    private let start: NIODeadline
    private let end: NIODeadline
    private let timeline: Timeline
    private let counters: NIOLockedValueBox<LiveCounters>
    private let total: NIOLockedValueBox<ClientResult>
    private var result = ClientResult()

    init(
        random: SeededRandom, keys: KeyDistribution, getRatio: Double, start: NIODeadline, end: NIODeadline,
        timeline: Timeline, counters: NIOLockedValueBox<LiveCounters>, total: NIOLockedValueBox<ClientResult>
    ) {
        self.random = random
        self.keys = keys
        self.getRatio = getRatio
        self.start = start
        self.end = end
        self.timeline = timeline
        self.counters = counters
        self.total = total
    }

    func next(now: NIODeadline) -> LoadStep? {
        guard now < end else {
            let result = result
            total.withLockedValue { $0.merge(result) }
            return nil
        }
        let key = keys.next(using: &random)
        return LoadStep(key: key, isGet: Double.random(in: 0..<1, using: &random) < getRatio)
    }

    func ended(_ step: LoadStep, _ outcome: LoadOutcome, latency: TimeAmount, now: NIODeadline) {
        switch outcome {
        case .succeeded:
            let micros = UInt64(max(1, latency.nanoseconds / 1000))
            if step.isGet { result.gets.record(micros) } else { result.puts.record(micros) }
            timeline.record(micros, at: .nanoseconds((now - start).nanoseconds))
            counters.withLockedValue { $0.operations += 1 }
        case .failed(let code):
            result.errors[code.rawValue, default: 0] += 1
            counters.withLockedValue { $0.errors += 1 }
        }
    }
}

/// What the progress bar shows.
struct LiveCounters: Sendable {
    var operations = 0
    var errors = 0
}

/// One client's measurements.
struct ClientResult: Sendable {
    var gets = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var puts = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var errors: [String: Int] = [:]

    mutating func merge(_ other: ClientResult) {
        gets.add(other.gets)
        puts.add(other.puts)
        errors.merge(other.errors, uniquingKeysWith: +)
    }
}

/// Throughput and latency second by second, shared by every client: one histogram for
/// the second in progress, summarized when an operation finishes in a later one, so a
/// long run keeps one summary per second and not a histogram.
final class Timeline: Sendable {
    private struct State {
        var second = 0
        var current = Timeline.histogram()
        var finished: [IntervalSummary] = []
    }
    private let state = NIOLockedValueBox(State())

    /// Two significant digits: enough for a p99 over time.
    private static func histogram() -> Histogram<UInt64> {
        Histogram(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .two)
    }

    /// Records an operation of `micros` that finished `offset` into the run.
    func record(_ micros: UInt64, at offset: Duration) {
        let second = Int(max(0, offset.components.seconds))
        state.withLockedValue { state in
            while second > state.second {
                state.finished.append(IntervalSummary(second: state.second, state.current))
                state.current.reset()
                state.second += 1
            }
            state.current.record(micros)
        }
    }

    /// Every second's summary, the one in progress last.
    func summaries() -> [IntervalSummary] {
        state.withLockedValue { state in
            state.current.totalCount > 0
                ? state.finished + [IntervalSummary(second: state.second, state.current)] : state.finished
        }
    }
}

/// One second of the run: how many operations finished in it, and their latencies
/// (gets and puts together), in microseconds.
struct IntervalSummary: Codable, Sendable {
    var second: Int
    var operations: UInt64
    var p50: UInt64
    var p99: UInt64

    init(second: Int, _ histogram: Histogram<UInt64>) {
        self.second = second
        operations = histogram.totalCount
        p50 = histogram.totalCount > 0 ? histogram.valueAtPercentile(50) : 0
        p99 = histogram.totalCount > 0 ? histogram.valueAtPercentile(99) : 0
    }
}

/// One point of a latency distribution: the latency in microseconds that `percentile`
/// per cent of the operations did not exceed.
struct PercentilePoint: Codable, Sendable {
    var percentile: Double
    var microseconds: UInt64
}

/// Latencies of one operation kind, in microseconds.
struct LatencySummary: Codable, Sendable {
    var count: UInt64
    var perSecond: Double
    var p50: UInt64
    var p99: UInt64
    var p999: UInt64
    var max: UInt64
    var mean: Double
    /// The whole distribution, for percentile plots: 100 × (1 − 10^(−k/4)) for k = 0…20
    /// (0, 43.8, 68.4, … 99, … 99.9, … 99.999), then the maximum.
    var percentiles: [PercentilePoint]

    init(_ histogram: Histogram<UInt64>, seconds: Double) {
        count = histogram.totalCount
        perSecond = seconds > 0 ? Double(histogram.totalCount) / seconds : 0
        p50 = histogram.totalCount > 0 ? histogram.valueAtPercentile(50) : 0
        p99 = histogram.totalCount > 0 ? histogram.valueAtPercentile(99) : 0
        p999 = histogram.totalCount > 0 ? histogram.valueAtPercentile(99.9) : 0
        max = histogram.totalCount > 0 ? histogram.max : 0
        mean = histogram.totalCount > 0 ? histogram.mean : 0
        percentiles =
            histogram.totalCount == 0
            ? []
            : (0...20).map { step in
                let percentile = 100 * (1 - pow(10, -Double(step) / 4))
                return PercentilePoint(
                    percentile: percentile, microseconds: histogram.valueAtPercentile(percentile))
            } + [PercentilePoint(percentile: 100, microseconds: histogram.max)]
    }

    enum CodingKeys: String, CodingKey {
        case count, p50, p99, max, mean, percentiles
        case perSecond = "per_second"
        case p999 = "p99_9"
    }
}

/// The result of a run.
struct BenchReport: Codable, Sendable {
    var clients: Int
    /// `node` or `direct` (see `--routing`).
    var routing: String
    var seconds: Double
    var getRatio: Double
    var valueSize: Int
    var keys: Int
    var distribution: String
    var quorum: [String: Int]
    var gets: LatencySummary
    var puts: LatencySummary
    var errors: [String: Int]
    /// Throughput and latency second by second.
    var timeline: [IntervalSummary]

    enum CodingKeys: String, CodingKey {
        case clients, routing, seconds, keys, distribution, quorum, gets, puts, errors, timeline
        case getRatio = "get_ratio"
        case valueSize = "value_size"
    }

    var text: String {
        var lines = [
            String(
                format: "%d clients (%@ routing), %.1f s, %.0f%% gets, %d-byte values, %d %@ keys", clients,
                routing, seconds, getRatio * 100, valueSize, keys, distribution),
            "op     count      ops/s     p50 µs   p99 µs   p99.9 µs   max µs",
        ]
        for (name, summary) in [("get", gets), ("put", puts)] where summary.count > 0 {
            lines.append(
                String(
                    format: "%@  %9llu  %9.0f  %9llu  %7llu  %9llu  %7llu",
                    name.padding(toLength: 4, withPad: " ", startingAt: 0),
                    summary.count, summary.perSecond, summary.p50, summary.p99, summary.p999, summary.max))
        }
        lines.append(String(format: "total  %.0f ops/s", gets.perSecond + puts.perSecond))
        if !errors.isEmpty {
            lines.append(
                "errors: "
                    + errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(
                        separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}

extension Duration {
    /// The duration in whole microseconds.
    var microseconds: Int64 {
        components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
    }
}
