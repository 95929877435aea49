/// Seals causal contexts into opaque, compact, tamper-evident text, and opens them.
///
/// A context tells a replica which versions a write supersedes. A forged or tampered
/// context is not harmless: a vector that claims more of an actor's writes than the
/// client saw would silently discard writes the client never read (and, copied onto
/// another key, would do the same there). So every context carries a 64-bit SipHash-2-4
/// tag keyed by a secret (the node's own today; the cluster's once nodes share it),
/// computed over the row it was issued for and its contents. Opening checks the tag
/// against the row of the request.
///
/// Wire format (before base64url without padding):
/// `0x01` (format version), LEB128 entry count, then per entry the node id (8 bytes,
/// big-endian), the incarnation (LEB128) and the counter (LEB128), and finally the tag
/// (8 bytes, big-endian) over `"kv-ctx1" · len(row) · row · everything before the tag`.
public struct ContextSealer: Sendable {
    /// The format version written and accepted.
    public static let formatVersion: UInt8 = 1
    /// The most entries a context may hold (one per actor that wrote the key).
    public static let maximumEntryCount = 1024
    /// The longest context text accepted, in bytes.
    public static let maximumEncodedLength = 24 * 1024

    private let key0: UInt64
    private let key1: UInt64

    /// Creates a sealer from a 16-byte secret.
    public init(secret: [UInt8]) {
        precondition(secret.count == 16, "the context secret is 16 bytes, got \(secret.count)")
        var hasherKey = (UInt64(0), UInt64(0))
        for index in 0..<8 {
            hasherKey.0 |= UInt64(secret[index]) << UInt64(8 * index)
            hasherKey.1 |= UInt64(secret[index + 8]) << UInt64(8 * index)
        }
        key0 = hasherKey.0
        key1 = hasherKey.1
    }

    private func tag(payload: [UInt8], row: [UInt8]) -> UInt64 {
        var hasher = SipHash24(key0: key0, key1: key1)
        hasher.combine(contentsOf: "kv-ctx1".utf8)
        var lengthWriter = BinaryWriter(capacity: 10)
        lengthWriter.writeVarint(UInt64(row.count))
        hasher.combine(contentsOf: lengthWriter.bytes)
        hasher.combine(contentsOf: row)
        hasher.combine(contentsOf: payload)
        return hasher.finalize()
    }

    /// Seals `context` for the row whose storage identity is `row`.
    public func seal(_ context: VersionVector, row: [UInt8]) -> String {
        sealWithTag(context, row: row).context
    }

    /// Seals `context` and also returns its 64-bit tag, which identifies this version of
    /// this row (an entity tag) without hashing again.
    public func sealWithTag(_ context: VersionVector, row: [UInt8]) -> (context: String, tag: UInt64) {
        var writer = BinaryWriter(capacity: 2 + context.entries.count * 14 + 8)
        writer.write(Self.formatVersion)
        context.write(to: &writer)
        let tag = tag(payload: writer.bytes, row: row)
        writer.writeFixed(tag)
        return (Base64URL.encode(writer.bytes), tag)
    }

    /// Opens a context sealed for `row`, or throws `request.invalid_context` when it is
    /// malformed, was altered, or was issued for another row.
    public func open(_ text: String, row: [UInt8]) throws(KVError) -> VersionVector {
        guard text.utf8.count <= Self.maximumEncodedLength else {
            throw KVError(
                .invalidContext, "the causal context is longer than \(Self.maximumEncodedLength) bytes")
        }
        guard let bytes = Base64URL.decode(text), bytes.count >= 1 + 1 + 8 else {
            throw KVError(.invalidContext, "the causal context is not a base64url-encoded context")
        }
        let payload = Array(bytes[..<(bytes.count - 8)])
        var tagReader = BinaryReader(Array(bytes[(bytes.count - 8)...]))
        let expectedTag = try? tagReader.readFixed()
        guard expectedTag == tag(payload: payload, row: row) else {
            throw KVError(
                .invalidContext, "the causal context was altered, or was issued for another key or cluster")
        }
        do {
            var reader = BinaryReader(payload)
            guard try reader.readByte() == Self.formatVersion else {
                throw KVError(.invalidContext, "the causal context has an unknown format version")
            }
            let context = try VersionVector.read(
                from: &reader, maximumEntries: Self.maximumEntryCount, invalid: .invalidContext)
            guard reader.isAtEnd else {
                throw KVError(.invalidContext, "the causal context has trailing bytes")
            }
            return context
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.invalidContext, "the causal context is truncated or malformed", underlying: error)
        }
    }
}
