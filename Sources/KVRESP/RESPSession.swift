import FoundationEssentials
import KVCore
import Synchronization

/// An error reply with Redis's exact text (without the leading `-`).
struct RESPCommandError: Error {
    var text: String
    init(_ text: String) { self.text = text }

    static let syntax = RESPCommandError("ERR syntax error")
    static let notInteger = RESPCommandError("ERR value is not an integer or out of range")
    static let notFloat = RESPCommandError("ERR value is not a valid float")
    static let tooLarge = RESPCommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// One client connection's state (protocol version, database, name, who it is) and the
/// commands it runs. The listener runs a connection's commands on different keys side by
/// side and the others alone (``keys(of:)``), and sends the replies in the order of the
/// commands.
public actor RESPSession {
    let frontEnd: RESPFrontEnd
    /// The connection's id, as `CLIENT ID` and `HELLO` report it.
    public nonisolated let clientID: Int64
    /// 2 until `HELLO 3`.
    public private(set) var protocolVersion = 2 {
        didSet { published.withLock { $0.protocolVersion = protocolVersion } }
    }
    /// The `SELECT`ed database.
    var database = 0 {
        didSet { published.withLock { $0.database = database } }
    }
    var clientName: String?
    /// What the connection may do: everything when access control is off, nothing until
    /// `AUTH` when it is on.
    var grants: AccessGrants? {
        didSet { published.withLock { $0.grants = grants } }
    }
    /// A copy of the state above for ``immediateReply(to:)``, which runs outside the
    /// actor. Only commands that run alone change that state, so the copy is current
    /// whenever a command that touches only its keys is scheduled.
    nonisolated let published: Mutex<ConnectionState>

    /// What a command answered outside the actor needs of the connection.
    struct ConnectionState: Sendable {
        var protocolVersion: Int
        var database: Int
        var grants: AccessGrants?
    }

    init(frontEnd: RESPFrontEnd, clientID: Int64) {
        self.frontEnd = frontEnd
        self.clientID = clientID
        let grants: AccessGrants? = frontEnd.authenticate == nil ? .everything : nil
        self.grants = grants
        published = Mutex(ConnectionState(protocolVersion: 2, database: 0, grants: grants))
    }

    /// The reply to one command, and whether the connection closes after it.
    public struct Reply: Sendable {
        /// What to send.
        public var value: RESPValue
        /// Whether to close the connection once it is sent (`QUIT`).
        public var closesConnection: Bool
        /// The protocol version to write it in: the connection's when the command ended
        /// (so `HELLO 3` answers in RESP3, and a command before it in the old one).
        public var protocolVersion: Int
    }

    /// Runs one command (its name and arguments); `nil` for an empty inline line, which
    /// Redis answers with nothing.
    public func execute(_ arguments: [[UInt8]]) async -> Reply? {
        guard let first = arguments.first else { return nil }
        let name = String(decoding: first, as: UTF8.self).lowercased()
        let (value, closes) = await outcome(name, arguments)
        return Reply(value: value, closesConnection: closes, protocolVersion: protocolVersion)
    }

    private func outcome(_ name: String, _ arguments: [[UInt8]]) async -> (RESPValue, Bool) {
        do {
            if name == "quit" { return (.ok, true) }
            do {
                return (try await run(name, arguments), false)
            } catch let error as KVError where error.code == .tableNotFound {
                // The database's table was dropped (over HTTP) since this node created
                // it: create it again and run the command once more. Nothing was applied.
                frontEnd.forgetTable(ofDatabase: database)
                return (try await run(name, arguments), false)
            }
        } catch let error as RESPCommandError {
            return (.error(Self.oneLine(error.text)), false)
        } catch let error as KVError {
            return (.error(Self.oneLine(Self.text(of: error))), false)
        } catch {
            return (.error("ERR \(error)"), false)
        }
    }

    /// The keys `arguments` reads or writes, when it is a command that touches only them:
    /// a listener may run such commands of one connection side by side when their keys
    /// differ, and still answer in order. `nil` for every other command (connection
    /// state, scans, flushes, anything unknown or malformed), which must run alone.
    public nonisolated static func keys(of arguments: [[UInt8]]) -> [[UInt8]]? {
        guard let first = arguments.first,
            let spec = RESPCommandTable.byName[String(decoding: first, as: UTF8.self).lowercased()],
            spec.firstKey > 0, spec.accepts(arguments.count), spec.access != nil
        else { return nil }
        let last = spec.lastKey < 0 ? arguments.count + spec.lastKey : spec.lastKey
        guard spec.firstKey <= last, last < arguments.count else { return nil }
        return Array(stride(from: spec.firstKey, through: last, by: spec.step).map { arguments[$0] })
    }

    /// Called once the connection has closed.
    public func close() { frontEnd.closed(self) }

    /// A store error as a Redis error: its stable code, then its message.
    static func text(of error: KVError) -> String {
        switch error.code {
        case .notACounter: return RESPCommandError.notInteger.text
        case .forbidden: return "NOPERM \(error.message)"
        default: return "ERR \(error.code.rawValue): \(error.message)"
        }
    }

    /// Error texts are one line on the wire.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\r" || $0 == "\n" ? " " : $0 })
    }

