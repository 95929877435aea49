import KVCore
import NIOCore
import NIOPosix
import Synchronization

/// The connections of a ``ClusterClient`` to one node: at most `limit` open, each
/// carrying one request at a time (so a slow answer never holds up another request),
/// kept open between requests and opened on demand.
///
/// A caller that finds every connection busy waits its turn, at most `waitLimit`; a
/// connection whose request failed below HTTP is closed rather than reused. The pool is
/// a lock, not an actor: taking and giving back an idle connection, which is every
/// request once the pool is warm, costs no suspension.
final class NodeConnections: Sendable {
    private typealias Waiter = (
        id: UInt64, continuation: CheckedContinuation<HTTPKeyValueService?, Never>, timer: Task<Void, Never>?
    )

    private struct Pool {
        var idle: [HTTPKeyValueService] = []
        /// Connections open or being opened.
        var open = 0
        var waiters: [Waiter] = []
        var nextWaiter: UInt64 = 0
        var closed = false
    }

    /// What a caller does next.
    private enum Step {
        case take(HTTPKeyValueService)
        case connect
        case wait
        case closed
    }

    /// The node's URL (`http://host:port`).
    let url: String
    private let host: String
    private let port: Int
    private let options: HTTPClientOptions
    private let limit: Int
    private let waitLimit: Duration
    private let schemas: SchemaCache
    private let pool = Mutex(Pool())

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
            let limit = limit
            let step = pool.withLock { pool -> Step in
                if pool.closed { return .closed }
                if let connection = pool.idle.popLast() { return .take(connection) }
                if pool.open < limit {
                    pool.open += 1
                    return .connect
                }
                return .wait
            }
            switch step {
            case .take(let connection): return connection
            case .closed: throw KVError(.invalidRequest, "the client is closed")
            case .connect:
                do {
                    return try await HTTPKeyValueService(
                        host: host, port: port, group: MultiThreadedEventLoopGroup.singleton,
                        options: options,
                        schemas: schemas)
                } catch {
                    slotFreed()
                    throw error
                }
            case .wait:
                guard ContinuousClock.now < deadline else {
                    throw KVError(
                        .unavailable,
                        "every one of the \(limit) connections to \(url) stayed busy for \(waitLimit)",
                        underlying: TransportFailure.busy)
                }
                if let handed = await wait(until: deadline) { return handed }
            // Woken without a connection: a slot freed (another caller may take it
            // first, so look again), or the wait ran out (the loop's deadline says so).
            }
        }
    }

    /// Waits for a connection given back, a freed slot (`nil`) or the deadline (`nil`).
    private func wait(until deadline: ContinuousClock.Instant) async -> HTTPKeyValueService? {
        await withCheckedContinuation { continuation in
            let limit = limit
            let id = pool.withLock { pool -> UInt64? in
                // What changed since the caller looked is taken now, under the lock.
                if let connection = pool.idle.popLast() {
                    continuation.resume(returning: connection)
                    return nil
                }
                if pool.closed || pool.open < limit {
                    continuation.resume(returning: nil)
                    return nil
                }
                pool.nextWaiter += 1
                pool.waiters.append((pool.nextWaiter, continuation, nil))
                return pool.nextWaiter
            }
            guard let id else { return }
            let timer = Task { [weak self] in
                try? await Task.sleep(until: deadline)
                self?.giveUp(waiter: id)
            }
            let stillWaiting = pool.withLock { pool -> Bool in
                guard let index = pool.waiters.firstIndex(where: { $0.id == id }) else { return false }
                pool.waiters[index].timer = timer
                return true
            }
            if !stillWaiting { timer.cancel() }
        }
    }

    /// Gives a connection back: kept for the next request when `reusable`, closed when
    /// its request failed below HTTP (its state is unknown).
    func release(_ connection: HTTPKeyValueService, reusable: Bool) async {
        if reusable {
            let waiter = pool.withLock { pool -> Waiter?? in
                guard !pool.closed else { return .none }
                if !pool.waiters.isEmpty { return .some(pool.waiters.removeFirst()) }
                pool.idle.append(connection)
                return .some(nil)
            }
            switch waiter {
            case .some(let waiter?):
                waiter.timer?.cancel()
                waiter.continuation.resume(returning: connection)
                return
            case .some(nil):
                return
            case .none:
                break
            }
        }
        slotFreed()
        await connection.close()
    }

    /// Closes every idle connection and refuses new requests.
    func close() async {
        let (connections, waiters) = pool.withLock { pool in
            pool.closed = true
            defer {
                pool.idle = []
                pool.waiters = []
            }
            return (pool.idle, pool.waiters)
        }
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: nil)
        }
        for connection in connections { await connection.close() }
    }

    /// A connection went away: the first waiter may open one of its own.
    private func slotFreed() {
        let waiter = pool.withLock { pool -> Waiter? in
            pool.open -= 1
            return pool.waiters.isEmpty ? nil : pool.waiters.removeFirst()
        }
        waiter?.timer?.cancel()
        waiter?.continuation.resume(returning: nil)
    }

    private func giveUp(waiter id: UInt64) {
        let waiter = pool.withLock { pool -> Waiter? in
            guard let index = pool.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return pool.waiters.remove(at: index)
        }
        waiter?.continuation.resume(returning: nil)
    }
}
