import FoundationEssentials
import KVAccess
import KVCore
import NIOHTTP1

/// Who may do what through this node's HTTP API: off (every request may do anything),
/// or on, when every request but the health checks and the node's description must
/// carry a bearer token (`Authorization: Bearer TOKEN`) that the cluster knows, and is
/// checked against the grant its route needs.
///
/// The first administrator's token comes from the node's configuration: it is never
/// stored, only its hash held in memory, and it has cluster-wide admin. Tokens created
/// through the API live, hashed, in the cluster metadata.
public struct AccessControl: Sendable {
    /// The hash of the configured administrator token, when access control is on.
    let adminTokenHash: [UInt8]?
    /// Milliseconds since 1970, for expiry.
    let clock: @Sendable () -> Int64

    /// Access control off: every request may do anything.
    public static let off = AccessControl(adminTokenHash: nil)

    private init(adminTokenHash: [UInt8]?) {
        self.adminTokenHash = adminTokenHash
        self.clock = AccessControl.systemMilliseconds
    }

    /// Access control on, with `adminToken` as the first cluster administrator's token.
    public init(adminToken: String, clock: @escaping @Sendable () -> Int64 = AccessControl.systemMilliseconds)
        throws(KVError)
    {
        guard adminToken.utf8.count >= Self.minimumAdminTokenBytes, adminToken.utf8.count <= 512,
            adminToken.utf8.allSatisfy({ (0x21...0x7e).contains($0) })
        else {
            throw KVError(
                .invalidRequest,
                "the admin token must be \(Self.minimumAdminTokenBytes) to 512 printable characters without spaces"
            )
        }
        self.adminTokenHash = AccessTokenCrypto.hash(adminToken)
        self.clock = clock
    }

    /// The shortest configured admin token: 128 bits of base64-like text at least.
    public static let minimumAdminTokenBytes = 24

    /// Whether requests must carry tokens.
    public var isOn: Bool { adminTokenHash != nil }

    /// The wall clock in milliseconds.
    @Sendable public static func systemMilliseconds() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1000)
    }

    /// The grants of the token `request` carries, or the error that refuses it.
    func grants(for request: HTTPRequest, service: any KeyValueService) throws(KVError) -> AccessGrants {
        guard isOn else { return .everything }
        guard let header = request.headers.first(name: "authorization") else {
            throw KVError(.tokenRequired, "this node requires a token: send Authorization: Bearer TOKEN")
        }
        guard header.utf8.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw KVError(.invalidToken, "the Authorization header must read Bearer TOKEN")
        }
        let token = String(header.dropFirst(7).drop { $0 == " " })
        return try grants(forToken: token, service: service)
    }

    /// The grants of `token`, or the error that refuses it.
    public func grants(forToken token: String, service: any KeyValueService) throws(KVError) -> AccessGrants {
        guard let adminTokenHash else { return .everything }
        let hash = AccessTokenCrypto.hash(token)
        if AccessTokenCrypto.equal(hash, adminTokenHash) { return .everything }
        guard let id = AccessTokenRecord.id(ofToken: token),
            let record = service.immediateAccessToken(id: id),
            AccessTokenCrypto.equal(hash, record.hash)
        else {
            throw KVError(.invalidToken, "the token is not one this cluster issued")
        }
        if record.revoked { throw KVError(.revokedToken, "the token \(id) was revoked") }
        if let expiry = record.expiresAtMilliseconds, expiry <= clock() {
            throw KVError(.expiredToken, "the token \(id) has expired")
        }
        return record.grants
    }
}

extension AccessGrants {
    /// Throws `auth.forbidden` unless these grants allow `level` on `namespace` (or on
    /// the cluster when `nil`).
    func require(_ level: AccessLevel, on namespace: String?) throws(KVError) {
        guard allows(level, on: namespace) else {
            throw KVError(
                .forbidden,
                namespace.map { "the token may not \(level) namespace '\($0)'" }
                    ?? "the token may not \(level) the cluster (that needs a *:\(level) grant)")
        }
    }
}
