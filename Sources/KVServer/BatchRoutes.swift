import FoundationEssentials
import KVCore
import NIOHTTP1

/// `POST /v1/_batch`: gets, puts and deletes of many rows in one request, each item
/// answered in place.
extension Router {
    func batch(_ request: HTTPRequest, grants: AccessGrants) async throws(KVError) -> HTTPResponse {
        let body = try JSON.decode(BatchRequestBody.self, from: request.body)
        // Items that fail to parse get their error in place; the rest run as one batch.
        var operations: [BatchOperation] = []
        var parseFailures: [Int: KVError] = [:]
        for (index, item) in body.operations.enumerated() {
            do {
                operations.append(try await operation(try item.get(), grants: grants))
            } catch {
                parseFailures[index] = error
            }
        }
        let results = try await service.batch(operations)
        var responses: [WireBatchResult] = []
        var next = results.makeIterator()
        for index in body.operations.indices {
            if let failure = parseFailures[index] {
                responses.append(Self.failureBody(failure))
                continue
            }
            switch next.next() {
            case .read(let result):
                responses.append(
                    result.siblings.isEmpty
                        ? WireBatchResult(
                            status: 404, context: result.context, etag: result.etag,
                            code: KVError.Code.rowNotFound.rawValue, message: "the row has no value")
                        : WireBatchResult(
                            status: result.siblings.count == 1 ? 200 : 300,
                            siblings: result.siblings.map(WireSibling.init),
                            context: result.context, etag: result.etag))
            case .written(let result):
                responses.append(WireBatchResult(status: 204, context: result.context, etag: result.etag))
            case .failed(let error):
                responses.append(Self.failureBody(error))
            case nil:
                responses.append(
                    Self.failureBody(KVError(.internalError, "the batch returned too few results")))
            }
        }
        return Self.json(WireBatchResponse(results: responses))
    }

    static func failureBody(_ error: KVError) -> WireBatchResult {
        WireBatchResult(
            status: Int(HTTPErrorStatus.status(for: error.code).code), code: error.code.rawValue,
            message: error.message)
    }

    private func operation(_ item: WireBatchOperation, grants: AccessGrants) async throws(KVError)
        -> BatchOperation
    {
        let name = try TableName(namespace: item.namespace, table: item.table)
        try grants.require(item.op == "get" ? .read : .write, on: name.namespace)
        let descriptor = try await service.table(name)
        let key = RowKey(table: name, parts: try descriptor.schema.keyParts(item.key, prefix: false))
        var options = WriteOptions(context: item.context, requestID: item.requestID)
        if let ifNoneMatch = item.ifNoneMatch {
            guard ifNoneMatch == "*" else { throw KVError(.invalidRequest, "if_none_match must be \"*\"") }
            options.condition = .ifAbsent
        } else if let ifMatch = item.ifMatch {
            options.condition = .ifMatch(Self.unquote(ifMatch))
        }
        switch item.op {
        case "get":
            return .get(key)
        case "put":
            let bytes: [UInt8]
            if let text = item.value {
                bytes = Array(text.utf8)
            } else if let encoded = item.valueBase64 {
                guard let decoded = Base64URL.decode(encoded) else {
                    throw KVError(.invalidRequest, "value_base64 is not base64url")
                }
                bytes = decoded
            } else {
                throw KVError(.invalidRequest, "a put needs value or value_base64")
            }
            return .put(
                key, RowValue(bytes: bytes, contentType: item.contentType ?? RowValue.defaultContentType),
                options)
        case "delete":
            return .delete(key, options)
        default:
            throw KVError(.invalidRequest, "unknown batch op '\(item.op.prefix(20))'; use get, put or delete")
        }
    }
}
