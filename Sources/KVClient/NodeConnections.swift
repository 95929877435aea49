import KVCore
import NIOCore
import NIOPosix

/// The connections of a ``ClusterClient`` to one node: at most `limit` open, each
/// carrying one request at a time (so a slow answer never holds up another request),
/// kept open between requests and opened on demand.
///
/// A caller that finds every connection busy waits its turn, at most `waitLimit`; a
/// connection whose request failed below HTTP is closed rather than reused.
actor NodeConnections {
    /// The node's URL (`http://host:port`).
    let url: String
    private let host: String
    private let port: Int
    private let options: HTTPClientOptions
    private let limit: Int
    private let waitLimit: Duration
    private let schemas: SchemaCache
    private var idle: [HTTPKeyValueService] = []
    /// Connections open or being opened.
    private var open = 0
    private var waiters:
        [(
            id: UInt64, continuation: CheckedContinuation<HTTPKeyValueService?, Never>,
            timer: Task<Void, Never>
        )] =
            []
    private var nextWaiter: UInt64 = 0
    private var closed = false

    init(
        url: String, options: HTTPClientOptions, limit: Int, waitLimit: Duration, schemas: SchemaCache
    ) throws(KVError) {
        (host, port) = try HTTPKeyValueService.parse(url: url)
        self.url = url
        var options = options
        if url.hasPrefix("https://") { options.useTLS = true }
        self.options = options
        self.limit = max(1, limit)
        self.waitLimit = waitLimit
        self.schemas = schemas
    }

    /// A connection for one request; give it back with ``release(_:reusable:)``.
    func acquire() async throws(KVError) -> HTTPKeyValueService {
        let deadline = ContinuousClock.now + waitLimit
        while true {
            guard !closed else { throw KVError(.invalidRequest, "the client is closed") }
            if let connection = idle.popLast() { return connection }
            if open < limit {
                open += 1
                do {
                    return try await HTTPKeyValueService(
                        host: host, port: port, group: MultiThreadedEventLoopGroup.singleton,
                        options: options,
                        schemas: schemas)
                } catch {
                    open -= 1
                    handOverSlot()
                    throw error
                }
            }
            guard ContinuousClock.now < deadline else {
                throw KVError(
                    .unavailable,
                    "every one of the \(limit) connections to \(url) stayed busy for \(waitLimit)",
                    underlying: TransportFailure.notConnected)
            }
            nextWaiter += 1
            let id = nextWaiter
            let remaining = deadline - ContinuousClock.now
            let handed: HTTPKeyValueService? = await withCheckedContinuation { continuation in
                let timer = Task { [weak self] in
                    try? await Task.sleep(for: remaining)
                    await self?.giveUp(waiter: id)
                }
                waiters.append((id, continuation, timer))
            }
            if let handed { return handed }
            // Woken without a connection: a slot freed (another caller may take it
            // first, so look again), or the wait ran out (the loop's deadline says so).
        }
    }

    /// Gives a connection back: kept for the next request when `reusable`, closed when
    /// its request failed below HTTP (its state is unknown).
    func release(_ connection: HTTPKeyValueService, reusable: Bool) async {
        if reusable, !closed {
            if !waiters.isEmpty {
                let waiter = waiters.removeFirst()
                waiter.timer.cancel()
                waiter.continuation.resume(returning: connection)
            } else {
                idle.append(connection)
            }
            return
        }
        open -= 1
        handOverSlot()
        await connection.close()
    }

    /// Closes every idle connection and refuses new requests.
    func close() async {
        closed = true
        let connections = idle
        idle = []
        for waiter in waiters {
            waiter.timer.cancel()
            waiter.continuation.resume(returning: nil)
        }
        waiters = []
        for connection in connections { await connection.close() }
    }

    /// A slot freed: the first waiter may open a connection of its own.
    private func handOverSlot() {
        guard !waiters.isEmpty else { return }
        let waiter = waiters.removeFirst()
        waiter.timer.cancel()
        waiter.continuation.resume(returning: nil)
    }

    private func giveUp(waiter id: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(returning: nil)
    }
}
