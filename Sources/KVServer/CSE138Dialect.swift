import FoundationEssentials
import KVCore
import NIOHTTP1

/// The key-value-store API of UCSC's CSE138 assignment (the spencer-p/key-value-store
/// seed) under `/kv-store/` on the HTTP port, over the table `cse138/keys`
/// (last-writer-wins, one string key part), so a client written for that assignment
/// works against the cluster. See docs/cse138.md.
///
/// - `PUT /kv-store/keys/{key}` `{"value", "causal-context"}`: `201` added, `200`
///   updated (`replaced`); `400` for a key that is missing or longer than 50 bytes, or a
///   missing value.
/// - `GET /kv-store/keys/{key}`: `200` with `value` and `doesExist`, `404` when absent.
/// - `DELETE /kv-store/keys/{key}`: `200`, `404` when absent.
/// - `GET /kv-store/key-count`, `GET /kv-store/shards`, `GET /kv-store/shards/{id}`: the
///   members, in address order, grouped into shards of the replication factor; a key
///   belongs to the shard of its partition's first replica.
/// - `PUT /kv-store/view-change` `{"view", "repl-factor"}`: members of the new view that
///   the layout does not place join, placed members missing from it leave; answers once
///   the data moved.
///
/// Every answer carries a `causal-context`: for each key the client wrote or read, a
/// lower bound of the version's timestamp. A read that finds an older version than the
/// context names asks every replica, and answers `503` when none has it yet.
extension Router {
    static let cse138Table = try! TableName(namespace: "cse138", table: "keys")
    /// Keys a causal context remembers at most (the most recent ones).
    static let cse138ContextLimit = 1000

    /// One answer of the dialect; fields in the order the reference server writes them.
    struct CSE138Answer: Encodable {
        var message: String
        var value: String?
        var error: String?
        var doesExist: Bool?
        var replaced: Bool?
        var shards: [Int]?
        var shardList: [CSE138Shard]?
        var keyCount: Int?
        var shardID: Int?
        var replicas: [String]?
        var causalContext: CSE138Context?

        enum CodingKeys: String, CodingKey {
            case message, value, error, doesExist, replaced, shards
            case keyCount = "key-count"
            case shardID = "shard-id"
            case replicas
            case causalContext = "causal-context"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(message, forKey: .message)
            try container.encodeIfPresent(value, forKey: .value)
            try container.encodeIfPresent(error, forKey: .error)
            try container.encodeIfPresent(doesExist, forKey: .doesExist)
            try container.encodeIfPresent(replaced, forKey: .replaced)
            if let shardList {
                try container.encode(shardList, forKey: .shards)
            } else {
                try container.encodeIfPresent(shards, forKey: .shards)
            }
            try container.encodeIfPresent(keyCount, forKey: .keyCount)
            try container.encodeIfPresent(shardID, forKey: .shardID)
            try container.encodeIfPresent(replicas, forKey: .replicas)
            // Always present, `null` when there is none (as the reference server does).
            try container.encode(causalContext, forKey: .causalContext)
        }
    }

    /// A shard in a view change's answer.
    struct CSE138Shard: Encodable {
        var shardID: Int
        var replicas: [String]
        var keyCount: Int

        enum CodingKeys: String, CodingKey {
            case shardID = "shard-id"
            case replicas
            case keyCount = "key-count"
        }
    }

    /// What the client has seen: for each key, a lower bound of the timestamp of the
    /// newest version it wrote or read. Clients pass it back untouched.
    struct CSE138Context: Codable {
        var seen: [String: Int64]?

        mutating func note(_ key: String, _ milliseconds: Int64) {
            var seen = seen ?? [:]
            seen[key] = max(seen[key] ?? 0, milliseconds)
            if seen.count > Router.cse138ContextLimit {
                // Keep the most recent: older entries are the least likely to matter.
                let kept = seen.sorted { $0.value > $1.value }.prefix(Router.cse138ContextLimit)
                seen = Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
            }
            self.seen = seen
        }
    }

    struct CSE138Request: Decodable {
        var value: String?
        var causalContext: CSE138Context?
        var view: CSE138Members?
        var replicationFactor: Int?

