import FoundationEssentials
import KVCore
import KVFunctions
import Logging
import NIOHTTP1

/// Translates HTTP requests into ``KeyValueService`` calls and their results back into
/// HTTP responses. It holds no data logic: every decision about data is the service's.
///
/// Routes (see docs/http-api.md):
/// - `GET /health` and `/health/ready` (200 once the node serves data, else 503),
///   `GET /health/live` (200 while the process answers), `GET /v1/_node`,
///   `GET /v1/_namespaces`
/// - `GET|DELETE /v1/_tables/{ns}`; `PUT|GET|DELETE /v1/_tables/{ns}/{table}`;
///   `POST /v1/_tables/{ns}/{table}/clear`
/// - `GET /v1/_scan/{ns}/{table}[/{prefix parts…}]`
/// - `POST /v1/_batch`
/// - `GET|POST /v1/_counter/{ns}/{table}/{key parts…}[?delta=N]`
/// - `GET|HEAD|PUT|DELETE /v1/{ns}/{table}/{key parts…}`
/// - `GET /v1/_cluster`, `GET /v1/_cluster/layout`
/// - `GET /metrics` (Prometheus text format, when the process exports metrics)
/// - `GET /ui` (the dashboard: one self-contained page that polls the routes above)
/// - `POST /v1/_node/backup` (a consistent backup of this node, on its machine)
/// - `GET /v1/_auth/whoami`; `GET|POST /v1/_auth/tokens`; `DELETE /v1/_auth/tokens/{id}`
/// - `GET /v1/_functions`; `POST|GET|DELETE /v1/_functions/{name}`;
///   `POST /v1/_apply/{ns}/{table}/{key parts…}?function=NAME` (docs/functions.md)
///
/// With access control on, every route but `/health…` and `GET /v1/_node` needs a
/// bearer token with the grant the route asks for (docs/security.md).
///
/// Reads and writes take quorum overrides (`n`, `r`, `w`, `dw`, `pr`, `pw`) as query
/// parameters or as `x-kv-{name}` headers, and writes a client request id
/// (`x-kv-request-id` or `request_id`).
///
/// Names never start with `_`, so the `_`-prefixed segments cannot collide with them.
public struct Router: Sendable {
    /// The header that carries causal contexts in both directions.
    public static let contextHeader = "x-kv-context"
    /// The header that reports how many siblings a read found.
    public static let siblingsHeader = "x-kv-siblings"
    /// The header that carries a write's client request id.
    public static let requestIDHeader = "x-kv-request-id"

    let service: any KeyValueService
    let logger: Logger
    /// Answers `/metrics` and counts requests.
    let metrics: HTTPMetrics
    /// Who may do what.
    let access: AccessControl
    /// The API this router speaks.
    let dialect: HTTPDialect
    /// The registered update functions, applied here.
    let functions: UpdateFunctions

    /// Creates a router over `service`.
    public init(
        service: any KeyValueService, logger: Logger, metrics: HTTPMetrics = HTTPMetrics(),
        access: AccessControl = .off, dialect: HTTPDialect = .kv, functions sandbox: FunctionSandbox = .shared
    ) {
        self.service = service
        self.logger = logger
        self.metrics = metrics
        self.access = access
        self.dialect = dialect
        functions = UpdateFunctions(service: service, sandbox: sandbox)
    }

