import KVCore

/// One command the listener serves: its arity and key positions as Redis declares them
/// (so `COMMAND` answers what clients expect), and the access it needs.
struct RESPCommandSpec: Sendable {
    /// The lowercase name.
    var name: String
    /// Redis's arity: `n` exactly n words with the name, `-n` at least n.
    var arity: Int
    /// Redis's command flags.
    var flags: [String]
    /// Position of the first key, the last key (-1: the last argument) and the step.
    var firstKey: Int
    var lastKey: Int
    var step: Int
    /// The grant on the store's RESP namespace it needs, or `nil` for connection commands.
    var access: AccessLevel?

    /// Whether `count` words (the name included) satisfy the arity.
    func accepts(_ count: Int) -> Bool { arity >= 0 ? count == arity : count >= -arity }

    /// The entry of `COMMAND` / `COMMAND INFO` (Redis 7's ten fields).
    var info: RESPValue {
        .array([
            .bulk(name), .integer(Int64(arity)), .array(flags.map { .simple($0) }), .integer(Int64(firstKey)),
            .integer(Int64(lastKey)), .integer(Int64(step)), .array([]), .array([]), .array([]), .array([]),
        ])
    }
}

/// Every command the listener knows, by lowercase name.
enum RESPCommandTable {
    private static func spec(
        _ name: String, _ arity: Int, _ flags: [String], keys: (Int, Int, Int) = (0, 0, 0),
        _ access: AccessLevel? = nil
    ) -> RESPCommandSpec {
        RESPCommandSpec(
            name: name, arity: arity, flags: flags, firstKey: keys.0, lastKey: keys.1, step: keys.2,
            access: access)
    }

    static let all: [RESPCommandSpec] = [
        // Connection.
        spec("ping", -1, ["fast"]),
        spec("echo", 2, ["fast"]),
        spec("quit", -1, ["fast"]),
        spec("hello", -1, ["noscript", "loading", "stale", "fast", "no_auth"]),
        spec("auth", -2, ["noscript", "loading", "stale", "fast", "no_auth"]),
        spec("select", 2, ["loading", "stale", "fast"]),
        spec("client", -2, ["noscript", "loading", "stale"]),
        spec("command", -1, ["loading", "stale"]),
        spec("info", -1, ["loading", "stale"]),
        // Strings.
        spec("get", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("set", -3, ["write", "denyoom"], keys: (1, 1, 1), .write),
        spec("setnx", 3, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("getset", 3, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("getdel", 2, ["write", "fast"], keys: (1, 1, 1), .write),
        spec("mget", -2, ["readonly", "fast"], keys: (1, -1, 1), .read),
        spec("mset", -3, ["write", "denyoom"], keys: (1, -1, 2), .write),
        spec("msetnx", -3, ["write", "denyoom"], keys: (1, -1, 2), .write),
        spec("append", 3, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("strlen", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("getrange", 4, ["readonly"], keys: (1, 1, 1), .read),
        spec("setrange", 4, ["write", "denyoom"], keys: (1, 1, 1), .write),
        // Counters.
        spec("incr", 2, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("incrby", 3, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("decr", 2, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("decrby", 3, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        spec("incrbyfloat", 3, ["write", "denyoom", "fast"], keys: (1, 1, 1), .write),
        // Keys.
        spec("del", -2, ["write"], keys: (1, -1, 1), .write),
        spec("unlink", -2, ["write", "fast"], keys: (1, -1, 1), .write),
        spec("exists", -2, ["readonly", "fast"], keys: (1, -1, 1), .read),
        spec("type", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("expire", -3, ["write", "fast"], keys: (1, 1, 1), .write),
        spec("pexpire", -3, ["write", "fast"], keys: (1, 1, 1), .write),
        spec("expireat", -3, ["write", "fast"], keys: (1, 1, 1), .write),
        spec("pexpireat", -3, ["write", "fast"], keys: (1, 1, 1), .write),
        spec("expiretime", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("pexpiretime", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("ttl", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("pttl", 2, ["readonly", "fast"], keys: (1, 1, 1), .read),
        spec("persist", 2, ["write", "fast"], keys: (1, 1, 1), .write),
        spec("scan", -2, ["readonly"], .read),
        spec("keys", 2, ["readonly"], .read),
        spec("dbsize", 1, ["readonly", "fast"], .read),
        spec("flushdb", -1, ["write"], .admin),
        spec("flushall", -1, ["write"], .admin),
    ]

    static let byName: [String: RESPCommandSpec] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
}
