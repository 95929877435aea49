import FoundationEssentials
import KVCore
import Synchronization

/// How a ``ClusterClient`` connects, waits and retries.
public struct ClusterClientOptions: Sendable {
    /// Token, TLS and CA, as for one connection (an `https://` seed turns TLS on).
    public var http: HTTPClientOptions
    /// The most connections open to one node; each carries one request at a time.
    public var connectionsPerNode: Int
    /// How long a request may wait for its answer before its connection is dropped and
    /// the request is retried (a write with its request id, so it is not applied twice).
    public var requestTimeout: Duration
    /// How many times a request is tried in all, over the nodes that can serve it.
    public var attempts: Int
    /// The pause before the second try; each further try waits one more of it.
    public var retryBackoff: Duration
    /// How often the layout is asked for again, so layout changes are followed.
    public var topologyRefreshInterval: Duration
    /// How long a node that could not be reached is tried only after the others.
    public var downNodeBackoff: Duration

    /// Creates options; the defaults suit a cluster on a local network.
    public init(
        http: HTTPClientOptions = HTTPClientOptions(), connectionsPerNode: Int = 16,
        requestTimeout: Duration = .seconds(30), attempts: Int = 4,
        retryBackoff: Duration = .milliseconds(100),
        topologyRefreshInterval: Duration = .seconds(5), downNodeBackoff: Duration = .seconds(2)
    ) {
        self.http = http
        self.connectionsPerNode = connectionsPerNode
        self.requestTimeout = requestTimeout
        self.attempts = attempts
        self.retryBackoff = retryBackoff
        self.topologyRefreshInterval = topologyRefreshInterval
        self.downNodeBackoff = downNodeBackoff
    }
}

/// A cluster-aware client of the store: the library applications depend on.
///
/// It learns the layout from any node and sends each row request straight to a
/// replica of its key, so no node has to forward it (writes go to the first replica
/// that is up, as a node would forward them; reads spread over the replicas). It asks
/// for the layout again every ``ClusterClientOptions/topologyRefreshInterval`` and
/// whenever a node cannot be reached, and a request that fails because a node is down
/// goes to the next one that can serve it. Table and cluster requests go to any node.
///
/// Every write carries a request id (the caller's, or a fresh one), so a write retried
/// after a timeout or a lost connection is not applied twice by the replica that
/// coordinated it. A write is retried on the same node when the cluster answered that
/// its outcome is unknown (`write.indeterminate`), and on another node when its node
/// cannot be reached.
///
/// ```swift
/// let client = try await ClusterClient(seeds: ["http://127.0.0.1:7700"])
/// let users = try TableName(namespace: "app", table: "users")
/// try await client.put(RowKey(table: users, parts: [.string("ada")]), value: RowValue(bytes: Array("{}".utf8)))
/// ```
///
/// It conforms to ``KeyValueService``; the table API in the style of kvlayer
/// (``setUpNamespace(_:tables:defaults:)``, ``get(_:keys:options:)``, ``scan(_:range:options:)``…)
/// and ``update(_:keys:attempts:_:)`` build on it.
public final class ClusterClient: KeyValueService {
    /// What the client did, for tests and benchmarks.
    public struct Statistics: Hashable, Sendable {
        /// Row requests sent to a replica of their key.
        public var toReplica: Int
        /// Row requests sent to a node that is not a replica of their key (every replica
        /// was down, or the layout was not known yet).
        public var elsewhere: Int
        /// Tries after the first.
        public var retries: Int
        /// Times the layout was learned.
        public var topologyRefreshes: Int
    }

    private struct State {
        var topology: ClusterTopology {
            didSet { memberURLs = topology.memberURLs }
        }
        /// The topology's member URLs, kept so a request does not sort them again.
        var memberURLs: [String] = []
        var connections: [String: NodeConnections] = [:]
        var downUntil: [String: ContinuousClock.Instant] = [:]
        var turn: UInt64 = 0
        var refreshing = false
        var closed = false
        var statistics = Statistics(toReplica: 0, elsewhere: 0, retries: 0, topologyRefreshes: 0)
    }

    /// How a request may be retried once it was sent.
    enum Retry {
        /// A read: any node may answer it again.
        case read
        /// A write with a request id: again on the same node when the cluster says its
        /// outcome is unknown, on another when its node is unreachable.
        case write
        /// Not once it may have been sent (a streamed body is consumed as it goes).
        case onlyIfNotSent
    }

