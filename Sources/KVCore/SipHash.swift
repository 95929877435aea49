/// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit pseudo-random function.
///
/// The store uses it twice, for reasons that need a fixed, documented function rather
/// than Swift's per-process seeded `Hasher`:
/// - with a fixed all-zero key as the placement hash (``StableHash``), so every node and
///   every release maps a key to the same partition;
/// - with a secret cluster key as the message authentication code that seals causal
///   contexts (``ContextSealer``), so clients cannot forge causal histories.
///
/// The implementation is checked against the reference test vectors of the paper.
public struct SipHash24: Sendable {
    private var v0: UInt64
    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64
    private var pending: UInt64 = 0
    private var pendingCount: Int = 0
    private var totalLength: UInt64 = 0

    /// Creates a hasher keyed by the 128-bit key `(key0, key1)`, each half read
    /// little-endian from the 16 key bytes as the reference implementation does.
    public init(key0: UInt64, key1: UInt64) {
        v0 = 0x736f_6d65_7073_6575 ^ key0
        v1 = 0x646f_7261_6e64_6f6d ^ key1
        v2 = 0x6c79_6765_6e65_7261 ^ key0
        v3 = 0x7465_6462_7974_6573 ^ key1
    }

    /// Creates a hasher from 16 key bytes.
    public init(key: [UInt8]) {
        precondition(key.count == 16, "SipHash needs a 16-byte key, got \(key.count) bytes")
        self.init(key0: Self.littleEndianWord(key, at: 0), key1: Self.littleEndianWord(key, at: 8))
    }

    private static func littleEndianWord(_ bytes: [UInt8], at start: Int) -> UInt64 {
        var word: UInt64 = 0
        for index in (start..<(start + 8)).reversed() {
            word = (word << 8) | UInt64(bytes[index])
        }
        return word
    }

    @inline(__always)
    private static func rotate(_ value: UInt64, _ amount: UInt64) -> UInt64 {
        (value << amount) | (value >> (64 - amount))
    }

    @inline(__always)
    private mutating func round() {
        v0 &+= v1
        v1 = Self.rotate(v1, 13)
        v1 ^= v0
        v0 = Self.rotate(v0, 32)
        v2 &+= v3
        v3 = Self.rotate(v3, 16)
        v3 ^= v2
        v0 &+= v3
        v3 = Self.rotate(v3, 21)
        v3 ^= v0
        v2 &+= v1
        v1 = Self.rotate(v1, 17)
        v1 ^= v2
        v2 = Self.rotate(v2, 32)
    }

    private mutating func compress(_ word: UInt64) {
        v3 ^= word
        round()
        round()
        v0 ^= word
    }

    /// Feeds one byte.
    public mutating func combine(_ byte: UInt8) {
        pending |= UInt64(byte) << UInt64(8 * pendingCount)
        pendingCount += 1
        totalLength &+= 1
        if pendingCount == 8 {
            compress(pending)
            pending = 0
            pendingCount = 0
        }
    }

    /// Feeds a sequence of bytes: contiguous ones eight at a time (every stored row's
    /// index hash, every key's placement and every sealed context pass here), others
    /// byte by byte.
    @inlinable
    public mutating func combine<Bytes: Sequence<UInt8>>(contentsOf bytes: Bytes) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            combine(UnsafeRawBufferPointer(buffer))
        }
        if done == nil {
            for byte in bytes { combine(byte) }
        }
    }

    /// Feeds contiguous bytes: whole little-endian words go straight to compression.
    @usableFromInline
    mutating func combine(_ buffer: UnsafeRawBufferPointer) {
        var index = 0
        let count = buffer.count
        // Complete a word begun by an earlier call.
        while pendingCount != 0, index < count {
            combine(buffer[index])
            index += 1
        }
        while count - index >= 8 {
            compress(UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: index, as: UInt64.self)))
            totalLength &+= 8
            index += 8
        }
        while index < count {
            combine(buffer[index])
            index += 1
        }
    }

    /// Returns the 64-bit tag of everything fed so far.
    public consuming func finalize() -> UInt64 {
        let last = pending | ((totalLength & 0xFF) << 56)
        compress(last)
        v2 ^= 0xFF
        round()
        round()
        round()
        round()
        return v0 ^ v1 ^ v2 ^ v3
    }

    /// Hashes `bytes` in one call.
    public static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes, key0: UInt64, key1: UInt64) -> UInt64 {
        var hasher = SipHash24(key0: key0, key1: key1)
        hasher.combine(contentsOf: bytes)
        return hasher.finalize()
    }
}

/// The fixed 64-bit hash that decides placement: SipHash-2-4 with an all-zero key.
///
/// It is part of the on-disk and on-wire contract: changing it moves every key, so it
/// has golden test vectors and never changes within a major version.
public enum StableHash {
    /// Hashes `bytes` with the placement hash.
    public static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
        SipHash24.hash(bytes, key0: 0, key1: 0)
    }
}