    /// Answers one request; failures become JSON error responses.
    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        do {
            return try await route(request)
        } catch {
            if error.code == .internalError || error.code == .storageIO {
                logger.error("request failed", metadata: ["error": "\(error)"])
            }
            return Self.errorResponse(error)
        }
    }

    /// Answers without suspending when the answer is at hand: health checks, and reads
    /// the service can serve from memory. `nil` means "go through ``respond(to:)``".
    ///
    /// This runs on the connection's event loop, so it must never wait: it only uses
    /// ``KeyValueService/immediateTable(_:)`` and ``KeyValueService/immediateGet(_:)``.
    public func respondImmediately(to request: HTTPRequest) -> HTTPResponse? {
        guard dialect == .kv else { return nil }
        let segments = request.pathSegments
        guard request.method == .GET || request.method == .HEAD else { return nil }
        if segments.first == Self.healthSegment, let response = health(segments) {
            return response
        }
        guard segments.count >= 4, segments[0] == Self.versionSegment, segments[1].first != UInt8(ascii: "_")
        else {
            return nil
        }
        do {
            let name = try tableName(segments, at: 1)
            guard let descriptor = service.immediateTable(name), !request.hasQuorumOverrides else {
                return nil
            }
            if access.isOn {
                try access.grants(for: request, service: service).require(.read, on: name.namespace)
            }
            let key = try rowKey(name, descriptor: descriptor, raw: segments.dropFirst(3))
            guard let result = try service.immediateGet(key) else { return nil }
            return read(result, request: request)
        } catch {
            return Self.errorResponse(error)
        }
    }

    /// Starts a row's `PUT` without suspending, when nothing it needs would make the
    /// event loop wait (its table at hand, its body whole), through
    /// ``KeyValueService/startPut(_:value:options:completion:)``; `completion` gets the
    /// outcome, which ``response(to:)`` turns into the response on the connection's event
    /// loop. `false` means "go through ``respond(to:)``", which also answers every error.
    public func startImmediately(
        _ request: HTTPRequest, completion: @escaping @Sendable (PutOutcome) -> Void
    ) -> Bool {
        guard dialect == .kv, request.method == .PUT, request.bodyStream == nil else { return false }
        let segments = request.pathSegments
        guard segments.count >= 4, segments[0] == Self.versionSegment, segments[1].first != UInt8(ascii: "_")
        else {
            return false
        }
        do {
            let name = try tableName(segments, at: 1)
            guard let descriptor = service.immediateTable(name) else { return false }
            if access.isOn {
                try access.grants(for: request, service: service).require(.write, on: name.namespace)
            }
            let key = try rowKey(name, descriptor: descriptor, raw: segments.dropFirst(3))
            let contentType = request.headers.first(name: "content-type") ?? RowValue.defaultContentType
            return service.startPut(
                key, value: RowValue(bytes: request.body, contentType: contentType),
                options: try writeOptions(request), completion: completion)
        } catch {
            return false
        }
    }

    /// The response to a put started by ``startImmediately(_:completion:)``: what
    /// ``respond(to:)`` answers for the same put.
    public func response(to outcome: PutOutcome) -> HTTPResponse {
        switch outcome.result() {
        case .success(let result):
            return written(result)
        case .failure(let error):
            if error.code == .internalError || error.code == .storageIO {
                logger.error("request failed", metadata: ["error": "\(error)"])
            }
            return Self.errorResponse(error)
        }
    }

    static let healthSegment = Array("health".utf8)
    static let versionSegment = Array("v1".utf8)
    static let healthResponse = json(["status": "ok"])

    /// The health checks: liveness (`/health/live`: the process answers) and readiness
    /// (`/health`, `/health/ready`: the node serves data, so a client that waits for it
    /// is not then refused). `nil` for another path under `/health`.
    func health(_ segments: [[UInt8]]) -> HTTPResponse? {
        switch segments.count == 2
            ? String(decoding: segments[1], as: UTF8.self) : segments.count == 1 ? "" : "-"
        {
        case "live":
            return Self.healthResponse
        case "", "ready":
            return service.readinessProblem().map(Self.errorResponse) ?? Self.healthResponse
        default:
            return nil
        }
    }

    /// Parses a row's key parts (percent-decoded path segments) against its table's schema.
    func rowKey(_ table: TableName, descriptor: TableDescriptor, raw: ArraySlice<[UInt8]>) throws(KVError)
        -> RowKey
    {
        guard raw.count == descriptor.schema.parts.count else {
            throw KVError(
                .keyArity,
                "the key has \(raw.count) parts; the table's schema has \(descriptor.schema.parts.count)")
        }
        var parts: [KeyPart] = []
        parts.reserveCapacity(raw.count)
        for (index, text) in raw.enumerated() {
            parts.append(try KeyPart.parse(text, as: descriptor.schema.parts[index]))
        }
        return RowKey(table: table, parts: parts)
    }

    /// The JSON error response for `error`.
    public static func errorResponse(_ error: KVError) -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        let status = HTTPErrorStatus.status(for: error.code)
        // RFC 6750: a 401 names the scheme the client should use.
        if status == .unauthorized { headers.add(name: "www-authenticate", value: "Bearer") }
        return HTTPResponse(
            status: status, headers: headers,
            body: .bytes(JSON.encode(WireError(code: error.code.rawValue, message: error.message))))
    }

    static func json<Value: Encodable>(_ value: Value, status: HTTPResponseStatus = .ok) -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        return HTTPResponse(status: status, headers: headers, body: .bytes(JSON.encode(value)))
    }

    private func text(_ segment: [UInt8], _ what: String) throws(KVError) -> String {
        guard let text = String(validating: segment, as: UTF8.self) else {
            throw KVError(.invalidName, "the \(what) name is not valid UTF-8")
        }
        return text
    }

    private func tableName(_ segments: [[UInt8]], at index: Int) throws(KVError) -> TableName {
        try TableName(
            namespace: text(segments[index], "namespace"), table: text(segments[index + 1], "table"))
    }

    func methodNotAllowed(_ request: HTTPRequest) -> KVError {
        KVError(.methodNotAllowed, "\(request.method.rawValue) is not allowed here")
    }

    func route(_ request: HTTPRequest) async throws(KVError) -> HTTPResponse {
        if case .minikeyvalue(let table) = dialect {
            return try await routeMinikeyvalue(request, table: table)
        }
        let segments = request.pathSegments
        let names = segments.map { String(decoding: $0, as: UTF8.self) }
        if names.first == "health", let response = health(segments) {
            guard request.method == .GET || request.method == .HEAD else { throw methodNotAllowed(request) }
            return response
        }
        // The dashboard page holds no data; the API calls it makes carry the token.
        if names.first == "ui", names.count == 1 || (names.count == 2 && names[1].isEmpty) {
            guard request.method == .GET || request.method == .HEAD else { throw methodNotAllowed(request) }
            return Dashboard.response()
        }
        // Bootstrapping nodes ask each other for this before they hold any token.
        if names == ["v1", "_node"], request.method == .GET { return try await nodeInfo() }
        let grants = try access.grants(for: request, service: service)
        if names == ["metrics"], let exporter = metrics.exporter {
            guard request.method == .GET else { throw methodNotAllowed(request) }
            try grants.require(.read, on: nil)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain; version=0.0.4; charset=utf-8")
            return HTTPResponse(status: .ok, headers: headers, body: .bytes(await exporter()))
        }
        // CSE138's key-value-store API (docs/cse138.md).
        if names.first == "kv-store" { return try await routeCSE138(request, names, grants: grants) }
        guard names.first == "v1", segments.count >= 2 else {
            throw KVError(.notFound, "no route for this path; the API lives under /v1")
        }
        switch names[1] {
        case "_node":
            if names.count == 3, names[2] == "backup" {
                guard request.method == .POST else { throw methodNotAllowed(request) }
                try grants.require(.admin, on: nil)
                let body =
                    request.body.isEmpty ? WireBackup() : try JSON.decode(WireBackup.self, from: request.body)
                let report = try await service.backup(name: body.name)
                return Self.json(
                    WireBackup(
                        nodeID: report.nodeID.description, path: report.path,
                        takenAtMilliseconds: report.takenAtMilliseconds, layoutVersion: report.layoutVersion))
            }
            throw methodNotAllowed(request)
        case "_auth":
            return try await routeAccess(request, Array(names.dropFirst(2)), grants: grants)
        case "_cluster":
            try grants.require(request.method == .GET ? .read : .admin, on: nil)
            return try await routeCluster(request, Array(names.dropFirst(2)))
        case "_namespaces":
            guard segments.count == 2, request.method == .GET else { throw methodNotAllowed(request) }
            return Self.json(["namespaces": try await service.namespaces().filter(grants.seesNamespace)])
        case "_tables":
            return try await routeTables(request, segments, grants: grants)
        case "_scan":
            guard segments.count >= 4 else {
                throw KVError(.notFound, "a scan is /v1/_scan/{namespace}/{table}")
            }
            guard request.method == .GET else { throw methodNotAllowed(request) }
            let name = try tableName(segments, at: 2)
            try grants.require(.read, on: name.namespace)
            return try await scan(request, table: name, prefix: Array(segments.dropFirst(4)))
        case "_functions":
            try grants.require(.admin, on: nil)
            return try await routeFunctions(request, Array(names.dropFirst(2)))
        case "_apply":
            guard segments.count >= 5 else {
                throw KVError(
                    .notFound, "an apply is /v1/_apply/{namespace}/{table}/{key parts…}?function=NAME")
            }
            guard request.method == .POST else { throw methodNotAllowed(request) }
            let name = try tableName(segments, at: 2)
            try grants.require(.write, on: name.namespace)
            let key = try rowKey(name, descriptor: try await service.table(name), raw: segments.dropFirst(4))
            return try await apply(request, key: key)
        case "_batch":
            guard segments.count == 2, request.method == .POST else { throw methodNotAllowed(request) }
            return try await batch(request, grants: grants)
        case "_counter":
            guard segments.count >= 5 else {
                throw KVError(.notFound, "a counter is /v1/_counter/{namespace}/{table}/{key parts…}")
            }
            let name = try tableName(segments, at: 2)
            try grants.require(request.method == .GET ? .read : .write, on: name.namespace)
            let key = try rowKey(name, descriptor: try await service.table(name), raw: segments.dropFirst(4))
            switch request.method {
            case .GET:
                guard let value = try await service.counter(key, options: try readOptions(request)) else {
                    throw KVError(.rowNotFound, "the counter does not exist")
                }
                return Self.json(["value": value])
            case .POST:
                let text = request.queryValue("delta") ?? "1"
                guard let delta = Int64(text) else {
                    throw KVError(.invalidRequest, "delta must be a 64-bit integer, not '\(text.prefix(30))'")
                }
                return Self.json(
                    ["value": try await service.increment(key, by: delta, options: try writeOptions(request))]
                )
            default:
                throw methodNotAllowed(request)
            }
        default:
            guard segments.count >= 4 else {
                throw KVError(.notFound, "a row is /v1/{namespace}/{table}/{key parts…}")
            }
            let name = try tableName(segments, at: 1)
            try grants.require(
                request.method == .GET || request.method == .HEAD ? .read : .write, on: name.namespace)
            return try await routeRow(request, table: name, parts: Array(segments.dropFirst(3)))
        }
    }

    private func nodeInfo() async throws(KVError) -> HTTPResponse {
        let info = try await service.nodeInfo()
        return Self.json(
            WireNodeInfo(
                nodeID: info.nodeID.description, incarnation: info.incarnation, engine: info.engine,
                partitions: info.partitionCount, version: info.version, peerAddress: info.peerAddress))
    }

    // MARK: Tables

    /// `/v1/_cluster/…`: status and layout, staged layout changes and their plan, the
    /// commit, and the transfers of a layout change.
    private func routeCluster(_ request: HTTPRequest, _ path: [String]) async throws(KVError) -> HTTPResponse
    {
        switch (request.method, path) {
        case (.GET, []): return Self.json(WireClusterStatus(try await service.clusterStatus()))
        case (.GET, ["layout"]): return Self.json(WireLayout(try await service.clusterLayout()))
        case (.GET, ["plan"]): return Self.json(try await service.layoutPlan())
        case (.POST, ["stage"]):
            let change = try JSON.decode(LayoutChangeRequest.self, from: request.body)
            return Self.json(try await service.stageLayoutChange(change))
        case (.DELETE, ["stage"]): return Self.json(try await service.clearLayoutChanges())
        case (.POST, ["commit"]):
            let commit = try JSON.decode(LayoutCommitRequest.self, from: request.body)
            return Self.json(try await service.commitLayoutPlan(commit.plan))
        case (.GET, ["transfers"]): return Self.json(try await service.transfers())
        case (.POST, ["transfers"]):
            let control = try JSON.decode(TransferControlRequest.self, from: request.body)
            return Self.json(try await service.controlTransfers(control))
        case (_, []), (_, ["layout"]), (_, ["plan"]), (_, ["stage"]), (_, ["commit"]), (_, ["transfers"]):
            throw methodNotAllowed(request)
        default:
            throw KVError(
                .notFound,
                "the cluster routes are /v1/_cluster, /v1/_cluster/layout, /plan, /stage, /commit and /transfers"
            )
        }
    }

    /// `/v1/_auth/…`: `whoami` (any valid token: what it may do) and the tokens
    /// themselves (cluster admins only): list, create, revoke.
    private func routeAccess(_ request: HTTPRequest, _ path: [String], grants: AccessGrants)
        async throws(KVError) -> HTTPResponse
    {
        if path == ["whoami"] {
            guard request.method == .GET else { throw methodNotAllowed(request) }
            return Self.json(WireAccessToken(grants: grants.levels.mapValues(\.description)))
        }
        guard path.first == "tokens", path.count <= 2 else {
            throw KVError(.notFound, "the access routes are /v1/_auth/whoami and /v1/_auth/tokens[/{id}]")
        }
        try grants.require(.admin, on: nil)
        switch (request.method, path.count) {
        case (.GET, 1):
            return Self.json(["tokens": try await service.accessTokens().map { WireAccessToken($0) }])
        case (.POST, 1):
            let body = try JSON.decode(WireAccessToken.self, from: request.body)
            let created = try await service.createAccessToken(
                AccessTokenRequest(
                    name: body.name ?? "", grants: try body.parsedGrants(),
                    expiresInSeconds: body.expiresInSeconds))
            return Self.json(WireAccessToken(created.record, token: created.token), status: .created)
        case (.DELETE, 2):
            return Self.json(WireAccessToken(try await service.revokeAccessToken(id: path[1])))
        default:
            throw methodNotAllowed(request)
        }
    }

    private func routeTables(_ request: HTTPRequest, _ segments: [[UInt8]], grants: AccessGrants)
        async throws(KVError) -> HTTPResponse
    {
        // Reading a table's description needs read; changing tables needs admin.
        let needed: AccessLevel = request.method == .GET ? .read : .admin
        switch segments.count {
        case 3:
            let namespace = try text(segments[2], "namespace")
            try TableName.validate(namespace, what: "namespace")
            try grants.require(needed, on: namespace)
            switch request.method {
            case .GET:
                let tables = try await service.tables(in: namespace)
                return Self.json(["tables": tables.map(WireTable.init)])
            case .DELETE:
                try await service.dropNamespace(namespace)
                return HTTPResponse(status: .noContent)
            default: throw methodNotAllowed(request)
            }
        case 4:
            let name = try tableName(segments, at: 2)
            try grants.require(needed, on: name.namespace)
            switch request.method {
            case .PUT:
                let body = try JSON.decode(WireCreateTable.self, from: request.body)
                var types: [KeyPartType] = []
                for type in body.key {
                    guard let parsed = KeyPartType(rawValue: type) else {
                        throw KVError(
                            .invalidSchema,
                            "unknown key part type '\(type)'; use string, bytes, int64 or uuid")
                    }
                    types.append(parsed)
                }
                let schema = try KeySchema(types, partitionKeyLength: body.partitionKeyLength)
                let descriptor = TableDescriptor(
                    name: name, schema: schema, defaults: body.defaults?.defaults ?? ReplicationDefaults(),
                    conflictPolicy: try body.conflictPolicy())
                return Self.json(WireTable(try await service.createTable(descriptor)))
            case .GET:
                return Self.json(WireTable(try await service.table(name)))
            case .DELETE:
                try await service.dropTable(name)
                return HTTPResponse(status: .noContent)
            default: throw methodNotAllowed(request)
            }
        case 5 where String(decoding: segments[4], as: UTF8.self) == "clear":
            guard request.method == .POST else { throw methodNotAllowed(request) }
            let name = try tableName(segments, at: 2)
            try grants.require(.admin, on: name.namespace)
            try await service.clearTable(name)
            return HTTPResponse(status: .noContent)
        default:
            throw KVError(.notFound, "no such table route")
        }
    }

    // MARK: Rows

    private func routeRow(_ request: HTTPRequest, table: TableName, parts raw: [[UInt8]])
        async throws(KVError)
        -> HTTPResponse
    {
        let key = try rowKey(table, descriptor: try await service.table(table), raw: raw[...])
        switch request.method {
        case .GET, .HEAD:
            return read(try await service.get(key, options: try readOptions(request)), request: request)
        case .PUT:
            let contentType = request.headers.first(name: "content-type") ?? RowValue.defaultContentType
            if let stream = request.bodyStream {
                let length = request.headers.first(name: "content-length").flatMap { Int64($0) }
                return written(
                    try await service.putStreamed(
                        key, contentType: contentType, length: length, body: stream,
                        options: try writeOptions(request)))
            }
            let result = try await service.put(
                key, value: RowValue(bytes: request.body, contentType: contentType),
                options: try writeOptions(request))
            return written(result)
        case .DELETE:
            return written(try await service.delete(key, options: try writeOptions(request)))
        default:
            throw methodNotAllowed(request)
        }
    }

    /// Quorum overrides from query parameters, else `x-kv-{name}` headers.
    func quorum(_ request: HTTPRequest) throws(KVError) -> QuorumOverrides {
        try QuorumOverrides.parse { name in
            request.queryValue(name) ?? request.headers.first(name: "x-kv-" + name)
        }
    }

    private func readOptions(_ request: HTTPRequest) throws(KVError) -> ReadOptions {
        ReadOptions(quorum: try quorum(request))
    }

    private func writeOptions(_ request: HTTPRequest) throws(KVError) -> WriteOptions {
        var options = WriteOptions(
            context: request.headers.first(name: Self.contextHeader), quorum: try quorum(request),
            requestID: request.headers.first(name: Self.requestIDHeader) ?? request.queryValue("request_id"))
        if let ifNoneMatch = request.headers.first(name: "if-none-match") {
            guard ifNoneMatch.trimmedWhitespace == "*" else {
                throw KVError(.invalidRequest, "only If-None-Match: * is supported on writes")
            }
            options.condition = .ifAbsent
        } else if let ifMatch = request.headers.first(name: "if-match") {
            options.condition = .ifMatch(Self.unquote(ifMatch))
        }
        if let ttl = request.queryValue("ttl") ?? request.headers.first(name: "x-kv-ttl") {
            options.expiresAtMilliseconds = try Self.expiry(ttlSeconds: ttl)
        }
        return options
    }

    /// The longest time to live a write may ask for: ten years.
    static let maximumTTLSeconds: Int64 = 10 * 366 * 86_400

    /// When a version written now with a time to live of `text` seconds expires.
    static func expiry(ttlSeconds text: String) throws(KVError) -> Int64 {
        guard let seconds = Int64(text.trimmedWhitespace), (1...maximumTTLSeconds).contains(seconds) else {
            throw KVError(
                .invalidRequest, "ttl must be a whole number of seconds from 1 to \(maximumTTLSeconds)")
        }
        return Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) + seconds * 1000
    }

    /// Strips a weak marker and quotes from an entity tag.
    static func unquote(_ tag: String) -> String {
        var text = Substring(tag.trimmedWhitespace)
        if text.hasPrefix("W/") { text = text.dropFirst(2) }
        if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") { text = text.dropFirst().dropLast() }
        return String(text)
    }

    func versionHeaders(context: String, etag: String) -> HTTPHeaders {
        // Room for what a read adds after these (siblings, type, time, ranges, checksum)
        // and the connection's two: the list is allocated once per response.
        var headers: [(String, String)] = []
        headers.reserveCapacity(12)
        headers.append((Self.contextHeader, context))
        headers.append(("etag", "\"\(etag)\""))
        return HTTPHeaders(headers)
    }

    private func written(_ result: WriteResult) -> HTTPResponse {
        HTTPResponse(status: .noContent, headers: versionHeaders(context: result.context, etag: result.etag))
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    var trimmedWhitespace: String {
        let bytes = Array(utf8)
        guard let first = bytes.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }),
            let last = bytes.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })
        else { return "" }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