    private func run(_ name: String, _ arguments: [[UInt8]]) async throws -> RESPValue {
        guard let spec = RESPCommandTable.byName[name] else {
            var listed = ""
            for argument in arguments.dropFirst() where listed.utf8.count < 128 {
                listed += "'\(String(decoding: argument.prefix(128 - listed.utf8.count), as: UTF8.self))' "
            }
            let shown = String(decoding: arguments[0].prefix(128), as: UTF8.self)
            throw RESPCommandError("ERR unknown command '\(shown)', with args beginning with: \(listed)")
        }
        guard spec.accepts(arguments.count) else {
            throw RESPCommandError("ERR wrong number of arguments for '\(name)' command")
        }
        if grants == nil && !spec.flags.contains("no_auth") {
            throw RESPCommandError("NOAUTH Authentication required.")
        }
        if let level = spec.access, let grants, !grants.allows(level, on: frontEnd.namespace) {
            throw RESPCommandError(
                "NOPERM this user has no permissions to run the '\(name)' command (it needs \(level) on namespace '\(frontEnd.namespace)')"
            )
        }
        let args = Array(arguments.dropFirst())
        switch name {
        case "ping":
            guard args.count <= 1 else {
                throw RESPCommandError("ERR wrong number of arguments for 'ping' command")
            }
            return args.first.map { .bulk($0) } ?? .simple("PONG")
        case "echo": return .bulk(args[0])
        case "hello": return try hello(args)
        case "auth": return try auth(args)
        case "select": return try select(args[0])
        case "client": return try client(args)
        case "command": return try command(args)
        case "info": return info(args)
        default: return try await runData(name, args)
        }
    }

    // MARK: - Connection

    private func hello(_ args: [[UInt8]]) throws -> RESPValue {
        var version = protocolVersion
        var index = 0
        if let first = args.first {
            guard let requested = RESPNumbers.integer(first) else {
                throw RESPCommandError("ERR Protocol version is not an integer or out of range")
            }
            guard requested == 2 || requested == 3 else {
                throw RESPCommandError("NOPROTO unsupported protocol version")
            }
            version = Int(requested)
            index = 1
        }
        var name: String?
        var authenticated = false
        while index < args.count {
            let option = String(decoding: args[index], as: UTF8.self).uppercased()
            if option == "AUTH", index + 2 < args.count {
                try authenticate(password: args[index + 2])
                authenticated = true
                index += 3
            } else if option == "SETNAME", index + 1 < args.count {
                name = try Self.clientName(args[index + 1])
                index += 2
            } else {
                throw RESPCommandError("ERR Syntax error in HELLO option '\(option)'")
            }
        }
        if grants == nil && !authenticated {
            throw RESPCommandError(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
            )
        }
        protocolVersion = version
        if let name { clientName = name }
        return .map([
            (.bulk("server"), .bulk("redis")), (.bulk("version"), .bulk(Self.redisVersion)),
            (.bulk("proto"), .integer(Int64(version))), (.bulk("id"), .integer(clientID)),
            (.bulk("mode"), .bulk("standalone")), (.bulk("role"), .bulk("master")),
            (.bulk("modules"), .array([])),
        ])
    }

    /// The Redis version the listener claims: the command set and replies follow it.
    static let redisVersion = "7.2.0"

    private func auth(_ args: [[UInt8]]) throws -> RESPValue {
        guard args.count <= 2 else { throw RESPCommandError.syntax }
        try authenticate(password: args[args.count - 1])
        return .ok
    }

