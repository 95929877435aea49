import FoundationEssentials
import KVCore
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A ``KeyValueService`` that talks to a kv server over its HTTP API.
///
/// It is the Swift client library, and the way the test suite runs the same service
/// conformance suite against a real server as against an in-process node. Errors come
/// back as the server's ``KVError`` codes. One instance uses one connection (requests
/// run one at a time); open several for concurrency.
public final class HTTPKeyValueService: KeyValueService {
    private let connection: HTTPConnection
    private let schemas: SchemaCache

    /// Connects to a server at `host:port`.
    public convenience init(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        options: HTTPClientOptions = HTTPClientOptions()
    )
        async throws(KVError)
    {
        try await self.init(host: host, port: port, group: group, options: options, schemas: SchemaCache())
    }

    /// Connects to a server at `host:port`, sharing `schemas` with other connections of
    /// one client (a ``ClusterClient`` keeps one cache for all its connections).
    init(
        host: String, port: Int, group: any EventLoopGroup, options: HTTPClientOptions, schemas: SchemaCache
    )
        async throws(KVError)
    {
        self.schemas = schemas
        connection = try await HTTPConnection(host: host, port: port, group: group, options: options)
    }

    /// Connects to a server given as a URL such as `http://127.0.0.1:7700`; an
    /// `https://` URL speaks TLS.
    public convenience init(url: String, options: HTTPClientOptions = HTTPClientOptions())
        async throws(KVError)
    {
        let (host, port) = try Self.parse(url: url)
        var options = options
        if url.hasPrefix("https://") { options.useTLS = true }
        try await self.init(host: host, port: port, options: options)
    }

    /// Splits `http://host:port[/]` (or `https://…`) into host and port.
    public static func parse(url: String) throws(KVError) -> (String, Int) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        if rest.hasPrefix("https://") { rest = rest.dropFirst(8) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        let pieces = rest.split(separator: ":", omittingEmptySubsequences: false)
        guard pieces.count == 2, !pieces[0].isEmpty, let port = Int(pieces[1]), (1...65535).contains(port)
        else {
            throw KVError(
                .invalidRequest,
                "'\(url)' is not a server URL like http://127.0.0.1:7700 or https://127.0.0.1:7700")
        }
        return (String(pieces[0]), port)
    }

    /// Closes the connection.
    public func close() async {
        await connection.close()
    }

    // MARK: Plumbing

    /// Percent-encodes everything but unreserved characters, so any byte survives a path
    /// segment or query value.
    static func escape(_ bytes: [UInt8]) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var output: [UInt8] = []
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                output.append(byte)
            default:
                output += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    static func escape(_ text: String) -> String { escape(Array(text.utf8)) }

    static func rowPath(_ key: RowKey) -> String {
        "/v1/\(escape(key.table.namespace))/\(escape(key.table.table))/"
            + key.parts.map { escape($0.textBytes) }.joined(separator: "/")
    }

    static func tablePath(_ name: TableName) -> String {
        "/v1/_tables/\(escape(name.namespace))/\(escape(name.table))"
    }

