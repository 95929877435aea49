import KVCore
import KVFunctions
import NIOHTTP1

/// The routes of update functions (docs/functions.md): registering, listing and
/// removing modules (administrators), and applying one to a row (writers of its
/// namespace).
extension Router {
    /// The header that says what an applied function did: `written`, `kept` or `deleted`.
    static let functionOutcomeHeader = "x-kv-function-outcome"
    /// The header that says how many tries an apply took.
    static let functionAttemptsHeader = "x-kv-function-attempts"

    /// `GET /v1/_functions`, `POST|GET|DELETE /v1/_functions/{name}`.
    func routeFunctions(_ request: HTTPRequest, _ path: [String]) async throws(KVError) -> HTTPResponse {
        switch (request.method, path.count) {
        case (.GET, 0):
            return Self.json(["functions": try await functions.list()])
        case (.POST, 1), (.PUT, 1):
            let record = try await functions.register(name: path[0], source: request.body)
            return Self.json(record, status: .created)
        case (.GET, 1):
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/wasm")
            return HTTPResponse(
                status: .ok, headers: headers, body: .bytes(try await functions.binary(name: path[0])))
        case (.DELETE, 1):
            try await functions.remove(name: path[0])
            return HTTPResponse(status: .noContent)
        case (_, 0), (_, 1):
            throw methodNotAllowed(request)
        default:
            throw KVError(.notFound, "a function is /v1/_functions/{name}")
        }
    }

    /// `POST /v1/_apply/{ns}/{table}/{key parts…}?function=NAME[&attempts=N]`: the body
    /// is the function's arguments. Answers the new value (`200`), the row as it was when
    /// the function kept it (`200`, or `204` when absent), or `204` when it deleted it.
    func apply(_ request: HTTPRequest, key: RowKey) async throws(KVError) -> HTTPResponse {
        guard let name = request.queryValue("function"), !name.isEmpty else {
            throw KVError(.invalidRequest, "name the function to apply: ?function=NAME")
        }
        var attempts = UpdateFunctions.defaultAttempts
        if let text = request.queryValue("attempts") {
            guard let value = Int(text) else {
                throw KVError(.invalidRequest, "attempts must be a whole number, not '\(text.prefix(20))'")
            }
            attempts = value
        }
        let (update, tries) = try await functions.apply(
            name, to: key, arguments: request.body, attempts: attempts, quorum: try quorum(request),
            requestID: request.headers.first(name: Self.requestIDHeader) ?? request.queryValue("request_id"))
        var response: HTTPResponse
        let outcome: String
        switch update {
        case .written(let value, let result):
            var headers = versionHeaders(context: result.context, etag: result.etag)
            headers.add(name: "content-type", value: value.contentType)
            response = HTTPResponse(status: .ok, headers: headers, body: .bytes(value.bytes))
            outcome = "written"
        case .kept(let read):
            outcome = "kept"
            if let value = read.siblings.first?.value {
                var headers = versionHeaders(context: read.context, etag: read.etag)
                headers.add(name: "content-type", value: value.contentType)
                response = HTTPResponse(status: .ok, headers: headers, body: .bytes(value.bytes))
            } else {
                response = HTTPResponse(
                    status: .noContent, headers: versionHeaders(context: read.context, etag: read.etag))
            }
        case .deleted(let result):
            outcome = "deleted"
            response = HTTPResponse(
                status: .noContent, headers: versionHeaders(context: result.context, etag: result.etag))
        }
        response.headers.add(name: Self.functionOutcomeHeader, value: outcome)
        response.headers.add(name: Self.functionAttemptsHeader, value: String(tries))
        return response
    }
}
