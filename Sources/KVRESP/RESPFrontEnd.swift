import FoundationEssentials
import KVCore
import Synchronization

/// What every RESP connection of a node shares: the store's service, the tables behind
/// the Redis database numbers, open `SCAN` cursors and the access check.
///
/// Database `n` is the table `{namespace}/db{n}` (namespace `redis` by default) with one
/// `bytes` key part and the last-writer-wins conflict policy, created on first use: a
/// Redis client reads one value per key, never siblings.
public final class RESPFrontEnd: Sendable {
    /// The store every command goes to.
    let service: any KeyValueService
    /// The namespace of the database tables.
    public let namespace: String
    /// How many databases `SELECT` accepts (0 to `databaseCount - 1`).
    public let databaseCount: Int
    /// What a client may send.
    public let limits: RESPLimits
    /// The grants of a token sent with `AUTH`, or the error that refuses it; `nil` when
    /// access control is off and every connection may do anything.
    let authenticate: (@Sendable (String) throws(KVError) -> AccessGrants)?
    /// The TCP port, for `INFO`.
    let port: Mutex<Int> = Mutex(0)

    /// The tables of the databases this node has created (or found), by index.
    private let createdTables = Mutex<[Int: TableName]>([:])
    private let cursors = Mutex(CursorRegistry())
    private let nextClientID = Atomic<Int64>(0)
    let connectedClients = Atomic<Int>(0)
    let startedAt = Date()

    /// Creates the shared state of a node's RESP listener.
    public init(
        service: any KeyValueService, namespace: String = "redis", databaseCount: Int = 16,
        limits: RESPLimits = RESPLimits(),
        authenticate: (@Sendable (String) throws(KVError) -> AccessGrants)? = nil
    ) {
        self.service = service
        self.namespace = namespace
        self.databaseCount = databaseCount
        self.limits = limits
        self.authenticate = authenticate
    }

    /// Records the port the listener bound, for `INFO`.
    public func listening(on port: Int) { self.port.withLock { $0 = port } }

    /// A new connection's state.
    public func openSession() -> RESPSession {
        connectedClients.add(1, ordering: .relaxed)
        return RESPSession(frontEnd: self, clientID: nextClientID.add(1, ordering: .relaxed).newValue)
    }

    func closed(_ session: RESPSession) { connectedClients.subtract(1, ordering: .relaxed) }

    /// The table of database `index`, created (last writer wins) the first time.
    func table(ofDatabase index: Int) async throws(KVError) -> TableName {
        if let name = existingTable(ofDatabase: index) { return name }
        let name = try TableName(namespace: namespace, table: "db\(index)")
        let descriptor = TableDescriptor(
            name: name, schema: try KeySchema([.bytes], partitionKeyLength: 1),
            conflictPolicy: .lastWriterWins)
        _ = try await service.createTable(descriptor)
        createdTables.withLock { $0[index] = name }
        return name
    }

    /// The table of database `index` if this node has created it already; never waits.
    func existingTable(ofDatabase index: Int) -> TableName? { createdTables.withLock { $0[index] } }

    /// Forgets that a database's table exists (after a flush, which keeps it, nothing
    /// changes; after it was dropped through HTTP, the next use creates it again).
    func forgetTable(ofDatabase index: Int) { createdTables.withLock { _ = $0.removeValue(forKey: index) } }

    // MARK: - SCAN cursors

    /// Redis cursors are numbers, while the store continues a scan from an opaque key
    /// position; the node keeps the positions of recent cursors. A position is a key, not
    /// a partition or a node, so a cursor survives layout changes and never skips a key
    /// that exists throughout the scan.
    struct CursorRegistry: Sendable {
        static let capacity = 100_000
        var positions: [UInt64: (database: Int, continuation: String)] = [:]
        var order: [UInt64] = []
        var next: UInt64 = 1

        mutating func add(database: Int, continuation: String) -> UInt64 {
            // Cursor numbers grow, so a stale number is never reused for another scan.
            let id = next
            next += 1
            positions[id] = (database, continuation)
            order.append(id)
            // Forget the oldest tenth at once, so the list moves rarely.
            if order.count > Self.capacity + Self.capacity / 10 {
                let dropped = order.prefix(order.count - Self.capacity)
                for old in dropped { positions[old] = nil }
                order.removeFirst(dropped.count)
            }
            return id
        }
    }

    func saveCursor(database: Int, continuation: String) -> UInt64 {
        cursors.withLock { $0.add(database: database, continuation: continuation) }
    }

    func cursor(_ id: UInt64, database: Int) -> String? {
        cursors.withLock { registry in
            registry.positions[id].flatMap { $0.database == database ? $0.continuation : nil }
        }
    }
}