    func send(
        _ method: HTTPMethod, _ target: String, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8]? = nil
    )
        async throws(KVError) -> ClientResponse
    {
        try await connection.send(method, target, headers: headers, body: body)
    }

    static func decode<Value: Decodable>(_ type: Value.Type, _ response: ClientResponse) throws(KVError)
        -> Value
    {
        do {
            return try JSONDecoder().decode(type, from: Data(response.body))
        } catch {
            throw KVError(
                .internalError, "the server's response (\(response.status)) is not the expected JSON")
        }
    }

    static func encode<Value: Encodable>(_ value: Value) -> [UInt8] {
        Array((try? JSONEncoder().encode(value)) ?? Data())
    }

    /// The server's error, from a non-success response.
    public static func failure(_ response: ClientResponse) -> KVError {
        if let body = try? JSONDecoder().decode(WireError.self, from: Data(response.body)) {
            return KVError(KVError.Code(rawValue: body.code), body.message)
        }
        return KVError(.internalError, "the server answered \(response.status) without an error body")
    }

    func expect(_ response: ClientResponse, _ statuses: Set<Int>) throws(KVError) {
        guard statuses.contains(response.status) else { throw Self.failure(response) }
    }

    func schema(_ name: TableName) async throws(KVError) -> KeySchema {
        if let schema = schemas.get(name) { return schema }
        let schema = try await table(name).schema
        schemas.set(name, schema)
        return schema
    }

    static func sibling(_ wire: WireSibling) throws(KVError) -> Sibling {
        if let valueID = wire.valueID {
            // A large value is named, not sent: the record says which, how long, and its MD5.
            guard let id = UUIDValue(valueID), let length = wire.length, length >= 0,
                let md5 = wire.md5.flatMap(Self.hexBytes), md5.count == 16
            else {
                throw KVError(.internalError, "the server sent a malformed large value record")
            }
            return Sibling(
                value: RowValue(
                    largeValue: LargeValue(
                        id: id, length: length, chunkBytes: LargeValue.defaultChunkBytes, md5: md5,
                        replicas: 1),
                    contentType: wire.contentType),
                timestampMilliseconds: wire.modifiedMilliseconds,
                expiresAtMilliseconds: wire.expiresMilliseconds)
        }
        guard let bytes = wire.bytes else {
            throw KVError(.internalError, "the server sent a value that is not base64url")
        }
        return Sibling(
            value: RowValue(bytes: bytes, contentType: wire.contentType),
            timestampMilliseconds: wire.modifiedMilliseconds, expiresAtMilliseconds: wire.expiresMilliseconds)
    }

    /// The bytes of an even-length hexadecimal text, or `nil`.
    static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16)
            else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }

    static func descriptor(_ wire: WireTable) throws(KVError) -> TableDescriptor {
        var types: [KeyPartType] = []
        for type in wire.key {
            guard let parsed = KeyPartType(rawValue: type) else {
                throw KVError(.internalError, "the server sent an unknown key part type '\(type)'")
            }
            types.append(parsed)
        }
        return TableDescriptor(
            name: try TableName(namespace: wire.namespace, table: wire.table),
            schema: try KeySchema(types, partitionKeyLength: wire.partitionKeyLength),
            defaults: wire.defaults.defaults,
            conflictPolicy: ConflictPolicy(rawValue: wire.conflicts ?? "siblings") ?? .siblings)
    }

    static func writeHeaders(_ options: WriteOptions) -> HTTPHeaders {
        var headers = HTTPHeaders()
        if let context = options.context { headers.add(name: "x-kv-context", value: context) }
        switch options.condition {
        case .none: break
        case .ifAbsent: headers.add(name: "if-none-match", value: "*")
        case .ifMatch(let tag): headers.add(name: "if-match", value: "\"\(tag)\"")
        }
        if let requestID = options.requestID { headers.add(name: "x-kv-request-id", value: requestID) }
        if let expiry = options.expiresAtMilliseconds {
            // HTTP takes a time to live in whole seconds; round up so the row never
            // expires earlier than asked.
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
            headers.add(name: "x-kv-ttl", value: String(max(1, (expiry - now + 999) / 1000)))
        }
        addQuorum(options.quorum, to: &headers)
        return headers
    }

    /// Quorum overrides travel as `x-kv-{name}` headers.
    static func addQuorum(_ quorum: QuorumOverrides, to headers: inout HTTPHeaders) {
        for (name, value) in quorum.named { headers.add(name: "x-kv-" + name, value: String(value)) }
    }

    static func readHeaders(_ options: ReadOptions) -> HTTPHeaders {
        var headers = HTTPHeaders()
        addQuorum(options.quorum, to: &headers)
        return headers
    }

    static func writeResult(_ response: ClientResponse) -> WriteResult {
        WriteResult(
            context: response.headers.first(name: "x-kv-context") ?? "",
            etag: unquote(response.headers.first(name: "etag") ?? ""))
    }

    static func unquote(_ tag: String) -> String {
        tag.count >= 2 && tag.hasPrefix("\"") && tag.hasSuffix("\"")
            ? String(tag.dropFirst().dropLast()) : tag
    }

    // MARK: KeyValueService

    public func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor {
        let body = WireCreateTable(
            key: descriptor.schema.parts.map(\.rawValue),
            partitionKeyLength: descriptor.schema.partitionKeyLength,
            defaults: WireDefaults(descriptor.defaults), conflicts: descriptor.conflictPolicy.rawValue)
        let response = try await send(.PUT, Self.tablePath(descriptor.name), body: Self.encode(body))
        try expect(response, [200, 201])
        return try Self.descriptor(Self.decode(WireTable.self, response))
    }

    public func table(_ name: TableName) async throws(KVError) -> TableDescriptor {
        let response = try await send(.GET, Self.tablePath(name))
        try expect(response, [200])
        return try Self.descriptor(Self.decode(WireTable.self, response))
    }

    public func tables(in namespace: String) async throws(KVError) -> [TableDescriptor] {
        let response = try await send(.GET, "/v1/_tables/\(Self.escape(namespace))")
        try expect(response, [200])
        var result: [TableDescriptor] = []
        for wire in try Self.decode([String: [WireTable]].self, response)["tables"] ?? [] {
            result.append(try Self.descriptor(wire))
        }
        return result
    }

    public func namespaces() async throws(KVError) -> [String] {
        let response = try await send(.GET, "/v1/_namespaces")
        try expect(response, [200])
        return try Self.decode([String: [String]].self, response)["namespaces"] ?? []
    }

    public func clearTable(_ name: TableName) async throws(KVError) {
        try expect(try await send(.POST, Self.tablePath(name) + "/clear"), [204])
    }

    public func dropTable(_ name: TableName) async throws(KVError) {
        try expect(try await send(.DELETE, Self.tablePath(name)), [204])
        schemas.set(name, nil)
    }

    public func dropNamespace(_ namespace: String) async throws(KVError) {
        try expect(try await send(.DELETE, "/v1/_tables/\(Self.escape(namespace))"), [204])
        schemas.removeNamespace(namespace)
    }

    /// Checks a key against its table's schema before it is turned into text, so a
    /// wrong part type is reported as such (as the in-process node does) rather than as
    /// text the server cannot parse.
    func validate(_ key: RowKey) async throws(KVError) {
        try await schema(key.table).validate(key.parts)
    }

    public func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult {
        try await validate(key)
        let response = try await send(.GET, Self.rowPath(key), headers: Self.readHeaders(options))
        let context = response.headers.first(name: "x-kv-context") ?? ""
        let etag = Self.unquote(response.headers.first(name: "etag") ?? "")
        switch response.status {
        case 200:
            let modified = response.headers.first(name: "x-kv-modified-ms").flatMap { Int64($0) } ?? 0
            let value = RowValue(
                bytes: response.body,
                contentType: response.headers.first(name: "content-type") ?? RowValue.defaultContentType)
            let expiry = response.headers.first(name: "x-kv-expires-ms").flatMap { Int64($0) }
            return ReadResult(
                siblings: [
                    Sibling(value: value, timestampMilliseconds: modified, expiresAtMilliseconds: expiry)
                ],
                context: context, etag: etag)
        case 300:
            let body = try Self.decode(WireSiblings.self, response)
            var siblings: [Sibling] = []
            for wire in body.siblings { siblings.append(try Self.sibling(wire)) }
            return ReadResult(siblings: siblings, context: body.context, etag: body.etag)
        case 404 where Self.failure(response).code == .rowNotFound:
            return ReadResult(siblings: [], context: context, etag: etag)
        default:
            throw Self.failure(response)
        }
    }

    public func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError)
        -> WriteResult
    {
        try await validate(key)
        var headers = Self.writeHeaders(options)
        headers.add(name: "content-type", value: value.contentType)
        let response = try await send(.PUT, Self.rowPath(key), headers: headers, body: value.bytes)
        try expect(response, [204])
        return Self.writeResult(response)
    }

    /// Uploads a value piece by piece, without holding it whole (the server streams it
    /// into chunks).
    public func putStreamed(
        _ key: RowKey, contentType: String, length: Int64?, body: any ValueBody, options: WriteOptions
    ) async throws(KVError) -> WriteResult {
        try await validate(key)
        var headers = Self.writeHeaders(options)
        headers.add(name: "content-type", value: contentType)
        let response = try await connection.stream(
            .PUT, Self.rowPath(key), headers: headers, length: length, body: body)
        try expect(response, [204])
        return Self.writeResult(response)
    }

    /// Reads a row's value (or the byte `range` of it) into `sink` as it arrives, without
    /// holding it whole; returns the response (its body empty), whose headers carry the
    /// length, the context and the MD5. A row with siblings is refused with
    /// `request.invalid` (read it with ``get(_:options:)`` and fetch one sibling).
    public func download(
        _ key: RowKey, options: ReadOptions, range: Range<Int64>? = nil, into sink: @escaping ResponseSink
    ) async throws(KVError) -> ClientResponse {
        try await validate(key)
        let headers = Self.readHeaders(options)
        var request = headers
        if let range, !range.isEmpty {
            request.add(name: "range", value: "bytes=\(range.lowerBound)-\(range.upperBound - 1)")
        }
        let response = try await connection.stream(.GET, Self.rowPath(key), headers: request, sink: sink)
        switch response.status {
        case 200, 206: return response
        case 300:
            throw KVError(
                .invalidRequest, "the row has siblings (concurrent writes); read it to resolve them")
        default: throw Self.failure(response)
        }
    }

    /// The length of a row's single value (a HEAD request), or `nil` when the row is
    /// absent or has siblings.
    public func valueLength(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? {
        try await validate(key)
        let response = try await send(.HEAD, Self.rowPath(key), headers: Self.readHeaders(options))
        guard response.status == 200 else { return nil }
        return response.headers.first(name: "content-length").flatMap { Int64($0) }
    }

    public func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult {
        try await validate(key)
        let response = try await send(.DELETE, Self.rowPath(key), headers: Self.writeHeaders(options))
        try expect(response, [204])
        return Self.writeResult(response)
    }

    public func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage {
        let schema = try await schema(request.table)
        var query: [String] = ["limit=\(request.limit)"]
        for part in request.range.start ?? [] { query.append("start=" + Self.escape(part.textBytes)) }
        for part in request.range.end ?? [] { query.append("end=" + Self.escape(part.textBytes)) }
        if request.reverse { query.append("reverse=true") }
        if request.keysOnly { query.append("keys_only=true") }
        if let continuation = request.continuation {
            query.append("continuation=" + Self.escape(continuation))
        }
        if let r = request.r { query.append("r=\(r)") }
        let target =
            "/v1/_scan/\(Self.escape(request.table.namespace))/\(Self.escape(request.table.table))?"
            + query.joined(separator: "&")
        let response = try await send(.GET, target)
        try expect(response, [200])
        let page = try Self.decode(WireScanPage.self, response)
        var rows: [ScanRow] = []
        for row in page.rows {
            var siblings: [Sibling] = []
            for wire in row.siblings ?? [] { siblings.append(try Self.sibling(wire)) }
            rows.append(
                ScanRow(
                    key: try schema.keyParts(row.key, prefix: false), siblings: siblings, context: row.context
                ))
        }
        return ScanPage(rows: rows, continuation: page.continuation)
    }

    static func counterPath(_ key: RowKey) -> String {
        "/v1/_counter/\(escape(key.table.namespace))/\(escape(key.table.table))/"
            + key.parts.map { escape($0.textBytes) }.joined(separator: "/")
    }

    public func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError)
        -> Int64
    {
        try await validate(key)
        let response = try await send(
            .POST, Self.counterPath(key) + "?delta=\(delta)", headers: Self.writeHeaders(options))
        try expect(response, [200])
        guard let value = try Self.decode([String: Int64].self, response)["value"] else {
            throw KVError(.internalError, "the server's counter answer has no value")
        }
        return value
    }

    public func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? {
        try await validate(key)
        let response = try await send(.GET, Self.counterPath(key), headers: Self.readHeaders(options))
        if response.status == 404, Self.failure(response).code == .rowNotFound { return nil }
        try expect(response, [200])
        return try Self.decode([String: Int64].self, response)["value"]
    }

    /// Sends a batch in the HTTP API's own JSON form and returns the server's answer as
    /// is (for tools that read batches from files).
    public func batch(_ batch: WireBatch) async throws(KVError) -> WireBatchResponse {
        let response = try await send(.POST, "/v1/_batch", body: Self.encode(batch))
        try expect(response, [200])
        return try Self.decode(WireBatchResponse.self, response)
    }

    public func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] {
        func wire(_ op: String, _ key: RowKey, _ value: RowValue?, _ options: WriteOptions?)
            -> WireBatchOperation
        {
            var item = WireBatchOperation(
                op: op, namespace: key.table.namespace, table: key.table.table,
                key: key.parts.map(WireKeyPart.init))
            if let value {
                item.valueBase64 = Base64URL.encode(value.bytes)
                item.contentType = value.contentType
            }
            item.context = options?.context
            item.requestID = options?.requestID
            switch options?.condition ?? WriteCondition.none {
            case .ifAbsent: item.ifNoneMatch = "*"
            case .ifMatch(let tag): item.ifMatch = tag
            case .none: break
            }
            return item
        }
        let items = operations.map { operation in
            switch operation {
            case .get(let key): wire("get", key, nil, nil)
            case .put(let key, let value, let options): wire("put", key, value, options)
            case .delete(let key, let options): wire("delete", key, nil, options)
            }
        }
        let body = try await batch(WireBatch(operations: items))
        var results: [BatchItemResult] = []
        for (operation, result) in zip(operations, body.results) {
            if let code = result.code, code != KVError.Code.rowNotFound.rawValue {
                results.append(.failed(KVError(KVError.Code(rawValue: code), result.message ?? "")))
                continue
            }
            switch operation {
            case .get:
                var siblings: [Sibling] = []
                for wire in result.siblings ?? [] { siblings.append(try Self.sibling(wire)) }
                results.append(
                    .read(
                        ReadResult(siblings: siblings, context: result.context ?? "", etag: result.etag ?? "")
                    ))
            case .put, .delete:
                results.append(.written(WriteResult(context: result.context ?? "", etag: result.etag ?? "")))
            }
        }
        return results
    }

    public func nodeInfo() async throws(KVError) -> NodeInfo {
        let response = try await send(.GET, "/v1/_node")
        try expect(response, [200])
        let body = try Self.decode(WireNodeInfo.self, response)
        guard let node = NodeID(body.nodeID) else {
            throw KVError(.internalError, "the server sent an invalid node id")
        }
        return NodeInfo(
            nodeID: node, incarnation: body.incarnation, engine: body.engine, partitionCount: body.partitions,
            version: body.version, peerAddress: body.peerAddress)
    }

    public func backup(name: String?) async throws(KVError) -> BackupReport {
        let response = try await send(.POST, "/v1/_node/backup", body: Self.encode(WireBackup(name: name)))
        try expect(response, [200])
        let body = try Self.decode(WireBackup.self, response)
        guard let node = body.nodeID.flatMap(NodeID.init), let path = body.path else {
            throw KVError(.internalError, "the server sent an invalid backup report")
        }
        return BackupReport(
            nodeID: node, path: path, takenAtMilliseconds: body.takenAtMilliseconds ?? 0,
            layoutVersion: body.layoutVersion ?? 0)
    }

    public func clusterStatus() async throws(KVError) -> ClusterStatus {
        let response = try await send(.GET, "/v1/_cluster")
        try expect(response, [200])
        guard let status = try Self.decode(WireClusterStatus.self, response).status else {
            throw KVError(.internalError, "the server sent an invalid node id")
        }
        return status
    }

    public func clusterLayout() async throws(KVError) -> LayoutDescription {
        let response = try await send(.GET, "/v1/_cluster/layout")
        try expect(response, [200])
        let body = try Self.decode(WireLayout.self, response)
        var partitions: [[NodeID]] = []
        for list in body.partitions {
            var nodes: [NodeID] = []
            for text in list {
                guard let node = NodeID(text) else {
                    throw KVError(.internalError, "the server sent an invalid node id")
                }
                nodes.append(node)
            }
            partitions.append(nodes)
        }
        return LayoutDescription(
            version: body.version, replicationFactor: body.replicationFactor, partitions: partitions)
    }

    public func stageLayoutChange(_ change: LayoutChangeRequest) async throws(KVError) -> LayoutPlanReport {
        let response = try await send(.POST, "/v1/_cluster/stage", body: Self.encode(change))
        try expect(response, [200])
        return try Self.decode(LayoutPlanReport.self, response)
    }

    public func clearLayoutChanges() async throws(KVError) -> LayoutPlanReport {
        let response = try await send(.DELETE, "/v1/_cluster/stage")
        try expect(response, [200])
        return try Self.decode(LayoutPlanReport.self, response)
    }

    public func layoutPlan() async throws(KVError) -> LayoutPlanReport {
        let response = try await send(.GET, "/v1/_cluster/plan")
        try expect(response, [200])
        return try Self.decode(LayoutPlanReport.self, response)
    }

    public func commitLayoutPlan(_ id: String) async throws(KVError) -> LayoutPlanReport {
        let response = try await send(
            .POST, "/v1/_cluster/commit", body: Self.encode(LayoutCommitRequest(plan: id)))
        try expect(response, [200])
        return try Self.decode(LayoutPlanReport.self, response)
    }

    public func transfers() async throws(KVError) -> TransfersReport {
        let response = try await send(.GET, "/v1/_cluster/transfers")
        try expect(response, [200])
        return try Self.decode(TransfersReport.self, response)
    }

    public func controlTransfers(_ request: TransferControlRequest) async throws(KVError) -> TransfersReport {
        let response = try await send(.POST, "/v1/_cluster/transfers", body: Self.encode(request))
        try expect(response, [200])
        return try Self.decode(TransfersReport.self, response)
    }

    // MARK: Access tokens

    public func createAccessToken(_ request: AccessTokenRequest) async throws(KVError) -> CreatedAccessToken {
        let body = WireAccessToken(
            name: request.name, grants: request.grants.levels.mapValues(\.description),
            expiresInSeconds: request.expiresInSeconds)
        let response = try await send(.POST, "/v1/_auth/tokens", body: Self.encode(body))
        try expect(response, [201])
        let created = try Self.decode(WireAccessToken.self, response)
        guard let token = created.token else {
            throw KVError(.internalError, "the server created a token but did not send it")
        }
        return CreatedAccessToken(token: token, record: try created.record())
    }

    public func accessTokens() async throws(KVError) -> [AccessTokenRecord] {
        let response = try await send(.GET, "/v1/_auth/tokens")
        try expect(response, [200])
        var records: [AccessTokenRecord] = []
        for wire in try Self.decode([String: [WireAccessToken]].self, response)["tokens"] ?? [] {
            records.append(try wire.record())
        }
        return records
    }

    public func revokeAccessToken(id: String) async throws(KVError) -> AccessTokenRecord {
        let response = try await send(.DELETE, "/v1/_auth/tokens/" + Self.escape(id))
        try expect(response, [200])
        return try Self.decode(WireAccessToken.self, response).record()
    }

    /// What the token this client sends may do (`GET /v1/_auth/whoami`).
    public func grants() async throws(KVError) -> AccessGrants {
        let response = try await send(.GET, "/v1/_auth/whoami")
        try expect(response, [200])
        return try Self.decode(WireAccessToken.self, response).parsedGrants()
    }
}

/// Table schemas the client has looked up, to parse scan rows.
final class SchemaCache: Sendable {
    private let schemas = Mutex<[TableName: KeySchema]>([:])

    func get(_ name: TableName) -> KeySchema? { schemas.withLock { $0[name] } }
    func set(_ name: TableName, _ schema: KeySchema?) { schemas.withLock { $0[name] = schema } }
    func removeNamespace(_ namespace: String) {
        schemas.withLock { $0 = $0.filter { $0.key.namespace != namespace } }
    }
}
