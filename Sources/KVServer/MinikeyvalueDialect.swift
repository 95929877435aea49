import KVCore
import NIOHTTP1

/// Which HTTP API a listener speaks.
public enum HTTPDialect: Sendable, Hashable {
    /// The store's own API (`/v1/…`, docs/http-api.md).
    case kv
    /// minikeyvalue's API at the root (keys are URL paths), with kvDB's `POST` to create,
    /// backed by `table` (one `bytes` key part) and its companion table of unlinked keys
    /// (docs/minikeyvalue.md).
    case minikeyvalue(TableName)
}

/// minikeyvalue's HTTP API over a table of the cluster, so its users' scripts work
/// unchanged. The key is the whole percent-decoded path, leading slash included, as
/// minikeyvalue's master takes `r.URL.Path`.
///
/// - `PUT /key` (kvDB: `POST /key`): `201` created; `403` when the key exists (no
///   overwrite); `411` without a `Content-Length`, or with 0 (no empty values). Large
///   bodies stream into chunks like any value.
/// - `GET /key` and `HEAD /key`: `200` with the value (minikeyvalue answers `302` to a
///   volume server; clients follow it, so they read the same bytes either way),
///   `Content-Length`, `Content-Md5` (hexadecimal MD5 of the whole value) and `Range`
///   support (`206`); `404` with an empty body for a missing or unlinked key.
/// - `DELETE /key`: `204`, or `404` when there is nothing to delete (an unlinked key is
///   deleted for good).
/// - `UNLINK /key`: a virtual delete: the key reads as missing and is listed by
///   `?unlinked` until it is deleted or written again; `204`, `404` when not live.
/// - `REBALANCE /key`: `204` for a live key (the cluster moves rows itself), else `404`.
/// - `GET /prefix?list` and `GET /prefix?unlinked` (the operation is the first query
///   parameter), with `start` (the first key, in full) and `limit`:
///   `{"next": "…", "keys": ["/…", …]}` in key order, `next` the key to start the next
///   page with (empty at the end); `413` past a million keys without a limit; `400` for a
///   limit that is not a number; `403` for another query, or a query on another method.
extension Router {
    /// The companion table of `table`, holding the unlinked keys.
    static func unlinkedTable(of table: TableName) -> TableName {
        (try? TableName(namespace: table.namespace, table: String(table.table.prefix(55)) + ".unlinked"))
            ?? table
    }

    func routeMinikeyvalue(_ request: HTTPRequest, table: TableName) async throws(KVError) -> HTTPResponse {
        let grants = try access.grants(for: request, service: service)
        let key = request.path
        let reads = request.method == .GET || request.method == .HEAD
        try grants.require(reads ? .read : .write, on: table.namespace)
        if !request.query.isEmpty {
            // Any request with a query is a listing, and only GET may list.
            guard request.method == .GET else { return Self.empty(.forbidden) }
            return try await list(request, table: table, prefix: key)
        }
        switch request.method {
        case .GET, .HEAD:
            let result: ReadResult
            do {
                result = try await service.get(
                    RowKey(table: table, parts: [.bytes(key)]), options: ReadOptions())
            } catch  where error.code == .tableNotFound {
                return Self.empty(.notFound)
            }
            guard let sibling = result.siblings.first else { return Self.empty(.notFound) }
            var response = valueResponse(sibling, request: request, headers: HTTPHeaders())
            response.headers.remove(name: "content-md5")
            response.headers.remove(name: "x-kv-modified-ms")
            let md5 = sibling.value?.largeValue?.md5Hex ?? Self.md5Hex(sibling.value?.bytes ?? [])
            response.headers.add(name: "Content-Md5", value: md5)
            return response
        case .PUT, .POST:
            return try await create(request, table: table, key: key)
        case .DELETE:
            return try await remove(table: table, key: key, unlink: false)
        case .UNLINK:
            return try await remove(table: table, key: key, unlink: true)
        case .RAW(value: "REBALANCE"):
            // The cluster places and moves rows itself: a live key is where it belongs.
            let live = try? await service.get(
                RowKey(table: table, parts: [.bytes(key)]), options: ReadOptions())
            return Self.empty(live?.isAbsent == false ? .noContent : .notFound)
        default:
            throw KVError(.methodNotAllowed, "\(request.method.rawValue) is not a minikeyvalue method")
        }
    }

