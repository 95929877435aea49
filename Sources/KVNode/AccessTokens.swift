import KVAccess
import KVCluster
import KVCore
import NIOConcurrencyHelpers

/// Access tokens as cluster metadata: created, listed and revoked through any node,
/// pushed to every member like a table change, so a token works on every node as soon
/// as the call that made it returns.
extension ClusterNode {
    public func createAccessToken(_ request: AccessTokenRequest) async throws(KVError) -> CreatedAccessToken {
        _ = try formedLayout()
        guard !request.name.isEmpty, request.name.utf8.count <= AccessTokenRecord.maximumNameBytes else {
            throw KVError(
                .invalidRequest, "a token's name must be 1 to \(AccessTokenRecord.maximumNameBytes) bytes")
        }
        if let seconds = request.expiresInSeconds, !(1...(100 * 365 * 86_400)).contains(seconds) {
            throw KVError(.invalidRequest, "expires_in_seconds must be 1 to 100 years")
        }
        let (token, id) = AccessTokenCrypto.generate()
        let now = NodeStorage.wallClockMilliseconds()
        let record = AccessTokenRecord(
            id: id, name: request.name, hash: AccessTokenCrypto.hash(token), grants: request.grants,
            createdAtMilliseconds: now,
            expiresAtMilliseconds: request.expiresInSeconds.map { now + $0 * 1000 })
        let me = nodeID
        try await changeTables { (metadata) throws(KVError) in
            guard metadata.tokens[id] == nil else {
                throw KVError(.internalError, "a new token's id is taken; try again")
            }
            try metadata.record(record, by: me)
        }
        return CreatedAccessToken(token: token, record: record)
    }

    public func accessTokens() async throws(KVError) -> [AccessTokenRecord] {
        _ = try formedLayout()
        return metadata.tokens.values.map(\.record).sorted { $0.id < $1.id }
    }

    public func revokeAccessToken(id: String) async throws(KVError) -> AccessTokenRecord {
        _ = try formedLayout()
        let me = nodeID
        let outcome = NIOLockedValueBox<AccessTokenRecord?>(nil)
        try await changeTables { (metadata) throws(KVError) in
            guard var record = metadata.tokens[id]?.record else {
                throw KVError(.notFound, "there is no token \(id.prefix(40))")
            }
            if !record.revoked {
                record.revoked = true
                try metadata.record(record, by: me)
            }
            outcome.withLockedValue { $0 = record }
        }
        guard let record = outcome.withLockedValue({ $0 }) else {
            throw KVError(.internalError, "revoking the token left no record")
        }
        return record
    }

    public func immediateAccessToken(id: String) -> AccessTokenRecord? {
        state.withLockedValue { $0.metadata.tokens[id]?.record }
    }
}
