import CHiredis
import KVCore
import KVStorage
import KVStorageDatabase

/// The Redis engine, through Debian's hiredis.
///
/// Redis has no ordered key space of its own, so each keyspace is two Redis keys: a
/// sorted set whose members are the keys, all with score 0 (Redis then orders members by
/// `memcmp`, the byte order the store needs, and `ZRANGE … BYLEX` walks ranges), and a
/// hash from key to value. Every batch, page read and range delete is one Lua script,
/// which Redis runs atomically and logs to its append-only file as one `MULTI`/`EXEC`
/// unit; a torn tail of the file is cut back to the last whole unit at restart.
///
/// Durability comes from the server's configuration: the engine refuses a server
/// without `appendonly yes` and `appendfsync always`, under which Redis fsyncs the log
/// before it answers. That setting is global, so buffered batches are synced too.
///
/// Redis has no snapshots. A snapshot here is a copy made by one atomic script: of every
/// keyspace (`COPY`) for ``StorageEngine/snapshot()``, of just the range for a cursor.
/// The copy costs server memory for as long as it is held and is removed when released;
/// copies left by a crashed node are removed when the engine opens again.
public enum RedisStorageEngine {
    /// Connects, checks the server's persistence settings and drops stale snapshots.
    public static func open(_ settings: DatabaseServerSettings) throws(StorageError)
        -> DatabaseStorageEngine<RedisConnection>
    {
        try settings.check(engine: "redis", schemes: ["redis"])
        return try DatabaseStorageEngine.open(
            databaseName: "redis \(settings.url)", poolSize: settings.poolSize, pageSize: settings.pageSize,
            connect: { () throws(StorageError) in try RedisConnection(settings: settings) },
            prepare: { first throws(StorageError) in
                try first.checkDurability()
                try first.removeStaleSnapshots()
            })
    }
}

/// A reply from Redis, copied out of hiredis's structure.
enum RedisReply {
    case string([UInt8])
    case integer(Int64)
    case array([RedisReply])
    case null
    case status(String)

    var bytes: [UInt8]? {
        if case .string(let bytes) = self { return bytes }
        return nil
    }

    var elements: [RedisReply] {
        if case .array(let elements) = self { return elements }
        return []
    }
}

/// One hiredis connection.
public final class RedisConnection: DatabaseConnection {
    private var context: UnsafeMutablePointer<redisContext>?
    let settings: DatabaseServerSettings
    /// Where reads go: the live keys, or a snapshot's copy.
    private var readPrefix: String
    private var snapshotPrefix: String?

    init(settings: DatabaseServerSettings) throws(StorageError) {
        self.settings = settings
        readPrefix = settings.table
        let url = settings.url
        context = redisConnectWithTimeout(
            url.host.isEmpty ? "127.0.0.1" : url.host, Int32(url.port ?? 6379),
            timeval(tv_sec: 10, tv_usec: 0))
        guard let context, context.pointee.err == 0 else {
            let message = errorText
            close()
            throw StorageError(.openFailed, "redis \(settings.url): cannot connect: \(message)")
        }
        // A server that stops answering fails the call instead of hanging the node.
        redisSetTimeout(context, timeval(tv_sec: 60, tv_usec: 0))
        do {
            if let password = url.password {
                try command(
                    url.user.isEmpty ? ["AUTH", password] : ["AUTH", url.user, password],
                    what: "authenticating")
            }
            if !url.database.isEmpty {
                try command(["SELECT", url.database], what: "selecting database \(url.database)")
            }
        } catch {
            close()
            throw StorageError(.openFailed, error.message)
        }
    }