        enum CodingKeys: String, CodingKey {
            case value
            case causalContext = "causal-context"
            case view
            case replicationFactor = "repl-factor"
        }
    }

    /// A view: a JSON array of addresses, or one comma-separated string.
    struct CSE138Members: Decodable {
        var members: [String]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let list = try? container.decode([String].self) {
                members = list
            } else {
                members = try container.decode(String.self).split(separator: ",").map {
                    String($0.filter { $0 != " " })
                }
            }
        }
    }

    static func cse138(
        _ status: HTTPResponseStatus, _ answer: CSE138Answer
    ) -> HTTPResponse {
        json(answer, status: status)
    }

    static func cse138Error(_ method: HTTPMethod, _ status: HTTPResponseStatus, _ error: String)
        -> HTTPResponse
    {
        cse138(status, CSE138Answer(message: "Error in \(method.rawValue)", error: error))
    }

    func routeCSE138(_ request: HTTPRequest, _ names: [String], grants: AccessGrants) async throws(KVError)
        -> HTTPResponse
    {
        let body: CSE138Request
        if request.body.isEmpty {
            body = CSE138Request()
        } else if let decoded = try? JSONDecoder().decode(CSE138Request.self, from: Data(request.body)) {
            body = decoded
        } else {
            return Self.cse138Error(request.method, .badRequest, "Failed to parse request body")
        }
        var context = body.causalContext ?? CSE138Context()
        let table = Self.cse138Table
        switch (request.method, Array(names.dropFirst())) {
        case (_, let path) where path.first == "keys" && path.count <= 2:
            let key = path.count == 2 ? path[1] : ""
            guard !key.isEmpty else { return Self.cse138Error(request.method, .badRequest, "Key is missing") }
            guard key.utf8.count <= 50 else {
                return Self.cse138Error(request.method, .badRequest, "Key is too long")
            }
            let row = RowKey(table: table, parts: [.string(key)])
            switch request.method {
            case .PUT:
                try grants.require(.write, on: table.namespace)
                guard let value = body.value, !value.isEmpty else {
                    return Self.cse138Error(request.method, .badRequest, "Value is missing")
                }
                return try await cse138Put(row, key: key, value: value, context: context)
            case .GET:
                try grants.require(.read, on: table.namespace)
                return try await cse138Get(row, key: key, context: context)
            case .DELETE:
                try grants.require(.write, on: table.namespace)
                let read = try await cse138Read(row, quorum: QuorumOverrides())
                guard !read.isAbsent else {
                    return Self.cse138(
                        .notFound,
                        CSE138Answer(
                            message: "Error in DELETE", error: "Key does not exist", doesExist: false,
                            causalContext: context))
                }
                let started = Self.nowMilliseconds()
                _ = try await service.delete(row, options: WriteOptions())
                context.note(key, started)
                return Self.cse138(
                    .ok,
                    CSE138Answer(message: "Deleted successfully", doesExist: true, causalContext: context))
            default:
                throw KVError(.methodNotAllowed, "\(request.method.rawValue) is not allowed on a key")
            }
        case (.GET, ["key-count"]):
            try grants.require(.read, on: table.namespace)
            let view = try await cse138View()
            let counts = try await cse138KeyCounts(view)
            let own = view.shardOfThisNode
            return Self.cse138(
                .ok,
                CSE138Answer(
                    message: "Key count retrieved successfully",
                    keyCount: own.map { counts[$0] ?? 0 } ?? counts.values.reduce(0, +),
                    causalContext: context))
        case (.GET, ["shards"]):
            try grants.require(.read, on: table.namespace)
            let view = try await cse138View()
            return Self.cse138(
                .ok,
                CSE138Answer(
                    message: "Shard membership retrieved successfully",
                    shards: Array(view.shards.indices.map { $0 + 1 }),
                    causalContext: context))
        case (.GET, let path) where path.count == 2 && path[0] == "shards":
            try grants.require(.read, on: table.namespace)
            let view = try await cse138View()
            guard let id = Int(path[1]), id >= 1, id <= view.shards.count else {
                return Self.cse138Error(request.method, .notFound, "Shard does not exist")
            }
            let counts = try await cse138KeyCounts(view)
            return Self.cse138(
                .ok,
                CSE138Answer(
                    message: "Shard information retrieved successfully", keyCount: counts[id - 1] ?? 0,
                    shardID: id,
                    replicas: view.shards[id - 1], causalContext: context))
        case (.PUT, ["view-change"]):
            try grants.require(.admin, on: nil)
            guard let members = body.view?.members, !members.isEmpty else {
                return Self.cse138Error(request.method, .badRequest, "Failed to parse request body")
            }
            return try await cse138ViewChange(
                members, replicationFactor: body.replicationFactor, context: context)
        default:
            throw KVError(.notFound, "no such route of the key-value-store API")
        }
    }

    private static func nowMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }

    /// Reads a key of the table, creating the table on first use.
    private func cse138Read(_ row: RowKey, quorum: QuorumOverrides) async throws(KVError) -> ReadResult {
        do {
            return try await service.get(row, options: ReadOptions(quorum: quorum))
        } catch  where error.code == .tableNotFound {
            return ReadResult(siblings: [], context: "", etag: "")
        }
    }

    private func cse138EnsureTable() async throws(KVError) {
        do {
            _ = try await service.createTable(
                TableDescriptor(
                    name: Self.cse138Table, schema: try KeySchema([.string]), conflictPolicy: .lastWriterWins)
            )
        } catch  where error.code == .tableExists {}
    }

    private func cse138Put(_ row: RowKey, key: String, value: String, context: CSE138Context)
        async throws(KVError) -> HTTPResponse
    {
        var context = context
        let started = Self.nowMilliseconds()
        let bytes = RowValue(bytes: Array(value.utf8), contentType: "text/plain")
        // Written only if absent first: that tells "added" from "updated" in one request
        // for a new key.
        var replaced = false
        for attempt in 0..<2 {
            do {
                _ = try await service.put(row, value: bytes, options: WriteOptions(condition: .ifAbsent))
                break
            } catch  where error.code == .tableNotFound && attempt == 0 {
                try await cse138EnsureTable()
            } catch  where error.code == .preconditionFailed {
                _ = try await service.put(row, value: bytes, options: WriteOptions())
                replaced = true
                break
            }
        }
        context.note(key, started)
        return Self.cse138(
            replaced ? .ok : .created,
            CSE138Answer(
                message: replaced ? "Updated successfully" : "Added successfully", replaced: replaced,
                causalContext: context))
    }

    private func cse138Get(_ row: RowKey, key: String, context: CSE138Context) async throws(KVError)
        -> HTTPResponse
    {
        var context = context
        var read = try await cse138Read(row, quorum: QuorumOverrides())
        let expected = context.seen?[key] ?? 0
        func newest(_ read: ReadResult) -> Int64 { read.siblings.map(\.timestampMilliseconds).max() ?? 0 }
        if expected > 0, newest(read) < expected {
            // The quorum read found an older version than this client saw (a sloppy
            // quorum kept the newer one elsewhere): ask every replica.
            do {
                read = try await cse138Read(row, quorum: QuorumOverrides(r: try await cse138AllReplicas()))
            } catch {
                // A replica is down, which is when a stand-in may hold the newer version.
                return Self.cse138Error(.GET, .serviceUnavailable, "Unable to satisfy request")
            }
            if !read.isAbsent, newest(read) < expected {
                return Self.cse138Error(.GET, .serviceUnavailable, "Unable to satisfy request")
            }
        }
        guard let sibling = read.siblings.first, let value = sibling.value else {
            return Self.cse138(
                .notFound,
                CSE138Answer(
                    message: "Error in GET", error: "Key does not exist", doesExist: false,
                    causalContext: context))
        }
        context.note(key, sibling.timestampMilliseconds)
        return Self.cse138(
            .ok,
            CSE138Answer(
                message: "Retrieved successfully", value: String(decoding: value.bytes, as: UTF8.self),
                doesExist: true, causalContext: context))
    }
}