    /// An answer with no body, as minikeyvalue gives.
    static func empty(_ status: HTTPResponseStatus) -> HTTPResponse {
        HTTPResponse(status: status, headers: HTTPHeaders(), body: .bytes([]))
    }

    private func create(_ request: HTTPRequest, table: TableName, key: [UInt8]) async throws(KVError)
        -> HTTPResponse
    {
        // minikeyvalue refuses an empty body, which is also what a body without a
        // length and not chunked is; a chunked body of unknown length is taken.
        let declared = request.headers.first(name: "content-length").flatMap { Int64($0) }
        let chunked =
            request.headers.first(name: "transfer-encoding")?.lowercased().contains("chunked") == true
        guard declared.map({ $0 > 0 }) ?? chunked else { return Self.empty(.lengthRequired) }
        try await ensureTables(table)
        let rowKey = RowKey(table: table, parts: [.bytes(key)])
        let contentType = request.headers.first(name: "content-type") ?? RowValue.defaultContentType
        let options = WriteOptions(condition: .ifAbsent)
        do {
            if let stream = request.bodyStream {
                _ = try await service.putStreamed(
                    rowKey, contentType: contentType, length: declared, body: stream, options: options)
            } else {
                _ = try await service.put(
                    rowKey, value: RowValue(bytes: request.body, contentType: contentType), options: options)
            }
        } catch  where error.code == .preconditionFailed {
            return Self.empty(.forbidden)
        }
        // Written again: no longer unlinked.
        try await deleteIfPresent(RowKey(table: Self.unlinkedTable(of: table), parts: [.bytes(key)]))
        return Self.empty(.created)
    }

    private func remove(table: TableName, key: [UInt8], unlink: Bool) async throws(KVError) -> HTTPResponse {
        try await ensureTables(table)
        let rowKey = RowKey(table: table, parts: [.bytes(key)])
        let unlinkedKey = RowKey(table: Self.unlinkedTable(of: table), parts: [.bytes(key)])
        let live = try await service.get(rowKey, options: ReadOptions())
        if unlink {
            guard !live.isAbsent else { return Self.empty(.notFound) }
            _ = try await service.put(
                unlinkedKey, value: RowValue(bytes: []), options: WriteOptions())
            _ = try await service.delete(rowKey, options: WriteOptions(context: live.context))
            return Self.empty(.noContent)
        }
        let wasUnlinked = try await deleteIfPresent(unlinkedKey)
        guard !live.isAbsent else { return Self.empty(wasUnlinked ? .noContent : .notFound) }
        _ = try await service.delete(rowKey, options: WriteOptions(context: live.context))
        return Self.empty(.noContent)
    }

    /// Deletes a row with the context of a read of it; whether it had a value.
    @discardableResult
    private func deleteIfPresent(_ key: RowKey) async throws(KVError) -> Bool {
        let current = try await service.get(key, options: ReadOptions())
        guard !current.isAbsent else { return false }
        _ = try await service.delete(key, options: WriteOptions(context: current.context))
        return true
    }

    /// Creates the table and its companion on first use.
    private func ensureTables(_ table: TableName) async throws(KVError) {
        for name in [table, Self.unlinkedTable(of: table)] {
            do {
                _ = try await service.table(name)
            } catch  where error.code == .tableNotFound {
                _ = try await service.createTable(
                    TableDescriptor(name: name, schema: try KeySchema([.bytes])))
            }
        }
    }

    /// The most keys a listing without a limit returns before it answers 413.
    static let maximumListedKeys = 1_000_000