    private var errorText: String {
        guard let context else { return "out of memory" }
        return withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Sends one command (binary-safe arguments) and returns its reply; an error reply
    /// or a broken connection throws `storage.io` naming `what`.
    @discardableResult
    func command(_ arguments: [[UInt8]], what: String) throws(StorageError) -> RedisReply {
        guard let context else { throw StorageError(.io, "redis \(settings.url): not connected") }
        let reply = withCArguments(arguments) { pointers, lengths in
            redisCommandArgv(context, Int32(arguments.count), pointers, lengths)
        }
        guard let reply else {
            throw StorageError(.io, "redis \(settings.url): \(what) failed: \(errorText)")
        }
        defer { freeReplyObject(reply) }
        let converted = Self.convert(reply.assumingMemoryBound(to: redisReply.self))
        if case .status(let text) = converted, text.hasPrefix("ERR:") {
            throw StorageError(.io, "redis \(settings.url): \(what) failed: \(text.dropFirst(4))")
        }
        return converted
    }

    @discardableResult
    func command(_ arguments: [String], what: String) throws(StorageError) -> RedisReply {
        try command(arguments.map { Array($0.utf8) }, what: what)
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let value = reply.pointee
        func text() -> [UInt8] {
            guard let string = value.str, value.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: string, count: Int(value.len)))
        }
        switch Int32(value.type) {
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_INTEGER: return .integer(value.integer)
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_STATUS: return .status(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .status("ERR:" + String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            return .array((0..<Int(value.elements)).map { convert(value.element[$0]!) })
        default: return .null
        }
    }

    func checkDurability() throws(StorageError) {
        let reply = try command(["CONFIG", "GET", "append*"], what: "reading the persistence settings")
        var settings: [String: String] = [:]
        let elements = reply.elements
        for index in stride(from: 0, to: elements.count - 1, by: 2) {
            if let name = elements[index].bytes, let value = elements[index + 1].bytes {
                settings[String(decoding: name, as: UTF8.self)] = String(decoding: value, as: UTF8.self)
            }
        }
        guard settings["appendonly"] == "yes", settings["appendfsync"] == "always" else {
            throw StorageError(
                .openFailed,
                "redis \(self.settings.url): the server runs with appendonly \(settings["appendonly"] ?? "?") and appendfsync \(settings["appendfsync"] ?? "?"); acknowledged writes would not be durable. Set appendonly yes and appendfsync always."
            )
        }
    }

    /// Snapshot copies a crashed process left behind.
    func removeStaleSnapshots() throws(StorageError) {
        var cursor = "0"
        repeat {
            let reply = try command(
                ["SCAN", cursor, "MATCH", "\(settings.table):snap:*", "COUNT", "1000"],
                what: "listing old snapshots")
            let parts = reply.elements
            cursor = parts.first?.bytes.map { String(decoding: $0, as: UTF8.self) } ?? "0"
            let keys = parts.count > 1 ? parts[1].elements.compactMap(\.bytes) : []
            if !keys.isEmpty { try command([Array("UNLINK".utf8)] + keys, what: "removing old snapshots") }
        } while cursor != "0"
    }

    func sortedSet(_ prefix: String, _ keyspace: Keyspace) -> [UInt8] {
        Array("\(prefix):\(keyspace.storedNumber):z".utf8)
    }
    func hash(_ prefix: String, _ keyspace: Keyspace) -> [UInt8] {
        Array("\(prefix):\(keyspace.storedNumber):h".utf8)
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try command([Array("HGET".utf8), hash(readPrefix, keyspace), key], what: "get").bytes
    }

    public func page(of range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection, limit: Int)
        throws(StorageError) -> RangePage
    {
        let reply = try command(
            [
                Array(RedisScripts.page.utf8), Array("2".utf8), sortedSet(readPrefix, keyspace),
                hash(readPrefix, keyspace),
                range.lexLowerBound, range.lexUpperBound, Array(String(limit).utf8),
                Array((direction == .forward ? "0" : "1").utf8),
            ].withEval, what: "range read")
        let flat = reply.elements
        var entries: [StorageEntry] = []
        entries.reserveCapacity(flat.count / 2)
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            entries.append(StorageEntry(key: flat[index].bytes ?? [], value: flat[index + 1].bytes ?? []))
        }
        return RangePage(entries: entries, isLast: entries.count < limit)
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        var arguments: [[UInt8]] = [
            Array(RedisScripts.write.utf8), Array("0".utf8), Array(settings.table.utf8),
        ]
        for operation in batch.operations {
            switch operation {
            case .put(let keyspace, let key, let value):
                arguments += [Array("p".utf8), Array(String(keyspace.storedNumber).utf8), key, value]
            case .delete(let keyspace, let key):
                arguments += [Array("d".utf8), Array(String(keyspace.storedNumber).utf8), key, []]
            case .deleteRange(let keyspace, let range):
                guard !range.isEmpty else { continue }
                arguments += [
                    Array("r".utf8), Array(String(keyspace.storedNumber).utf8), range.lexLowerBound,
                    range.lexUpperBound,
                ]
            }
        }
        try command(arguments.withEval, what: "writing a batch")
    }

