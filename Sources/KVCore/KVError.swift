/// The one error type of the store's public surface.
///
/// Every error carries a stable, dotted ``Code`` (for example `request.key_too_large`)
/// that clients and scripts can match on, a human-readable message, and, when it wraps
/// a lower-level failure, that failure. Front ends map the code, never the message, to
/// protocol statuses.
public struct KVError: Error, Sendable, CustomStringConvertible {
    /// A stable error code. The raw value is part of the public API and never changes.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A key schema is malformed (no parts, too many parts, bad partition key length).
        public static let invalidSchema = Code(rawValue: "schema.invalid")
        /// A key has the wrong number of parts for its table.
        public static let keyArity = Code(rawValue: "request.key_arity")
        /// A key part has the wrong type for its position.
        public static let keyPartType = Code(rawValue: "request.key_part_type")
        /// Stored key bytes do not decode under the table's schema.
        public static let corruptKey = Code(rawValue: "storage.corrupt_key")
        /// A causal context is malformed, was tampered with, or belongs to another key.
        public static let invalidContext = Code(rawValue: "request.invalid_context")
        /// A stored object does not decode.
        public static let corruptObject = Code(rawValue: "storage.corrupt_object")
        /// The storage engine failed.
        public static let storageIO = Code(rawValue: "storage.io")
        /// A namespace or table name is not valid.
        public static let invalidName = Code(rawValue: "request.invalid_name")
        /// Quorum settings are inconsistent (for example r > n).
        public static let invalidQuorum = Code(rawValue: "request.invalid_quorum")
        /// A key part's text does not parse as its schema type.
        public static let invalidKeyPart = Code(rawValue: "request.invalid_key_part")
        /// The request is malformed (bad JSON, bad parameter, unknown operation).
        public static let invalidRequest = Code(rawValue: "request.invalid")
        /// The encoded key is larger than the configured limit.
        public static let keyTooLarge = Code(rawValue: "request.key_too_large")
        /// The value is larger than the configured limit.
        public static let valueTooLarge = Code(rawValue: "request.value_too_large")
        /// The request body is larger than the configured limit.
        public static let bodyTooLarge = Code(rawValue: "request.body_too_large")
        /// The request headers are larger than the configured limit.
        public static let headersTooLarge = Code(rawValue: "request.headers_too_large")
        /// The client took longer than the request timeout to send its request.
        public static let requestTimeout = Code(rawValue: "request.timeout")
        /// The server has as many open connections as it allows.
        public static let tooManyConnections = Code(rawValue: "server.too_many_connections")
        /// No route matches the path, or the method is not allowed on it.
        public static let notFound = Code(rawValue: "request.not_found")
        /// The method is not allowed on this path.
        public static let methodNotAllowed = Code(rawValue: "request.method_not_allowed")
        /// The table does not exist.
        public static let tableNotFound = Code(rawValue: "table.not_found")
        /// A write would leave a row with more siblings than the limit.
        public static let tooManySiblings = Code(rawValue: "row.too_many_siblings")
        /// A write would make a row's live values larger than the limit.
        public static let rowTooLarge = Code(rawValue: "row.too_large")
        /// An answer would be larger than the limit (split the request).
        public static let responseTooLarge = Code(rawValue: "request.response_too_large")
        /// The row holds a value that is not a counter.
        public static let notACounter = Code(rawValue: "row.not_a_counter")
        /// The row has no live value.
        public static let rowNotFound = Code(rawValue: "row.not_found")
        /// The table was cleared or recreated while a write waited for it.
        public static let tableChanged = Code(rawValue: "table.changed")
        /// A table with that name exists with a different schema.
        public static let tableExists = Code(rawValue: "table.exists")
        /// A write's precondition (If-Match, If-None-Match) failed.
        public static let preconditionFailed = Code(rawValue: "request.precondition_failed")
        /// A continuation token is malformed or belongs to another scan.
        public static let invalidContinuation = Code(rawValue: "request.invalid_continuation")
        /// The server is shutting down.
        public static let unavailable = Code(rawValue: "server.unavailable")
        /// Fewer replicas answered than the request's quorum needs. The message says how
        /// many answered and how many were needed.
        public static let quorumUnavailable = Code(rawValue: "quorum.unavailable")
        /// A write timed out after a replica may have stored it: it may or may not become
        /// visible. Retrying it with the same context is safe.
        public static let writeIndeterminate = Code(rawValue: "write.indeterminate")
        /// A layout plan was committed after the layout or the staged changes changed:
        /// show the plan again and commit that one.
        public static let staleLayoutPlan = Code(rawValue: "layout.stale_plan")
        /// A backup of that name exists already.
        public static let backupExists = Code(rawValue: "backup.exists")
        /// A request without a token where access control is on (401).
        public static let tokenRequired = Code(rawValue: "auth.token_required")
        /// A token that is garbled or that the cluster does not know (401).
        public static let invalidToken = Code(rawValue: "auth.invalid_token")
        /// A revoked token (401).
        public static let revokedToken = Code(rawValue: "auth.token_revoked")
        /// A token past its expiry (401).
        public static let expiredToken = Code(rawValue: "auth.token_expired")
        /// A valid token without the grant the request needs (403).
        public static let forbidden = Code(rawValue: "auth.forbidden")
        /// An unexpected internal failure.
        public static let internalError = Code(rawValue: "server.internal")
        /// A `Range` header asks for bytes the value does not have.
        public static let rangeNotSatisfiable = Code(rawValue: "request.range_not_satisfiable")
        /// The request body ended before the length it declared, or the upload was cut off.
        public static let incompleteBody = Code(rawValue: "request.incomplete_body")
        /// A chunk of a large value is missing or fails its checksum on every replica asked.
        public static let corruptChunk = Code(rawValue: "storage.corrupt_chunk")
        /// An update function's module was refused at registration: not WebAssembly, an
        /// import, a missing export, or limits it does not declare.
        public static let functionInvalid = Code(rawValue: "function.invalid")
        /// No update function is registered under that name.
        public static let functionNotFound = Code(rawValue: "function.not_found")
        /// An update function trapped or answered something malformed.
        public static let functionFailed = Code(rawValue: "function.failed")
        /// An update function ran out of fuel, time or memory.
        public static let functionLimitExceeded = Code(rawValue: "function.limit_exceeded")
        /// An update function refused the update, with its own reason.
        public static let functionRefused = Code(rawValue: "function.refused")
        /// The row has siblings, and an update function sees one value: resolve them first.
        public static let functionSiblings = Code(rawValue: "function.siblings")
        /// Too many update functions are running or waiting on this node.
        public static let functionBusy = Code(rawValue: "function.busy")
        /// The operation exists but this node cannot do it (for example a streamed value
        /// through a service that only holds values whole).
        public static let unsupported = Code(rawValue: "request.unsupported")
    }

    /// The stable code.
    public var code: Code
    /// What went wrong, for people.
    public var message: String
    /// The lower-level error this one wraps, if any.
    public var underlying: (any Error & Sendable)?

    /// Whether this is a fault of the storage underneath (a row or key that does not
    /// decode, an I/O error): a replica that answers with one is not merely unavailable,
    /// and a request that fails because of it must say so rather than ask for a retry.
    public var isStorageFault: Bool {
        code == .corruptObject || code == .corruptKey || code == .storageIO
    }

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(code): \(message) (\(underlying))" }
        return "\(code): \(message)"
    }
}

/// Two errors are equal when their codes and messages are: the wrapped error is detail
/// for logs, and state machines that compare their actions in tests need equality.
extension KVError: Hashable {
    public static func == (lhs: KVError, rhs: KVError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }
}
