import Crypto
import KVCore

/// Making and checking access tokens: the one place that knows how a token's text
/// relates to the hash the cluster stores.
public enum AccessTokenCrypto {
    /// SHA-256 of a token's text: what the cluster stores and compares.
    public static func hash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(token.utf8)))
    }

    /// A new token's text and id: `kvt_` + 16 hex digits + `_` + 32 random bytes
    /// (base64url), from the system's secure random source.
    public static func generate() -> (token: String, id: String) {
        var random = SystemRandomNumberGenerator()
        let id = String(random.next() as UInt64, radix: 16).leftPadded(to: 16)
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }
        return (AccessTokenRecord.prefix + id + "_" + Base64URL.encode(secret), id)
    }

    /// Whether two hashes are equal, in time that does not depend on where they differ.
    public static func equal(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - count)) + self
    }
}
