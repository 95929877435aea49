/// A stored value: opaque bytes (or, for a large value, the record of its chunks) plus
/// the content type the writer declared.
public struct RowValue: Hashable, Sendable {
    /// The content type used when a writer declares none.
    public static let defaultContentType = "application/octet-stream"
    /// The largest value a service that keeps values whole accepts by default (16 MiB);
    /// a streamed write past ``LargeValue/defaultInlineThreshold`` is chunked instead.
    public static let maximumInlineBytes = 16 << 20

    /// The value's bytes.
    public var bytes: [UInt8]
    /// The MIME type the writer declared, kept and returned with the value.
    public var contentType: String
    /// Set when the value is kept in chunks (``LargeValue``); ``bytes`` is then empty.
    public var largeValue: LargeValue?

    /// Creates a value.
    public init(bytes: [UInt8], contentType: String = RowValue.defaultContentType) {
        self.bytes = bytes
        self.contentType = contentType
        self.largeValue = nil
    }

    /// Creates a value kept in chunks.
    public init(largeValue: LargeValue, contentType: String = RowValue.defaultContentType) {
        self.bytes = []
        self.contentType = contentType
        self.largeValue = largeValue
    }

    /// The value's length in bytes, wherever they are kept.
    public var length: Int64 { largeValue?.length ?? Int64(bytes.count) }
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
    /// The client's id for the write that made this version, when it sent one. A retry
    /// with the same id finds it and is not applied twice.
    public var requestID: String?
    /// When this version expires, in milliseconds since the Unix epoch, or `nil` if it
    /// never does. An expired version reads as absent everywhere; the expiry travels with
    /// the version, so no replica or repair can bring it back.
    public var expiresAtMilliseconds: Int64?
    /// Whether this version was written to a last-writer-wins table: concurrent versions
    /// of such a row resolve to one (see ``StoredObject/visibleValues(at:)``), and
    /// ``timestampMilliseconds`` is a hybrid logical time that decides between them.
    public var resolvesByLastWriter: Bool

    /// The longest client request id accepted, in bytes.
    public static let maximumRequestIDBytes = 128

    /// The timestamps a decoder accepts: far beyond any clock's (2^62 ms is 146 million
    /// years), so that raising a last-writer-wins timestamp by one never overflows.
    public static let timestampRange: ClosedRange<Int64> = -(1 << 62)...(1 << 62)

    /// Creates a sibling.
    public init(
        value: RowValue?, timestampMilliseconds: Int64, requestID: String? = nil,
        expiresAtMilliseconds: Int64? = nil, resolvesByLastWriter: Bool = false
    ) {
        self.value = value
        self.timestampMilliseconds = timestampMilliseconds
        self.requestID = requestID
        self.expiresAtMilliseconds = value == nil ? nil : expiresAtMilliseconds
        self.resolvesByLastWriter = resolvesByLastWriter
    }

    /// A tombstone written at `timestampMilliseconds`.
    public static func tombstone(
        at timestampMilliseconds: Int64, requestID: String? = nil, resolvesByLastWriter: Bool = false
    ) -> Sibling {
        Sibling(
            value: nil, timestampMilliseconds: timestampMilliseconds, requestID: requestID,
            resolvesByLastWriter: resolvesByLastWriter)
    }

    /// Whether this version records a delete.
    public var isTombstone: Bool { value == nil }

    /// Whether this version has expired at `nowMilliseconds` (wall clock).
    public func hasExpired(at nowMilliseconds: Int64) -> Bool {
        expiresAtMilliseconds.map { $0 <= nowMilliseconds } ?? false
    }

    /// Whether a read at `nowMilliseconds` sees a value here: not a tombstone, not expired.
    public func isVisible(at nowMilliseconds: Int64) -> Bool {
        !isTombstone && !hasExpired(at: nowMilliseconds)
    }
}
