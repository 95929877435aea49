/// Bytes as lowercase hexadecimal, two digits a byte: how digests are shown (ETags,
/// `Content-MD5` in minikeyvalue's form, a module's SHA-256).
public enum Hexadecimal {
    private static let digits: StaticString = "0123456789abcdef"

    /// `bytes` in lowercase hexadecimal.
    public static func lowercase(_ bytes: some Sequence<UInt8>) -> String {
        let bytes = Array(bytes)
        return String(unsafeUninitializedCapacity: bytes.count * 2) { output in
            var index = 0
            for byte in bytes {
                output[index] = digit(byte >> 4)
                output[index + 1] = digit(byte & 0x0F)
                index += 2
            }
            return index
        }
    }

    /// `value` as 16 lowercase hexadecimal digits, most significant first (leading
    /// zeros kept, so every value has the same width): an entity tag on every read.
    public static func lowercase(_ value: UInt64) -> String {
        String(unsafeUninitializedCapacity: 16) { output in
            for index in 0..<16 {
                output[index] = digit(UInt8(truncatingIfNeeded: value >> UInt64(60 - 4 * index)) & 0x0F)
            }
            return 16
        }
    }

    private static func digit(_ nibble: UInt8) -> UInt8 {
        digits.withUTF8Buffer { $0[Int(nibble)] }
    }
}
