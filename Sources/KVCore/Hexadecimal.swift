/// Bytes as lowercase hexadecimal, two digits a byte: how digests are shown (ETags,
/// `Content-MD5` in minikeyvalue's form, a module's SHA-256).
public enum Hexadecimal {
    private static let digits = Array("0123456789abcdef".utf8)

    /// `bytes` in lowercase hexadecimal.
    public static func lowercase(_ bytes: some Sequence<UInt8>) -> String {
        String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] }, as: UTF8.self)
    }
}
