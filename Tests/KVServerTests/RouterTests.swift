import FoundationEssentials
import KVCore
import KVNode
import KVServer
import KVStorage
import KVStorageMemory
import Logging
import NIOHTTP1
import Testing

/// The router called directly, in process, over a one-node cluster: the same requests as
/// the real-server tests, plus failures only reachable from inside (a corrupt stored
/// object).
@Suite("HTTP router in process")
struct RouterTests {
    let volume = MemoryVolume()
    let node: ClusterNode
    let router: Router

    init() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        node = try await ServiceFixture.startCluster(
            of: 1, engine: MemoryStorageEngine(volume: volume),
            settings: NodeSettings(partitionCount: 16, maximumKeyBytes: 512, maximumValueBytes: 2048),
            logger: logger)[0]
        router = Router(service: node, logger: logger)
        #expect(
            try await respond(
                .PUT, "/v1/_tables/app/users", #"{"key":["string","int64"],"partition_key_length":1}"#
            ).status == .ok)
        #expect(try await respond(.PUT, "/v1/app/users/alice/1", "original").status == .noContent)
    }

    /// Runs one test's body, then stops the node whatever happened.
    func run(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            await node.shutdown()
            throw error
        }
        await node.shutdown()
    }

    func respond(_ method: HTTPMethod, _ target: String, _ body: String? = nil, headers: HTTPHeaders = [:])
        async throws
        -> HTTPResponse
    {
        let request = try #require(
            HTTPRequest(method: method, uri: target, headers: headers, body: Array((body ?? "").utf8)))
        return await router.respond(to: request)
    }

    func code(_ response: HTTPResponse) -> String? {
        guard case .bytes(let bytes) = response.body else { return nil }
        return (try? JSONDecoder().decode(WireError.self, from: Data(bytes)))?.code
    }

    @Test func badInputsThroughTheRouter() async throws {
        try await run {
            // Body size and percent-encoding are checked by the connection handler before the
            // router sees a request; their cases run against the real server only.
            let routerCases = HTTPAPITests.badInputs.filter {
                $0.5 != "request.body_too_large" && !$0.1.contains("%zz")
            }
            #expect(routerCases.count >= 25)
            for (method, target, body, header, status, expectedCode) in routerCases {
                var headers = HTTPHeaders()
                if let colon = header.firstIndex(of: ":") {
                    headers.add(
                        name: String(header[..<colon]),
                        value: String(header[header.index(after: colon)...].dropFirst()))
                }
                let response = try await respond(HTTPMethod(rawValue: method), target, body, headers: headers)
                #expect(Int(response.status.code) == status, "\(method) \(target.prefix(60))")
                #expect(code(response) == expectedCode, "\(method) \(target.prefix(60))")
            }
            let unchanged = try await respond(.GET, "/v1/app/users/alice/1")
            guard case .bytes(let bytes) = unchanged.body else {
                Issue.record("no body")
                return
            }
            #expect(String(decoding: bytes, as: UTF8.self) == "original")
        }
    }

    @Test func conflictsAndLimitsMapToTheirStatuses() async throws {
        try await run {
            let conflict = try await respond(.PUT, "/v1/_tables/app/users", #"{"key":["string"]}"#)
            #expect(conflict.status == .conflict && code(conflict) == "table.exists")
            let missing = try await respond(.DELETE, "/v1/_tables/app/none")
            #expect(missing.status == .notFound && code(missing) == "table.not_found")
        }
    }

    /// A stored object that does not decode is a 500 with a stable code, not a crash.
    @Test func corruptStoredObjectsAreReportedNotTrusted() async throws {
        try await run {
            let key = try RowKey(
                table: TableName(namespace: "app", table: "users"), parts: [.string("alice"), .int64(1)])
            let partition = PartitionID.of(
                namespace: "app", table: "users", encodedPartitionKey: KeyEncoding.encode([.string("alice")]),
                partitionCount: 16)
            let dataKey = StorageLayout.dataKey(
                partition: partition, namespace: "app", table: "users", key: KeyEncoding.encode(key.parts))
            let engine = MemoryStorageEngine(volume: volume)
            #expect(
                try engine.get(dataKey, in: .data) != nil, "the test must corrupt the row the router reads")
            var batch = WriteBatch()
            batch.put(dataKey, [StoredObjectCodec.formatVersion, 0xFF, 0xFF])
            try engine.write(batch)
            let response = try await respond(.GET, "/v1/app/users/alice/1")
            #expect(response.status == .internalServerError)
            #expect(code(response) == "storage.corrupt_object")
            let scan = try await respond(.GET, "/v1/_scan/app/users")
            #expect(code(scan) == "storage.corrupt_object")
        }
    }
}