    public func beginSnapshot(_ scope: SnapshotScope) throws(StorageError) {
        var random = SystemRandomNumberGenerator()
        let prefix = "\(settings.table):snap:\(String(random.next() as UInt64, radix: 36))"
        snapshotPrefix = prefix
        switch scope {
        case .everything:
            var arguments: [[UInt8]] = [Array(RedisScripts.copyAll.utf8), Array("0".utf8)]
            for keyspace in Keyspace.allCases {
                arguments += [
                    sortedSet(settings.table, keyspace), sortedSet(prefix, keyspace),
                    hash(settings.table, keyspace),
                    hash(prefix, keyspace),
                ]
            }
            try command(arguments.withEval, what: "taking a snapshot")
        case .range(let keyspace, let range):
            try command(
                [
                    Array(RedisScripts.copyRange.utf8), Array("0".utf8), sortedSet(settings.table, keyspace),
                    hash(settings.table, keyspace), range.lexLowerBound, range.lexUpperBound,
                    sortedSet(prefix, keyspace), hash(prefix, keyspace),
                ].withEval, what: "taking a snapshot of a range")
        }
        readPrefix = prefix
    }

    public func endSnapshot() throws(StorageError) {
        guard let prefix = snapshotPrefix else { return }
        snapshotPrefix = nil
        readPrefix = settings.table
        var arguments = [Array("UNLINK".utf8)]
        for keyspace in Keyspace.allCases {
            arguments += [sortedSet(prefix, keyspace), hash(prefix, keyspace)]
        }
        try command(arguments, what: "releasing a snapshot")
    }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        let reply = try command(
            [
                Array(RedisScripts.estimate.utf8), Array("0".utf8), sortedSet(readPrefix, keyspace),
                hash(readPrefix, keyspace), range.lexLowerBound, range.lexUpperBound,
            ].withEval, what: "size estimate")
        let numbers = reply.elements.map { element -> UInt64 in
            if case .integer(let value) = element { return UInt64(max(0, value)) }
            return 0
        }
        return StorageSizeEstimate(bytes: numbers.count > 1 ? numbers[1] : 0, keyCount: numbers.first ?? 0)
    }

    public func close() {
        if let context { redisFree(context) }
        context = nil
    }
}

extension EncodedKeyRange {
    /// The range's start as a `ZRANGE … BYLEX` bound (inclusive).
    var lexLowerBound: [UInt8] { [UInt8(ascii: "[")] + lowerBound }
    /// The range's end as a `ZRANGE … BYLEX` bound (exclusive, or `+` for none).
    var lexUpperBound: [UInt8] { upperBound.map { [UInt8(ascii: "(")] + $0 } ?? [UInt8(ascii: "+")] }
}

extension Array where Element == [UInt8] {
    /// The arguments of an `EVAL`: the script text and its arguments follow the command.
    var withEval: [[UInt8]] { [[UInt8]("EVAL".utf8)] + self }
}
