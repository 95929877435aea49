import KVCore
import NIOHTTP1

/// What applying an update function did (docs/functions.md).
public struct AppliedFunction: Sendable {
    /// What the function did to the row.
    public enum Outcome: String, Sendable {
        /// It wrote ``AppliedFunction/value``.
        case written
        /// It kept the row as it was (``AppliedFunction/value`` is the row, `nil` when absent).
        case kept
        /// It deleted the row.
        case deleted
    }

    /// What the function did.
    public var outcome: Outcome
    /// The row's value after the apply, `nil` when the row is absent or was deleted.
    public var value: RowValue?
    /// The row's context after the apply.
    public var context: String?
    /// How many tries the node needed under contention.
    public var attempts: Int
}

extension HTTPKeyValueService {
    /// Registers `module` (binary or the text format) as the update function `name`,
    /// replacing any of that name. Needs an administrator's token.
    public func registerFunction(_ name: String, module: [UInt8]) async throws(KVError) {
        let response = try await send(.POST, "/v1/_functions/\(Self.escape(name))", body: module)
        try expect(response, [201])
    }

    /// Removes the update function `name`.
    public func removeFunction(_ name: String) async throws(KVError) {
        try expect(try await send(.DELETE, "/v1/_functions/\(Self.escape(name))"), [204])
    }

    /// Applies the update function `function` to the row `key` with `arguments`, at the
    /// node this connection speaks to. Of `options`, the quorum and the request id are
    /// sent; the node writes back with the context and condition of its own read.
    public func apply(
        function: String, to key: RowKey, arguments: [UInt8], attempts: Int? = nil,
        options: WriteOptions = WriteOptions()
    ) async throws(KVError) -> AppliedFunction {
        try await validate(key)
        var target =
            "/v1/_apply/" + Self.rowPath(key).dropFirst("/v1/".count) + "?function=\(Self.escape(function))"
        if let attempts { target += "&attempts=\(attempts)" }
        // The node reads the row's context and condition itself: only the quorum and
        // the request id of `options` apply.
        var headers = HTTPHeaders()
        if let requestID = options.requestID { headers.add(name: "x-kv-request-id", value: requestID) }
        Self.addQuorum(options.quorum, to: &headers)
        let response = try await send(.POST, target, headers: headers, body: arguments)
        try expect(response, [200, 204])
        guard
            let outcome = response.headers.first(name: "x-kv-function-outcome").flatMap({
                AppliedFunction.Outcome(rawValue: $0)
            })
        else {
            throw KVError(.internalError, "the node's answer to an apply does not say what the function did")
        }
        return AppliedFunction(
            outcome: outcome,
            value: response.status == 200
                ? RowValue(
                    bytes: response.body,
                    contentType: response.headers.first(name: "content-type") ?? RowValue.defaultContentType)
                : nil,
            context: response.headers.first(name: "x-kv-context"),
            attempts: response.headers.first(name: "x-kv-function-attempts").flatMap { Int($0) } ?? 1)
    }
}

extension ClusterClient {
    /// Registers `module` (binary or the text format) as the update function `name` with
    /// the cluster. Needs an administrator's token.
    public func registerFunction(_ name: String, module: [UInt8]) async throws(KVError) {
        try await perform(candidates(preferred: []), .write) { connection async throws(KVError) in
            try await connection.registerFunction(name, module: module)
        }
    }

    /// Removes the update function `name` from the cluster.
    public func removeFunction(_ name: String) async throws(KVError) {
        try await perform(candidates(preferred: []), .write) { connection async throws(KVError) in
            try await connection.removeFunction(name)
        }
    }

    /// Applies the update function `function` to the row `key` at a replica of the key:
    /// one round trip, contention retried at the node. The write carries a request id,
    /// so a retry after a lost answer is not written twice.
    public func apply(
        function: String, to key: RowKey, arguments: [UInt8], attempts: Int? = nil,
        options: WriteOptions = WriteOptions()
    ) async throws(KVError) -> AppliedFunction {
        let options = Self.identified(options)
        return try await perform(candidates(for: key, write: true), .write) {
            connection async throws(KVError) in
            try await connection.apply(
                function: function, to: key, arguments: arguments, attempts: attempts, options: options)
        }
    }
}
