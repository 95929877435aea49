import FoundationEssentials
import KVCore
import NIOHTTP1

/// `GET /v1/_scan/{ns}/{table}[/{prefix parts…}]`: a page of rows in key order, with
/// its continuation.
extension Router {
    func scan(_ request: HTTPRequest, table: TableName, prefix raw: [[UInt8]]) async throws(KVError)
        -> HTTPResponse
    {
        let descriptor = try await service.table(table)
        let schema = descriptor.schema
        func parse(_ texts: [[UInt8]], offset: Int) throws(KVError) -> [KeyPart] {
            guard offset + texts.count <= schema.parts.count else {
                throw KVError(
                    .keyArity, "the bound has more parts than the table's key (\(schema.parts.count))")
            }
            var parts: [KeyPart] = []
            for (index, text) in texts.enumerated() {
                parts.append(try KeyPart.parse(text, as: schema.parts[offset + index]))
            }
            return parts
        }
        let prefix = try parse(raw, offset: 0)
        let startValues = request.queryValues("start")
        let endValues = request.queryValues("end")
        let start =
            startValues.isEmpty && prefix.isEmpty
            ? nil : prefix + (try parse(startValues, offset: prefix.count))
        let end =
            endValues.isEmpty && prefix.isEmpty ? nil : prefix + (try parse(endValues, offset: prefix.count))
        let reverse = try Self.flag(request, "reverse")
        let keysOnly = try Self.flag(request, "keys_only")
        let format = request.queryValue("format") ?? "json"
        var limit: Int? = nil
        if let text = request.queryValue("limit") {
            guard let value = Int(text), value >= 1 else {
                throw KVError(.invalidRequest, "limit must be a positive integer, not '\(text.prefix(20))'")
            }
            limit = value
        }
        var scan = ScanRequest(
            table: table, range: KeyRange(start: start, end: end),
            limit: min(limit ?? 1000, ScanRequest.maximumLimit),
            reverse: reverse, keysOnly: keysOnly, continuation: request.queryValue("continuation"),
            r: try quorum(request).r)
        switch format {
        case "json":
            if let limit, limit > ScanRequest.maximumLimit {
                throw KVError(
                    .invalidRequest,
                    "a JSON page holds at most \(ScanRequest.maximumLimit) rows; use format=jsonl")
            }
            let page = try await service.scan(scan)
            return Self.json(
                WireScanPage(
                    rows: page.rows.map { Self.rowBody($0, keysOnly: keysOnly) },
                    continuation: page.continuation))
        case "jsonl":
            // Validate the request (table, bounds, token) before committing to a 200.
            scan.limit = min(limit ?? 1000, 1000)
            let firstPage = try await service.scan(scan)
            let service = service
            let firstRequest = scan
            let rowLimit = limit
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/x-ndjson")
            return HTTPResponse(
                status: .ok, headers: headers,
                body: .stream { writer in
                    var page = firstPage
                    var scan = firstRequest
                    var remaining = rowLimit ?? Int.max
                    while true {
                        var chunk: [UInt8] = []
                        for row in page.rows.prefix(remaining) {
                            chunk += JSON.encode(Self.rowBody(row, keysOnly: keysOnly))
                            chunk.append(UInt8(ascii: "\n"))
                        }
                        try await writer.write(chunk)
                        remaining -= min(remaining, page.rows.count)
                        guard let continuation = page.continuation else { return }
                        if remaining == 0 {
                            try await writer.write(
                                JSON.encode(["continuation": continuation]) + [UInt8(ascii: "\n")])
                            return
                        }
                        scan.continuation = continuation
                        scan.limit = min(remaining, 1000)
                        do {
                            page = try await service.scan(scan)
                        } catch let error as KVError {
                            try await writer.write(
                                JSON.encode(WireError(code: error.code.rawValue, message: error.message)) + [
                                    UInt8(ascii: "\n")
                                ])
                            return
                        }
                    }
                })
        default:
            throw KVError(.invalidRequest, "format must be json or jsonl, not '\(format.prefix(20))'")
        }
    }

    static func rowBody(_ row: ScanRow, keysOnly: Bool) -> WireScanRow {
        WireScanRow(
            key: row.key.map(WireKeyPart.init), siblings: keysOnly ? nil : row.siblings.map(WireSibling.init),
            context: row.context)
    }

    static func flag(_ request: HTTPRequest, _ name: String) throws(KVError) -> Bool {
        guard let text = request.queryValue(name) else { return false }
        switch text {
        case "", "1", "true", "yes": return true
        case "0", "false", "no": return false
        default: throw KVError(.invalidRequest, "\(name) must be true or false, not '\(text.prefix(20))'")
        }
    }
}
