import Foundation
import KVAccess
import KVClient
import KVCore
import KVTestSupport
import NIOHTTP1
import Testing

/// Access control of a real `kv server` with an administrator token configured: every
/// route, tried without a token, with garbled, unknown, revoked and expired tokens,
/// with a token one grant short of what the route needs, and with exactly that grant.
@Suite("access control", .serialized)
struct AccessControlTests {
    static let adminToken = "test-admin-token-0123456789abcdef"

    /// One route and the grant it needs; `short` is a grant just below it.
    struct Route: CustomStringConvertible {
        var method: HTTPMethod
        var path: String
        var body: String = ""
        var needs: String
        var short: String
        var description: String { "\(method.rawValue) \(path)" }
    }

    /// Every route of the API that needs a token, with the smallest grant that passes.
    static let routes: [Route] = [
        Route(method: .GET, path: "/v1/_namespaces", needs: "other:read", short: "-"),
        Route(method: .GET, path: "/v1/_tables/orders", needs: "orders:read", short: "other:admin"),
        Route(method: .DELETE, path: "/v1/_tables/scratch", needs: "scratch:admin", short: "scratch:write"),
        Route(
            method: .PUT, path: "/v1/_tables/orders/more", body: #"{"key":["string"]}"#,
            needs: "orders:admin",
            short: "orders:write"),
        Route(method: .GET, path: "/v1/_tables/orders/items", needs: "orders:read", short: "other:read"),
        Route(method: .DELETE, path: "/v1/_tables/orders/gone", needs: "orders:admin", short: "orders:write"),
        Route(
            method: .POST, path: "/v1/_tables/orders/scratch/clear", needs: "orders:admin",
            short: "orders:write"),
        Route(method: .GET, path: "/v1/_scan/orders/items", needs: "orders:read", short: "other:write"),
        Route(method: .GET, path: "/v1/_counter/orders/items/c", needs: "orders:read", short: "other:admin"),
        Route(
            method: .POST, path: "/v1/_counter/orders/items/c", needs: "orders:write", short: "orders:read"),
        Route(method: .GET, path: "/v1/orders/items/k", needs: "orders:read", short: "other:admin"),
        Route(method: .HEAD, path: "/v1/orders/items/k", needs: "orders:read", short: "other:admin"),
        Route(
            method: .PUT, path: "/v1/orders/items/k", body: "v", needs: "orders:write", short: "orders:read"),
        Route(method: .DELETE, path: "/v1/orders/items/d", needs: "orders:write", short: "orders:read"),
        Route(method: .GET, path: "/v1/_cluster", needs: "*:read", short: "orders:admin"),
        Route(method: .GET, path: "/v1/_cluster/layout", needs: "*:read", short: "orders:admin"),
        Route(method: .GET, path: "/v1/_cluster/plan", needs: "*:read", short: "orders:admin"),
        Route(method: .GET, path: "/v1/_cluster/transfers", needs: "*:read", short: "orders:admin"),
        Route(method: .DELETE, path: "/v1/_cluster/stage", needs: "*:admin", short: "*:write"),
        Route(
            method: .POST, path: "/v1/_cluster/stage", body: #"{"change":"set-zone","node":"x","zone":"z"}"#,
            needs: "*:admin", short: "*:write"),
        Route(
            method: .POST, path: "/v1/_cluster/commit", body: #"{"plan":"x"}"#, needs: "*:admin",
            short: "*:write"),
        Route(
            method: .POST, path: "/v1/_cluster/transfers", body: #"{"paused":false}"#, needs: "*:admin",
            short: "*:write"),
        Route(method: .GET, path: "/metrics", needs: "*:read", short: "orders:admin"),
        Route(
            method: .POST, path: "/v1/_node/backup", body: #"{"name":"b1"}"#, needs: "*:admin",
            short: "*:write"),
        Route(method: .GET, path: "/v1/_auth/tokens", needs: "*:admin", short: "*:write"),
        Route(
            method: .POST, path: "/v1/_auth/tokens", body: #"{"name":"n","grants":{"a":"read"}}"#,
            needs: "*:admin",
            short: "*:write"),
        Route(method: .DELETE, path: "/v1/_auth/tokens/0000000000000000", needs: "*:admin", short: "*:write"),
        Route(method: .GET, path: "/v1/_auth/whoami", needs: "other:read", short: "-"),
        Route(
            method: .POST, path: "/v1/_batch",
            body:
                #"{"operations":[{"op":"put","namespace":"orders","table":"items","key":["b"],"value":"x"}]}"#,
            needs: "other:read", short: "-"),
        Route(method: .GET, path: "/v1/_functions", needs: "*:admin", short: "*:write"),
        Route(method: .POST, path: "/v1/_functions/f", body: "(module)", needs: "*:admin", short: "*:write"),
        Route(method: .GET, path: "/v1/_functions/f", needs: "*:admin", short: "*:write"),
        Route(method: .DELETE, path: "/v1/_functions/f", needs: "*:admin", short: "*:write"),
        Route(
            method: .POST, path: "/v1/_apply/orders/items/k?function=f", needs: "orders:write",
            short: "orders:read"),
        Route(method: .GET, path: "/v1/_nowhere", needs: "other:read", short: "-"),
    ]

