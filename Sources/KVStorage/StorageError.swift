import KVCore

/// The one error type of every storage engine.
public struct StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure it was.
    public enum Kind: String, Sendable, Hashable {
        /// The engine was closed.
        case closed
        /// The engine could not be opened (missing, locked by another process, wrong format).
        case openFailed = "open_failed"
        /// The underlying device or library failed.
        case io
        /// Stored data failed a check.
        case corruption
        /// The caller passed something the engine cannot hold.
        case invalidArgument = "invalid_argument"
        /// The engine cannot do what was asked (a backup of an engine that keeps nothing).
        case unsupported
    }

    /// The kind.
    public var kind: Kind
    /// The engine's own message.
    public var message: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The engine was closed.
    public static let closed = StorageError(.closed, "the storage engine is closed")

    public var description: String { "storage \(kind.rawValue): \(message)" }

    /// The same failure as a ``KVError`` with code `storage.io`, for the public surface.
    public var asKVError: KVError {
        KVError(.storageIO, description, underlying: self)
    }
}