    /// How many replicas a listing reads per partition: the table's r, as a get does, so
    /// every key acknowledged at the table's w is listed at once (one replica per
    /// partition may not yet hold it). Capped at the members that hold replicas, as a
    /// cluster smaller than the table's n serves fewer; `nil` (one replica) when unknown.
    private func listingReadQuorum(of table: TableName) async -> Int? {
        guard let descriptor = try? await service.table(table),
            let status = try? await service.clusterStatus()
        else { return nil }
        let holders = status.members.filter { $0.replicas > 0 }.count
        return max(1, min(descriptor.defaults.r, holders))
    }

    private func list(_ request: HTTPRequest, table: TableName, prefix: [UInt8]) async throws(KVError)
        -> HTTPResponse
    {
        // The operation is the first query parameter (`?list&limit=10`).
        let unlinked: Bool
        switch (request.query[0].name, request.query[0].value.isEmpty) {
        case ("list", true): unlinked = false
        case ("unlinked", true): unlinked = true
        default: return Self.empty(.forbidden)
        }
        var limit = 0
        if let text = request.queryValue("limit") {
            guard let value = Int(text) else { return Self.empty(.badRequest) }
            limit = value
        }
        // As goleveldb's BytesPrefix with its start replaced: [start or prefix, end of prefix).
        let start = request.queryValue("start").flatMap { $0.isEmpty ? nil : Array($0.utf8) } ?? prefix
        let end = Self.prefixEnd(prefix)
        let name = unlinked ? Self.unlinkedTable(of: table) : table
        var keys: [[UInt8]] = []
        var next: [UInt8] = []
        var continuation: String?
        let readQuorum = await listingReadQuorum(of: name)
        scanning: while true {
            let page: ScanPage
            do {
                page = try await service.scan(
                    ScanRequest(
                        table: name, range: KeyRange(start: [.bytes(start)]), limit: 1000, keysOnly: true,
                        continuation: continuation, r: readQuorum))
            } catch  where error.code == .tableNotFound {
                break
            }
            for row in page.rows {
                guard case .bytes(let key) = row.key.first else { continue }
                if let end, !key.lexicographicallyPrecedes(end) { break scanning }
                if keys.count > Self.maximumListedKeys { return Self.empty(.payloadTooLarge) }
                if limit > 0 && keys.count == limit {
                    next = key
                    break scanning
                }
                keys.append(key)
            }
            guard let more = page.continuation else { break }
            continuation = more
        }
        var body = Array(#"{"next":"#.utf8)
        Self.appendGoJSONString(next, to: &body)
        body += Array(#","keys":["#.utf8)
        for (index, key) in keys.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            Self.appendGoJSONString(key, to: &body)
        }
        body += Array("]}".utf8)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        return HTTPResponse(status: .ok, headers: headers, body: .bytes(body))
    }

    /// The first key after every key that starts with `prefix`, or `nil` when there is none.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8]? {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return nil
    }

    /// A JSON string as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029
    /// escaped, invalid UTF-8 replaced by U+FFFD.
    static func appendGoJSONString(_ bytes: [UInt8], to output: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        output.append(UInt8(ascii: "\""))
        for scalar in String(decoding: bytes, as: UTF8.self).unicodeScalars {
            switch scalar {
            case "\"": output += Array(#"\""#.utf8)
            case "\\": output += Array(#"\\"#.utf8)
            case "\n": output += Array(#"\n"#.utf8)
            case "\r": output += Array(#"\r"#.utf8)
            case "\t": output += Array(#"\t"#.utf8)
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                let value = scalar.value
                output += Array(#"\u"#.utf8)
                output += [12, 8, 4, 0].map { hex[Int((value >> $0) & 0xF)] }
            default:
                if scalar.value < 0x20 {
                    output +=
                        Array(#"\u00"#.utf8) + [hex[Int(scalar.value >> 4)], hex[Int(scalar.value & 0xF)]]
                } else {
                    output += Array(String(scalar).utf8)
                }
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
