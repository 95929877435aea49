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
        /// A value, key or other input exceeds its configured limit.
        public static let limitExceeded = Code(rawValue: "request.limit_exceeded")
    }

    /// The stable code.
    public var code: Code
    /// What went wrong, for people.
    public var message: String
    /// The lower-level error this one wraps, if any.
    public var underlying: (any Error & Sendable)?

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