    /// With access control on, the password is an access token of the cluster (the user
    /// name is not used); with it off, any password is accepted.
    private func authenticate(password: [UInt8]) throws {
        guard let check = frontEnd.authenticate else { return }
        do {
            grants = try check(String(decoding: password, as: UTF8.self))
        } catch {
            throw RESPCommandError("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    private func select(_ argument: [UInt8]) throws -> RESPValue {
        guard let index = RESPNumbers.integer(argument) else { throw RESPCommandError.notInteger }
        guard index >= 0, index < frontEnd.databaseCount else {
            throw RESPCommandError("ERR DB index is out of range")
        }
        database = Int(index)
        return .ok
    }

    private static func clientName(_ bytes: [UInt8]) throws -> String? {
        guard bytes.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw RESPCommandError("ERR Client names cannot contain spaces, newlines or special characters.")
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    private func client(_ args: [[UInt8]]) throws -> RESPValue {
        let sub = String(decoding: args[0], as: UTF8.self).lowercased()
        func arity(_ count: Int) throws {
            guard args.count == count else {
                throw RESPCommandError("ERR wrong number of arguments for 'client|\(sub)' command")
            }
        }
        switch sub {
        case "id":
            try arity(1)
            return .integer(clientID)
        case "setname":
            try arity(2)
            clientName = try Self.clientName(args[1])
            return .ok
        case "getname":
            try arity(1)
            return clientName.map { .bulk($0) } ?? .null
        case "setinfo":
            try arity(3)
            return .ok
        case "no-evict", "no-touch":
            try arity(2)
            return .ok
        case "info", "list":
            let line =
                "id=\(clientID) name=\(clientName ?? "") db=\(database) resp=\(protocolVersion) lib=kv\n"
            return sub == "info" ? .verbatim(line) : .bulk(line)
        case "help":
            return .array(
                [
                    "CLIENT <subcommand>", "ID", "SETNAME <name>", "GETNAME", "SETINFO <attr> <value>",
                    "INFO", "LIST",
                ]
                .map { .simple($0) })
        default:
            throw RESPCommandError(
                "ERR unknown subcommand '\(String(decoding: args[0].prefix(128), as: UTF8.self))'. Try CLIENT HELP."
            )
        }
    }

    private func command(_ args: [[UInt8]]) throws -> RESPValue {
        guard let first = args.first else { return .array(RESPCommandTable.all.map(\.info)) }
        let names = args.dropFirst().map { String(decoding: $0, as: UTF8.self).lowercased() }
        switch String(decoding: first, as: UTF8.self).lowercased() {
        case "count": return .integer(Int64(RESPCommandTable.all.count))
        case "info":
            if names.isEmpty { return .array(RESPCommandTable.all.map(\.info)) }
            return .array(names.map { RESPCommandTable.byName[$0]?.info ?? .nullArray })
        case "docs":
            // No documentation entries: clients then fall back to their built-in help.
            return .map([])
        case "list": return .array(RESPCommandTable.all.map { .bulk($0.name) })
        case "help":
            return .array(["COMMAND", "COUNT", "INFO [<name> ...]", "DOCS", "LIST"].map { .simple($0) })
        default:
            throw RESPCommandError(
                "ERR unknown subcommand '\(String(decoding: first.prefix(128), as: UTF8.self))'. Try COMMAND HELP."
            )
        }
    }

    private func info(_ args: [[UInt8]]) -> RESPValue {
        let uptime = Int(Date().timeIntervalSince(frontEnd.startedAt))
        let sections: [(String, [String])] = [
            (
                "server",
                [
                    "redis_version:\(Self.redisVersion)", "redis_mode:standalone", "kv_store:dynamo",
                    "arch_bits:64", "tcp_port:\(frontEnd.port.withLock { $0 })",
                    "uptime_in_seconds:\(uptime)",
                    "uptime_in_days:\(uptime / 86_400)",
                ]
            ),
            ("clients", ["connected_clients:\(frontEnd.connectedClients.load(ordering: .relaxed))"]),
            ("persistence", ["loading:0", "aof_enabled:1", "rdb_bgsave_in_progress:0"]),
            ("replication", ["role:master", "connected_slaves:0"]),
            ("keyspace", []),
        ]
        let wanted = Set(args.map { String(decoding: $0, as: UTF8.self).lowercased() })
        let all =
            wanted.isEmpty || wanted.contains("all") || wanted.contains("everything")
            || wanted.contains("default")
        var text = ""
        for (name, lines) in sections where all || wanted.contains(name) {
            if !text.isEmpty { text += "\r\n" }
            text += "# \(name.prefix(1).uppercased() + name.dropFirst())\r\n"
            for line in lines { text += line + "\r\n" }
        }
        return .verbatim(text)
    }
}
