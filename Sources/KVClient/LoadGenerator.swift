import KVCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// One operation of a closed-loop load: a get or a put of the row whose one `int64` key
/// part is `key`.
public struct LoadStep: Sendable, Hashable {
    /// The key's number.
    public var key: Int
    /// A get when true, a put otherwise.
    public var isGet: Bool

    /// Creates a step.
    public init(key: Int, isGet: Bool) {
        self.key = key
        self.isGet = isGet
    }
}

/// How a load step ended.
public enum LoadOutcome: Sendable, Hashable {
    /// A get answered `200`, `300` or `404 row.not_found`; a put answered `204`.
    case succeeded
    /// Any other answer, by its error code; `server.unavailable` when the connection
    /// failed before the answer was complete.
    case failed(KVError.Code)
}

/// Chooses one load client's steps and records how they ended.
///
/// Each client has a script of its own, made and called only on its connection's event
/// loop, so a script needs no lock.
public protocol LoadScript: AnyObject {
    /// The next step, or `nil` when the client is done.
    func next(now: NIODeadline) -> LoadStep?
    /// A step ended `latency` after its request was written.
    func ended(_ step: LoadStep, _ outcome: LoadOutcome, latency: TimeAmount, now: NIODeadline)
}

/// The causal context of each key's last answer, shared by every client: a put carries
/// it, as a read-modify-write would, so that siblings arise only from truly concurrent
/// writes.
public final class LoadContexts: Sendable {
    /// Only keys answered so far: a load over millions of keys that touches few holds few.
    private let contexts = Mutex<[Int: String]>([:])

    /// An empty table.
    public init() {}

    func context(of key: Int) -> String? {
        contexts.withLock { $0[key] }
    }

    func record(_ context: String, for key: Int) {
        contexts.withLock { $0[key] = context }
    }
}

/// What every request of a load shares: the table, the value a put writes, quorum
/// overrides and how to reach the nodes.
public struct LoadTarget: Sendable {
    /// The table; its key is one `int64` part.
    public var table: TableName
    /// The bytes every put writes.
    public var value: [UInt8]
    /// Overrides sent with every get.
    public var readQuorum: QuorumOverrides
    /// Overrides sent with every put.
    public var writeQuorum: QuorumOverrides
    /// Token, TLS and CA.
    public var options: HTTPClientOptions
    /// How long a request may wait for its answer before its connection is closed and
    /// the step fails as `server.unavailable` (checked once a second, or more often for
    /// a shorter limit, down to every 10 ms).
    public var requestTimeout: TimeAmount
    /// Whether each put carries a request id of its own, as the cluster-aware client
    /// sends them (the server then also records it).
    public var identifiesWrites: Bool

    /// Creates a target.
    public init(
        table: TableName, value: [UInt8], readQuorum: QuorumOverrides = QuorumOverrides(),
        writeQuorum: QuorumOverrides = QuorumOverrides(), options: HTTPClientOptions = HTTPClientOptions(),
        requestTimeout: TimeAmount = .seconds(30), identifiesWrites: Bool = false
    ) {
        self.table = table
        self.value = value
        self.readQuorum = readQuorum
        self.writeQuorum = writeQuorum
        self.options = options
        self.requestTimeout = requestTimeout
        self.identifiesWrites = identifiesWrites
    }
}

