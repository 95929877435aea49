import Foundation
import KVStorage

/// A bounded pool of blocking database sessions.
///
/// Sessions are opened on demand up to `capacity`; a caller that finds every session in
/// use waits up to `waitLimit` and then fails with `storage.io` rather than blocking the
/// node forever. A session that fails an operation is closed instead of returned, so after
/// the database restarts the next call simply opens a fresh one: that is the reconnect.
public final class ConnectionPool<Connection: DatabaseConnection>: @unchecked Sendable {
    // Guarded by `condition`: the idle sessions, how many exist, and whether the pool
    // is closed. Sessions themselves are used by one thread at a time.
    private let condition = NSCondition()
    private var idle: [Connection] = []
    private var openCount = 0
    private var isClosed = false

    private let open: @Sendable () throws(StorageError) -> Connection
    /// The most sessions the pool keeps at once.
    public let capacity: Int
    private let waitLimit: Duration
    private let databaseName: String

    /// Creates a pool; `open` makes one session (it names the database in its errors).
    public init(
        capacity: Int, waitLimit: Duration = .seconds(30), databaseName: String,
        open: @escaping @Sendable () throws(StorageError) -> Connection
    ) {
        self.capacity = max(1, capacity)
        self.waitLimit = waitLimit
        self.databaseName = databaseName
        self.open = open
    }

    /// Throws ``StorageError/closed`` once the pool is closed.
    public func checkOpen() throws(StorageError) {
        condition.lock()
        defer { condition.unlock() }
        if isClosed { throw StorageError.closed }
    }

    /// Takes a session out of the pool, opening one if there is room.
    public func checkOut() throws(StorageError) -> Connection {
        let deadline = Date().addingTimeInterval(
            Double(waitLimit.components.seconds) + Double(waitLimit.components.attoseconds) / 1e18)
        condition.lock()
        while true {
            if isClosed {
                condition.unlock()
                throw StorageError.closed
            }
            if let connection = idle.popLast() {
                condition.unlock()
                return connection
            }
            if openCount < capacity {
                openCount += 1
                condition.unlock()
                do {
                    return try open()
                } catch {
                    condition.lock()
                    openCount -= 1
                    condition.signal()
                    condition.unlock()
                    throw error
                }
            }
            if !condition.wait(until: deadline) {
                condition.unlock()
                throw StorageError(
                    .io, "\(databaseName): all \(capacity) connections stayed busy for \(waitLimit)")
            }
        }
    }

    /// Returns a session; a `broken` one (its last operation failed) is closed instead.
    public func checkIn(_ connection: Connection, broken: Bool) {
        condition.lock()
        if broken || isClosed {
            openCount -= 1
            condition.signal()
            condition.unlock()
            connection.close()
            return
        }
        idle.append(connection)
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` with a session, closing the session if `body` throws.
    public func withConnection<Result>(_ body: (Connection) throws(StorageError) -> Result)
        throws(StorageError) -> Result
    {
        let connection = try checkOut()
        do {
            let result = try body(connection)
            checkIn(connection, broken: false)
            return result
        } catch {
            checkIn(connection, broken: true)
            throw error
        }
    }

    /// Closes the idle sessions and refuses new work; sessions still checked out are
    /// closed when they come back.
    public func close() {
        condition.lock()
        isClosed = true
        let closing = idle
        idle = []
        openCount -= closing.count
        condition.broadcast()
        condition.unlock()
        for connection in closing { connection.close() }
    }
}
