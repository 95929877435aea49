import Foundation

/// A throw-away CA and node certificates for TLS tests, written by the binary under
/// test (`kv tls dev-certs`), so the tests exercise what `kv dev --tls` uses.
public struct TestCertificates: Sendable {
    /// Where the files are.
    public let directory: String

    /// Writes a new CA and `nodes` node certificates to a fresh temporary directory.
    public init(nodes: Int = 1) throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("kv-tls-\(UUID().uuidString)")
            .path
        let child = try ChildProcess(
            executable: try TestBinaries.path(of: "kv", override: "KV_BINARY"),
            arguments: ["tls", "dev-certs", "--dir", directory, "--nodes", String(nodes)],
            standardErrorPath: directory + ".log")
        let status = child.wait()
        guard status.exitedNormally, status.code == 0 else {
            throw CrashTestError(
                "kv tls dev-certs failed: \((try? String(contentsOfFile: directory + ".log", encoding: .utf8)) ?? "")"
            )
        }
    }

    /// The CA's certificate.
    public var authority: String { directory + "/ca.pem" }
    /// Node `number`'s certificate (1-based).
    public func certificate(_ number: Int = 1) -> String { directory + "/node\(number).pem" }
    /// Node `number`'s key.
    public func key(_ number: Int = 1) -> String { directory + "/node\(number)-key.pem" }

    /// The environment that turns TLS on for a `kv server` (every node the same
    /// certificate, which names 127.0.0.1).
    public var environment: [String: String] {
        ["KV_TLS_CERT_FILE": certificate(), "KV_TLS_KEY_FILE": key(), "KV_TLS_CA_FILE": authority]
    }

    /// Removes the files.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: directory + ".log")
    }
}
