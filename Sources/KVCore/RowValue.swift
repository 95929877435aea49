/// A stored value: opaque bytes plus the content type the writer declared.
public struct RowValue: Hashable, Sendable {
    /// The content type used when a writer declares none.
    public static let defaultContentType = "application/octet-stream"

    /// The value's bytes.
    public var bytes: [UInt8]
    /// The MIME type the writer declared, kept and returned with the value.
    public var contentType: String

    /// Creates a value.
    public init(bytes: [UInt8], contentType: String = RowValue.defaultContentType) {
        self.bytes = bytes
        self.contentType = contentType
    }
}

/// One version of a key as stored: a value, or a tombstone that records a delete.
///
/// A tombstone is a version like any other, so a delete is ordered against writes by
/// the causal history and cannot be undone by a replica that missed it.
public struct Sibling: Hashable, Sendable {
    /// The value, or `nil` for a tombstone.
    public var value: RowValue?
    /// When the coordinator accepted the write, in milliseconds since the Unix epoch.
    /// Informational only (for `Last-Modified`); it never decides between versions.
    public var timestampMilliseconds: Int64

    /// Creates a sibling.
    public init(value: RowValue?, timestampMilliseconds: Int64) {
        self.value = value
        self.timestampMilliseconds = timestampMilliseconds
    }

    /// A tombstone written at `timestampMilliseconds`.
    public static func tombstone(at timestampMilliseconds: Int64) -> Sibling {
        Sibling(value: nil, timestampMilliseconds: timestampMilliseconds)
    }

    /// Whether this version records a delete.
    public var isTombstone: Bool { value == nil }
}
