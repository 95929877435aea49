import Foundation
import KVClient
import KVCore
import KVTestSupport
import NIOHTTP1
import Testing

/// Update functions through real `kv server` processes: registered through one node,
/// applied at others under contention, and modules that misbehave stopped while the
/// nodes go on serving.
@Suite("update functions across a cluster", .serialized)
struct UpdateFunctionTests {
    /// An example module's text, as a user would send it with curl.
    static func example(_ name: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/functions/\(name).wat")
        return Array(try Data(contentsOf: url))
    }

    static func code(_ response: ClientResponse) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])?["code"] as? String
    }

    static func text(_ response: ClientResponse) -> String { String(decoding: response.body, as: UTF8.self) }

    @Test("examples registered once are applied through every node; 4 × 50 contended applies count 200")
    func examplesUnderContention() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: ["--partitions", "16"])
        }
        var connections: [HTTPConnection] = []
        for index in 0..<3 {
            connections.append(try await HTTPConnection(host: "127.0.0.1", port: cluster.httpPorts[index]))
        }
        let first = connections[0]
        #expect(
            try await first.send(.PUT, "/v1/_tables/app/rows", body: Array(#"{"key":["string"]}"#.utf8))
                .status
                == 200)
        for name in ["bounded-counter", "append-to-list"] {
            let registered = try await first.send(
                .POST, "/v1/_functions/\(name)", body: try Self.example(name))
            #expect(registered.status == 201, "\(Self.text(registered))")
        }
        let listed = try await connections[2].send(.GET, "/v1/_functions")
        #expect(Self.text(listed).contains(#""name":"append-to-list""#))
        #expect(Self.text(listed).contains(#""name":"bounded-counter""#))
        let binary = try await connections[1].send(.GET, "/v1/_functions/bounded-counter")
        #expect(binary.status == 200 && binary.body.starts(with: [0, 0x61, 0x73, 0x6D]))

        // Four clients, each through another node than the last, apply the counter 50
        // times each with a maximum of 1,000: no increment is lost.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<4 {
                group.addTask {
                    let connection = try await HTTPConnection(
                        host: "127.0.0.1", port: cluster.httpPorts[client % 3])
                    for _ in 0..<50 {
                        let applied = try await connection.send(
                            .POST, "/v1/_apply/app/rows/visits?function=bounded-counter&attempts=64",
                            body: Array("1000".utf8))
                        #expect(applied.status == 200, "\(Self.text(applied))")
                        #expect(applied.headers.first(name: "x-kv-function-outcome") == "written")
                    }
                    await connection.close()
                }
            }
            try await group.waitForAll()
        }
        let count = try await connections[1].send(.GET, "/v1/app/rows/visits")
        #expect(Self.text(count) == "200")
        // At its maximum the counter refuses, and the row stays.
        let refused = try await connections[2].send(
            .POST, "/v1/_apply/app/rows/visits?function=bounded-counter", body: Array("200".utf8))
        #expect(refused.status == 422 && Self.code(refused) == "function.refused")
        #expect(Self.text(refused).contains("the counter is at its maximum"))

        let appended = try await connections[1].send(
            .POST, "/v1/_apply/app/rows/list?function=append-to-list", body: Array(#""milk""#.utf8))
        #expect(appended.status == 200 && Self.text(appended) == #"["milk"]"#)
        #expect(appended.headers.first(name: "x-kv-context")?.isEmpty == false)
        let again = try await connections[2].send(
            .POST, "/v1/_apply/app/rows/list?function=append-to-list", body: Array("2".utf8))
        #expect(Self.text(again) == #"["milk",2]"#)
        // The Swift client sends an apply straight to a replica of the key.
        let client = try await ClusterClient(seeds: [cluster.url(0)])
        let viaClient = try await client.apply(
            function: "append-to-list",
            to: RowKey(table: try TableName(namespace: "app", table: "rows"), parts: [.string("list")]),
            arguments: Array("3".utf8))
        #expect(viaClient.outcome == .written && viaClient.attempts == 1)
        #expect(viaClient.value.map { String(decoding: $0.bytes, as: UTF8.self) } == #"["milk",2,3]"#)
        await client.close()

        // Removed, the function is gone from every node.
        #expect(try await connections[0].send(.DELETE, "/v1/_functions/append-to-list").status == 204)
        try await Task.sleep(for: .milliseconds(1_100))
        let gone = try await connections[2].send(
            .POST, "/v1/_apply/app/rows/list?function=append-to-list", body: Array("3".utf8))
        #expect(gone.status == 404 && Self.code(gone) == "function.not_found")
        for connection in connections { await connection.close() }
    }

    @Test("a loop, a memory bomb and an import are stopped with their codes; the node stays healthy")
    func misbehavingModules() async throws {
        // A tenth of the default fuel, and a time limit no loaded machine reaches: the
        // loop must be stopped by its fuel, whatever the load.
        let server = try ServerProcess(arguments: [
            "--partitions", "16", "--function-fuel", "5000000", "--function-time-limit-ms", "300000",
        ])
        defer { _ = server.terminate() }
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        #expect(
            try await connection.send(.PUT, "/v1/_tables/app/rows", body: Array(#"{"key":["string"]}"#.utf8))
                .status == 200)
        func module(_ body: String, memory: String = "1 16", imports: String = "") -> [UInt8] {
            Array(
                """
                (module \(imports)
                  (memory (export "memory") \(memory))
                  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
                  (func (export "update") (param i32 i32 i32 i32) (result i32 i32 i32) \(body)))
                """.utf8)
        }
        let refusedModules: [(String, [UInt8], String)] = [
            ("unbounded", module("unreachable", memory: "1"), "function.invalid"),
            ("huge", module("unreachable", memory: "1 65536"), "function.invalid"),
            (
                "wasi",
                module(
                    "unreachable",
                    imports: #"(import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))"#),
                "function.invalid"
            ),
            ("garbage", Array("#!/usr/bin/perl\nsystem('touch /tmp/pwned')".utf8), "function.invalid"),
            ("bad name!", module("unreachable"), "request.invalid_name"),
        ]
        for (name, source, code) in refusedModules {
            let target =
                "/v1/_functions/"
                + (name.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? name)
            let response = try await connection.send(.POST, target, body: source)
            #expect(response.status == 400, "\(name): \(Self.text(response))")
            #expect(Self.code(response) == code, "\(name): \(Self.text(response))")
        }
        let loops = module("(loop $forever (br $forever)) (unreachable)")
        let bomb = module(
            """
            (block $full (loop $more
              (br_if $full (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)))
              (br $more)))
            (i32.store (i32.const 2000000) (i32.const 1))
            (i32.const 1) (i32.const 0) (i32.const 0)
            """)
        for (name, source) in [("loops", loops), ("bomb", bomb)] {
            #expect(try await connection.send(.POST, "/v1/_functions/\(name)", body: source).status == 201)
        }
        for _ in 0..<3 {
            let stopped = try await connection.send(.POST, "/v1/_apply/app/rows/k?function=loops")
            #expect(
                stopped.status == 422 && Self.code(stopped) == "function.limit_exceeded",
                "\(Self.text(stopped))")
            #expect(Self.text(stopped).contains("fuel"))
            let trapped = try await connection.send(.POST, "/v1/_apply/app/rows/k?function=bomb")
            #expect(trapped.status == 422 && Self.code(trapped) == "function.failed", "\(Self.text(trapped))")
            #expect(Self.text(trapped).contains("out of bounds memory access"))
        }
        let unknown = try await connection.send(.POST, "/v1/_apply/app/rows/k?function=nothing")
        #expect(unknown.status == 404 && Self.code(unknown) == "function.not_found")
        let unnamed = try await connection.send(.POST, "/v1/_apply/app/rows/k")
        #expect(unnamed.status == 400 && Self.code(unnamed) == "request.invalid")
        // Nothing was written, the node is ready and still applies a good function.
        #expect(try await connection.send(.GET, "/v1/app/rows/k").status == 404)
        #expect(try await connection.send(.GET, "/health/ready").status == 200)
        #expect(
            try await connection.send(
                .POST, "/v1/_functions/bounded-counter", body: try Self.example("bounded-counter")
            ).status == 201)
        let counted = try await connection.send(
            .POST, "/v1/_apply/app/rows/k?function=bounded-counter", body: Array("5".utf8))
        #expect(counted.status == 200 && Self.text(counted) == "1")
        #expect(server.isRunning)
        await connection.close()
    }
}