/// A closed-loop HTTP load whose clients run on event loops, not in tasks.
///
/// Each client keeps one request in flight on a connection of its own and writes the
/// next from the channel handler that read the last answer: no task, actor hop or
/// continuation per request, and a request is encoded straight into one buffer. That
/// keeps the generator's own CPU per request close to wrk's, so that on a machine it
/// shares with the servers it measures them rather than itself.
public enum LoadGenerator {
    /// Runs `clients` clients until every script has ended. `script(i)` makes client
    /// `i`'s script on its event loop.
    ///
    /// Without `route`, client `i` sends every request to `urls[i % urls.count]`. With
    /// it, each step goes to `urls[route(step, turn)]` (a replica of its key, say), on
    /// a connection the client keeps to each node it has used; `turn` counts the
    /// client's steps, for a route that takes replicas in turn.
    ///
    /// A connection that fails or closes is opened again when a request needs it; the
    /// step it carried ends as `server.unavailable`. The client pauses before going on
    /// when a connection cannot be made, closes without having answered, or closes
    /// after an error that was its only answer (a node refusing connections).
    public static func run(
        urls: [String], clients: Int, target: LoadTarget, contexts: LoadContexts,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        route: (@Sendable (LoadStep, UInt64) -> Int)? = nil,
        script: @escaping @Sendable (Int) -> any LoadScript
    ) async throws(KVError) {
        guard !urls.isEmpty else { throw KVError(.invalidRequest, "a load needs at least one node URL") }
        let shared = LoadRequests(target: target)
        var nodes: [LoadNode] = []
        for url in urls {
            let (host, port) = try HTTPKeyValueService.parse(url: url)
            var options = target.options
            if url.hasPrefix("https://") { options.useTLS = true }
            let endpoint = LoadEndpoint(host: host, port: port, tls: try options.tlsContext())
            nodes.append(LoadNode(endpoint: endpoint, requests: shared.with(authority: endpoint)))
        }
        var finished: [EventLoopFuture<Void>] = []
        for index in 0..<clients {
            let eventLoop = group.next()
            let promise = eventLoop.makePromise(of: Void.self)
            let nodes = nodes
            eventLoop.execute {
                let client = LoadClient(
                    nodes: nodes, home: index % nodes.count, route: route, eventLoop: eventLoop,
                    contexts: contexts, script: script(index), done: promise)
                client.sendNext()
            }
            finished.append(promise.futureResult)
        }
        for future in finished { try? await future.get() }
    }
}

/// Where a load client connects.
struct LoadEndpoint: Sendable {
    var host: String
    var port: Int
    var tls: NIOSSLContext?
}

/// A node of a load: where it is, and its requests (with its host header).
struct LoadNode: Sendable {
    var endpoint: LoadEndpoint
    var requests: LoadRequests
}

/// Encodes a load's requests: the parts every request shares are formatted once.
struct LoadRequests: Sendable {
    /// `/v1/{namespace}/{table}/`.
    let pathPrefix: [UInt8]
    let value: [UInt8]
    /// Host, authorization and quorum lines of a get, each ending in CRLF.
    var getLines: [UInt8] = []
    /// Host, authorization, quorum, content type and length lines of a put.
    var putLines: [UInt8] = []
    let target: LoadTarget

    init(target: LoadTarget) {
        self.target = target
        pathPrefix = Array(
            "/v1/\(HTTPKeyValueService.escape(target.table.namespace))/\(HTTPKeyValueService.escape(target.table.table))/"
                .utf8)
        value = target.value
    }

    /// The same requests with the host header of `endpoint`.
    func with(authority endpoint: LoadEndpoint) -> LoadRequests {
        var requests = self
        var shared = "host: \(endpoint.host):\(endpoint.port)\r\n"
        if let token = target.options.token { shared += "authorization: Bearer \(token)\r\n" }
        var get = shared
        for (name, value) in target.readQuorum.named { get += "x-kv-\(name): \(value)\r\n" }
        var put = shared
        for (name, value) in target.writeQuorum.named { put += "x-kv-\(name): \(value)\r\n" }
        put += "content-type: \(RowValue.defaultContentType)\r\ncontent-length: \(value.count)\r\n"
        requests.getLines = Array(get.utf8)
        requests.putLines = Array(put.utf8)
        return requests
    }

    /// Writes the request of `step` into `buffer`; a put carries `context` and
    /// `requestID` when given.
    func encode(_ step: LoadStep, context: String?, requestID: String? = nil, into buffer: inout ByteBuffer) {
        buffer.clear()
        buffer.writeStaticString(step.isGet ? "GET " : "PUT ")
        buffer.writeBytes(pathPrefix)
        // An int64's text form is digits and a sign: nothing in it needs escaping.
        buffer.writeString(String(step.key))
        buffer.writeStaticString(" HTTP/1.1\r\n")
        if step.isGet {
            buffer.writeBytes(getLines)
            buffer.writeStaticString("\r\n")
        } else {
            buffer.writeBytes(putLines)
            if let context, !context.isEmpty {
                buffer.writeStaticString("x-kv-context: ")
                buffer.writeString(context)
                buffer.writeStaticString("\r\n")
            }
            if let requestID {
                buffer.writeStaticString("x-kv-request-id: ")
                buffer.writeString(requestID)
                buffer.writeStaticString("\r\n")
            }
            buffer.writeStaticString("\r\n")
            buffer.writeBytes(value)
        }
    }
}