    static func server() throws -> ServerProcess {
        try ServerProcess(
            arguments: ["--partitions", "16"], environment: ["KV_ADMIN_TOKEN": adminToken])
    }

    static func send(
        _ connection: HTTPConnection, _ route: Route, authorization: String?
    ) async throws -> ClientResponse {
        var headers = HTTPHeaders()
        if let authorization { headers.add(name: "authorization", value: authorization) }
        return try await connection.send(
            route.method, route.path, headers: headers,
            body: route.body.isEmpty ? nil : Array(route.body.utf8))
    }

    static func code(_ response: ClientResponse) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])?["code"] as? String
    }

    /// Creates a token through the admin API and returns its text and id.
    static func create(
        _ admin: HTTPKeyValueService, _ grants: String, expiresIn: Int64? = nil
    ) async throws -> (token: String, id: String) {
        let created = try await admin.createAccessToken(
            AccessTokenRequest(
                name: "test " + grants, grants: try AccessGrants(parsing: grants), expiresInSeconds: expiresIn
            ))
        return (created.token, created.record.id)
    }

    @Test func everyRouteChecksItsToken() async throws {
        let server = try Self.server()
        defer { server.kill() }
        let admin = try await HTTPKeyValueService(
            url: server.url, options: HTTPClientOptions(token: Self.adminToken))
        defer { Task { await admin.close() } }
        for table in ["items", "scratch"] {
            _ = try await admin.createTable(
                TableDescriptor(
                    name: try TableName(namespace: "orders", table: table), schema: try KeySchema([.string])))
        }
        let revoked = try await Self.create(admin, "*:admin")
        _ = try await admin.revokeAccessToken(id: revoked.id)
        let expired = try await Self.create(admin, "*:admin", expiresIn: 1)
        var grantTokens: [String: String] = [:]
        for grant in Set(Self.routes.flatMap { [$0.needs, $0.short] }) where grant != "-" {
            grantTokens[grant] = try await Self.create(admin, grant).token
        }
        // An unknown token of the right shape, and text of no token's shape.
        let (unknown, _) = AccessTokenCrypto.generate()
        try await Task.sleep(for: .milliseconds(1_100))
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        let refusals: [(String?, Int, String)] = [
            (nil, 401, "auth.token_required"),
            ("Bearer " + unknown, 401, "auth.invalid_token"),
            ("Bearer not-a-token", 401, "auth.invalid_token"),
            ("Basic " + Data("admin:admin".utf8).base64EncodedString(), 401, "auth.invalid_token"),
            ("Bearer " + Self.adminToken.dropLast() + "X", 401, "auth.invalid_token"),
            ("Bearer " + revoked.token, 401, "auth.token_revoked"),
            ("Bearer " + expired.token, 401, "auth.token_expired"),
        ]
        for route in Self.routes {
            for (authorization, status, code) in refusals {
                let response = try await Self.send(connection, route, authorization: authorization)
                #expect(response.status == status, "\(route) with \(authorization ?? "nothing")")
                if route.method != .HEAD {
                    #expect(Self.code(response) == code, "\(route) with \(authorization ?? "nothing")")
                }
                if status == 401 { #expect(response.headers.first(name: "www-authenticate") == "Bearer") }
            }
            if route.short != "-", let short = grantTokens[route.short] {
                let response = try await Self.send(connection, route, authorization: "Bearer " + short)
                #expect(response.status == 403, "\(route) with \(route.short)")
                if route.method != .HEAD { #expect(Self.code(response) == "auth.forbidden", "\(route)") }
            }
            let allowed = try await Self.send(
                connection, route, authorization: "Bearer " + grantTokens[route.needs]!)
            #expect(![401, 403].contains(allowed.status), "\(route) with \(route.needs): \(allowed.status)")
        }
        // Health checks and the node's description stay open: load balancers and joining
        // nodes ask for them without a token.
        for path in ["/health", "/health/ready", "/health/live", "/v1/_node"] {
            let response = try await connection.send(.GET, path)
            #expect(response.status == 200, "\(path)")
        }
        await connection.close()
    }

    @Test func grantsDecideWhatEachTokenSees() async throws {
        let server = try Self.server()
        defer { server.kill() }
        let admin = try await HTTPKeyValueService(
            url: server.url, options: HTTPClientOptions(token: Self.adminToken))
        for namespace in ["orders", "audit", "hidden"] {
            _ = try await admin.createTable(
                TableDescriptor(
                    name: try TableName(namespace: namespace, table: "t"), schema: try KeySchema([.string])))
        }
        let reader = try await Self.create(admin, "orders:read,audit:write")
        let client = try await HTTPKeyValueService(
            url: server.url, options: HTTPClientOptions(token: reader.token))
        #expect(try await client.namespaces() == ["audit", "orders"])
        #expect(try await client.grants() == (try AccessGrants(parsing: "orders:read,audit:write")))
        let auditRow = RowKey(table: try TableName(namespace: "audit", table: "t"), parts: [.string("a")])
        _ = try await client.put(auditRow, value: RowValue(bytes: [1]), options: WriteOptions())
        let orderRow = RowKey(table: try TableName(namespace: "orders", table: "t"), parts: [.string("a")])
        await #expect(throws: KVError.self) {
            _ = try await client.put(orderRow, value: RowValue(bytes: [1]), options: WriteOptions())
        }
        // A batch answers each item it may not run with 403 in place; the others run.
        let results = try await client.batch([
            .put(auditRow, RowValue(bytes: [2]), WriteOptions()), .get(orderRow),
            .put(orderRow, RowValue(bytes: [2]), WriteOptions()),
        ])
        #expect(results.count == 3)
        if case .written = results[0] {} else { Issue.record("the permitted write failed: \(results[0])") }
        if case .read = results[1] {} else { Issue.record("the permitted read failed: \(results[1])") }
        if case .failed(let error) = results[2] {
            #expect(error.code == .forbidden)
        } else {
            Issue.record("the forbidden write ran: \(results[2])")
        }
        #expect(try await admin.get(orderRow).siblings.isEmpty)
        await client.close()
        await admin.close()
    }

    /// Tokens live in the cluster metadata: one made through any node works on every
    /// node at once, a revocation through another node holds everywhere at once, and
    /// both survive a restart. The data directory holds the token's hash, never its text.
    @Test func tokensAreClusterMetadata() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(
                count: 3, arguments: ["--partitions", "16"], environment: ["KV_ADMIN_TOKEN": Self.adminToken])
        }
        defer { for node in cluster.nodes { node.kill() } }
        let admins = try await (0..<3).asyncMap {
            try await HTTPKeyValueService(
                url: cluster.url($0), options: HTTPClientOptions(token: Self.adminToken))
        }
        _ = try await admins[0].createTable(
            TableDescriptor(
                name: try TableName(namespace: "orders", table: "t"), schema: try KeySchema([.string])))
        let writer = try await Self.create(admins[0], "orders:write")
        let row = RowKey(table: try TableName(namespace: "orders", table: "t"), parts: [.string("k")])
        for index in 0..<3 {
            let client = try await HTTPKeyValueService(
                url: cluster.url(index), options: HTTPClientOptions(token: writer.token))
            _ = try await client.put(row, value: RowValue(bytes: [UInt8(index)]), options: WriteOptions())
            await client.close()
        }
        let files = try await offCooperativePool { try Self.dataBytes(cluster.nodes[1].dataDirectory) }
        #expect(files.firstRange(of: AccessTokenCrypto.hash(writer.token)) != nil, "the hash is not stored")
        #expect(
            files.firstRange(of: Array(writer.token.utf8.suffix(43))) == nil, "the token's secret is stored")

        _ = try await admins[2].revokeAccessToken(id: writer.id)
        for index in 0..<3 {
            let client = try await HTTPKeyValueService(
                url: cluster.url(index), options: HTTPClientOptions(token: writer.token))
            await #expect(throws: KVError.self) {
                _ = try await client.get(row)
            }
            await client.close()
        }
        let reader = try await Self.create(admins[1], "orders:read")
        for admin in admins { await admin.close() }
        cluster.nodes[0].kill()
        try await offCooperativePool { try cluster.restart(0) }
        let client = try await HTTPKeyValueService(
            url: cluster.url(0), options: HTTPClientOptions(token: reader.token))
        #expect(try await client.get(row).siblings.count >= 1)
        await client.close()
        let revokedClient = try await HTTPKeyValueService(
            url: cluster.url(0), options: HTTPClientOptions(token: writer.token))
        do {
            _ = try await revokedClient.get(row)
            Issue.record("a revoked token works again after a restart")
        } catch {
            #expect(error.code == .revokedToken)
        }
        await revokedClient.close()
    }

    /// Every byte of every file under `directory`, concatenated.
    static func dataBytes(_ directory: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let full = directory + "/" + path
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory),
                !isDirectory.boolValue
            else { continue }
            if let data = FileManager.default.contents(atPath: full) { bytes += data }
        }
        return bytes
    }
}

extension Range<Int> {
    func asyncMap<T>(_ transform: (Int) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for index in self { results.append(try await transform(index)) }
        return results
    }
}