    private let seeds: [String]
    private let scheme: String
    /// The client's options.
    public let options: ClusterClientOptions
    private let state: Mutex<State>
    private let schemas = SchemaCache()
    private let refresher: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Connects to a cluster through `seeds` (node URLs such as `http://127.0.0.1:7700`),
    /// learning its layout from the first that answers.
    public init(seeds: [String], options: ClusterClientOptions = ClusterClientOptions()) async throws(KVError)
    {
        guard let first = seeds.first else {
            throw KVError(.invalidRequest, "a cluster client needs at least one node URL")
        }
        for seed in seeds { _ = try HTTPKeyValueService.parse(url: seed) }
        self.seeds = seeds
        scheme = first.hasPrefix("https://") ? "https" : "http"
        var options = options
        options.http.requestTimeout = options.requestTimeout
        options.attempts = max(1, options.attempts)
        self.options = options
        state = Mutex(State(topology: ClusterTopology(layoutVersion: 0, partitions: [], addresses: [:])))
        try await refreshTopology()
        let interval = options.topologyRefreshInterval
        refresher.withLock {
            $0 = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    guard let self else { return }
                    try? await self.refreshTopology()
                }
            }
        }
    }

    /// Stops following the layout and closes every connection.
    public func close() async {
        refresher.withLock { $0?.cancel() }
        let pools = state.withLock { state in
            state.closed = true
            return Array(state.connections.values)
        }
        for pool in pools { await pool.close() }
    }

    /// The cluster as last learned.
    public var topology: ClusterTopology { state.withLock { $0.topology } }

    /// What the client did so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Asks a node for the layout and the members' addresses now. A view older than the
    /// one held (a node that has not heard of a change yet) is ignored.
    public func refreshTopology() async throws(KVError) {
        var lastError: KVError?
        let known = candidates(preferred: [])
        for url in known + seeds.filter({ !known.contains($0) }) {
            do {
                let (layout, status) = try await attempt(url) { connection async throws(KVError) in
                    (try await connection.clusterLayout(), try await connection.clusterStatus())
                }
                let learned = ClusterTopology(layout: layout, status: status, scheme: scheme)
                let seeds = seeds
                let departed = state.withLock { state -> [NodeConnections] in
                    state.statistics.topologyRefreshes += 1
                    guard
                        learned.layoutVersion >= state.topology.layoutVersion
                            || state.topology.partitions.isEmpty
                    else { return [] }
                    state.topology = learned
                    // Connections to nodes that left the cluster are closed.
                    let known = Set(learned.addresses.values).union(seeds)
                    let gone = state.connections.keys.filter { !known.contains($0) }
                    return gone.compactMap { state.connections.removeValue(forKey: $0) }
                }
                for pool in departed { await pool.close() }
                return
            } catch {
                lastError = error
            }
        }
        throw lastError ?? KVError(.unavailable, "no node of the cluster answered")
    }

    // MARK: - Routing

    func forgetSchema(of table: TableName) { schemas.set(table, nil) }

    func forgetSchemas(in namespace: String) { schemas.removeNamespace(namespace) }

    /// The key's table schema, from the cache or any node.
    func schema(of table: TableName) async throws(KVError) -> KeySchema {
        if let schema = schemas.get(table) { return schema }
        let descriptor = try await perform(candidates(preferred: []), .read) {
            connection async throws(KVError) in
            try await connection.table(table)
        }
        schemas.set(table, descriptor.schema)
        return descriptor.schema
    }

    /// The nodes to try for a request on `key`, best first: its replicas that are up
    /// (the first for a write, in turn for a read), then every other node.
    func candidates(for key: RowKey, write: Bool) async throws(KVError) -> [String] {
        let schema = try await schema(of: key.table)
        return state.withLock { state in
            let replicas = state.topology.replicas(of: key, schema: schema).compactMap {
                state.topology.addresses[$0]
            }
            var ordered = replicas
            if !write, ordered.count > 1 {
                state.turn &+= 1
                let start = Int(state.turn % UInt64(ordered.count))
                ordered = Array(ordered[start...] + ordered[..<start])
            }
            let result =
                Self.order(ordered, state: state)
                + Self.order(Self.others(state, excluding: ordered), state: state)
            if let first = result.first, replicas.contains(first) {
                state.statistics.toReplica += 1
            } else {
                state.statistics.elsewhere += 1
            }
            return result
        }
    }

    /// Every known node, `preferred` first, nodes believed down last.
    func candidates(preferred: [String]) -> [String] {
        state.withLock { state in
            state.turn &+= 1
            var others = Self.others(state, excluding: preferred)
            if others.count > 1 {
                let start = Int(state.turn % UInt64(others.count))
                others = Array(others[start...] + others[..<start])
            }
            return Self.order(preferred, state: state) + Self.order(others, state: state)
        }
    }

    private static func others(_ state: State, excluding: [String]) -> [String] {
        excluding.isEmpty ? state.memberURLs : state.memberURLs.filter { !excluding.contains($0) }
    }

    /// `urls` with the ones believed down moved to the end (they are still tried last:
    /// a node back up is noticed by the request that reaches it).
    private static func order(_ urls: [String], state: State) -> [String] {
        let now = ContinuousClock.now
        let up = urls.filter { (state.downUntil[$0] ?? now) <= now }
        return up + urls.filter { !up.contains($0) }
    }

    private func connections(to url: String) throws(KVError) -> NodeConnections {
        try state.withLock { state throws(KVError) in
            guard !state.closed else { throw KVError(.invalidRequest, "the client is closed") }
            if let pool = state.connections[url] { return pool }
            let pool = try NodeConnections(
                url: url, options: options.http, limit: options.connectionsPerNode,
                waitLimit: options.requestTimeout, schemas: schemas)
            state.connections[url] = pool
            return pool
        }
    }

    private func markDown(_ url: String) {
        let until = ContinuousClock.now + options.downNodeBackoff
        let refresh = state.withLock { state in
            state.downUntil[url] = until
            defer { state.refreshing = true }
            return !state.refreshing && !state.closed
        }
        guard refresh else { return }
        // The layout may have changed (a node left): learn it again, off this request.
        Task { [weak self] in
            try? await self?.refreshTopology()
            self?.state.withLock { $0.refreshing = false }
        }
    }

    // MARK: - Sending

    /// One try of `body` on one connection to `url`.
    private func attempt<Result: Sendable>(
        _ url: String, _ body: (HTTPKeyValueService) async throws(KVError) -> Result
    ) async throws(KVError) -> Result {
        let pool = try connections(to: url)
        let connection: HTTPKeyValueService
        do {
            connection = try await pool.acquire()
        } catch {
            // A node whose connections all stayed busy is slow, not down.
            if error.underlying as? TransportFailure != .busy { markDown(url) }
            throw error
        }
        do {
            let result = try await body(connection)
            await pool.release(connection, reusable: true)
            return result
        } catch {
            let transport = error.underlying is TransportFailure
            await pool.release(connection, reusable: !transport)
            if transport { markDown(url) }
            throw error
        }
    }

    /// Runs `body` against the nodes in `urls` until one answers, retrying as `retry`
    /// allows, at most ``ClusterClientOptions/attempts`` times.
    func perform<Result: Sendable>(
        _ urls: [String], _ retry: Retry, _ body: (HTTPKeyValueService) async throws(KVError) -> Result
    ) async throws(KVError) -> Result {
        var urls = urls
        if urls.isEmpty { urls = seeds }
        var index = 0
        var lastError: KVError?
        for tried in 0..<options.attempts {
            if tried > 0 {
                state.withLock { $0.statistics.retries += 1 }
                try? await Task.sleep(for: options.retryBackoff * tried)
            }
            let url = urls[index % urls.count]
            do {
                return try await attempt(url, body)
            } catch {
                lastError = error
                switch Self.next(after: error, retry) {
                case .fail: throw error
                case .sameNode: continue
                case .nextNode: index += 1
                }
            }
        }
        throw lastError ?? KVError(.unavailable, "no node of the cluster is known")
    }

    enum Step { case fail, sameNode, nextNode }

    /// What to do after a try failed with `error`.
    static func next(after error: KVError, _ retry: Retry) -> Step {
        switch error.underlying as? TransportFailure {
        case .notConnected, .busy: return .nextNode
        case .lost: return retry == .onlyIfNotSent ? .fail : .nextNode
        case nil: break
        }
        // A request whose body was read as it was sent cannot go again.
        guard retry != .onlyIfNotSent else { return .fail }
        switch error.code {
        case .unavailable, .tooManyConnections:
            // The node refused before doing anything (starting, full).
            return .nextNode
        case .writeIndeterminate:
            // The replica that coordinated it finds the request id if it stored it; a
            // node that stopped mid-request answers it too, and a read goes elsewhere.
            return retry == .write ? .sameNode : .nextNode
        case .quorumUnavailable:
            switch retry {
            case .read: return .nextNode
            case .write: return .sameNode
            case .onlyIfNotSent: return .fail
            }
        default: return .fail
        }
    }

    /// `options` with a request id, so that retries of the write are recognised.
    static func identified(_ options: WriteOptions) -> WriteOptions {
        guard options.requestID == nil else { return options }
        var options = options
        options.requestID = UUID().uuidString.lowercased()
        return options
    }
}
