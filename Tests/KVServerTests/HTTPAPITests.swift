import Foundation
import KVClient
import KVCore
import KVTestSupport
import NIOHTTP1
import Testing

/// The HTTP API of a real `kv server` process on 127.0.0.1: every endpoint, every error
/// code, and the bad inputs a server must survive without changing stored data.
@Suite("HTTP API against a real server", .serialized)
final class HTTPAPITests {
    let server: ServerProcess
    let client: HTTPConnection

    init() async throws {
        server = try ServerProcess(arguments: [
            "--max-value-bytes", "2048", "--max-body-bytes", "8192", "--max-key-bytes", "512",
            "--request-timeout-seconds", "2", "--max-connections", "32",
        ])
        client = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        let created = try await client.send(
            .PUT, "/v1/_tables/app/users",
            body: Array(#"{"key":["string","int64"],"partition_key_length":1}"#.utf8))
        #expect(created.status == 200)
        let stored = try await client.send(
            .PUT, "/v1/app/users/alice/1", headers: ["content-type": "text/plain"],
            body: Array("original".utf8))
        #expect(stored.status == 204)
    }

    deinit {
        let client = client
        Task { await client.close() }
    }

    func send(_ method: HTTPMethod, _ target: String, _ body: String? = nil, headers: HTTPHeaders = [:])
        async throws -> ClientResponse
    {
        try await client.send(method, target, headers: headers, body: body.map { Array($0.utf8) })
    }

    func code(_ response: ClientResponse) -> String? {
        (try? JSONDecoder().decode(WireError.self, from: Data(response.body)))?.code
    }

    /// The stored row is untouched and the server still answers.
    func expectUnchanged(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let fresh = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        let response = try await fresh.send(.GET, "/v1/app/users/alice/1")
        await fresh.close()
        #expect(response.status == 200, sourceLocation: sourceLocation)
        #expect(String(decoding: response.body, as: UTF8.self) == "original", sourceLocation: sourceLocation)
        #expect(server.isRunning, sourceLocation: sourceLocation)
    }

    @Test func endpointsAnswer() async throws {
        #expect(try await send(.GET, "/health").status == 200)
        let node = try await send(.GET, "/v1/_node")
        #expect(node.status == 200)
        #expect(try JSONDecoder().decode(WireNodeInfo.self, from: Data(node.body)).engine == "rocksdb")
        #expect(
            String(decoding: try await send(.GET, "/v1/_namespaces").body, as: UTF8.self)
                == #"{"namespaces":["app"]}"#)
        #expect(try await send(.GET, "/v1/_tables/app").status == 200)
        let described = try await send(.GET, "/v1/_tables/app/users")
        #expect(
            try JSONDecoder().decode(WireTable.self, from: Data(described.body)).key == ["string", "int64"])

        let get = try await send(.GET, "/v1/app/users/alice/1")
        #expect(get.status == 200)
        #expect(get.headers.first(name: "content-type") == "text/plain")
        #expect(get.headers.first(name: "etag")?.hasPrefix("\"") == true)
        #expect(get.headers.first(name: "x-kv-context")?.isEmpty == false)
        let head = try await send(.HEAD, "/v1/app/users/alice/1")
        #expect(head.status == 200 && head.body.isEmpty && head.headers.first(name: "content-length") == "8")

        // Siblings: 300 with JSON, or multipart on request; the context resolves them.
        #expect(try await send(.PUT, "/v1/app/users/bob/2", "one").status == 204)
        #expect(try await send(.PUT, "/v1/app/users/bob/2", "two").status == 204)
        let siblings = try await send(.GET, "/v1/app/users/bob/2")
        #expect(siblings.status == 300)
        #expect(siblings.headers.first(name: "x-kv-siblings") == "2")
        let body = try JSONDecoder().decode(WireSiblings.self, from: Data(siblings.body))
        #expect(Set(body.siblings.compactMap(\.value)) == ["one", "two"])
        let multipart = try await send(.GET, "/v1/app/users/bob/2", headers: ["accept": "multipart/mixed"])
        #expect(multipart.status == 300)
        #expect(
            multipart.headers.first(name: "content-type")?.hasPrefix("multipart/mixed; boundary=") == true)
        let multipartText = String(decoding: multipart.body, as: UTF8.self)
        #expect(multipartText.contains("\r\n\r\none\r\n") && multipartText.contains("\r\n\r\ntwo\r\n"))
        #expect(
            try await send(.PUT, "/v1/app/users/bob/2", "resolved", headers: ["x-kv-context": body.context])
                .status == 204)
        #expect(
            String(decoding: try await send(.GET, "/v1/app/users/bob/2").body, as: UTF8.self) == "resolved")

        // Conditional writes.
        #expect(
            code(try await send(.PUT, "/v1/app/users/alice/1", "x", headers: ["if-none-match": "*"]))
                == "request.precondition_failed")
        #expect(
            try await send(.PUT, "/v1/app/users/carol/3", "c", headers: ["if-none-match": "*"]).status == 204)
        let stale = try await send(
            .PUT, "/v1/app/users/carol/3", "c2", headers: ["if-match": "\"0000000000000000\""])
        #expect(stale.status == 412)
        let current = try await send(.GET, "/v1/app/users/carol/3").headers.first(name: "etag")!
        #expect(
            try await send(.PUT, "/v1/app/users/carol/3", "c2", headers: ["if-match": current]).status == 204)

        // Scans: a JSON page and JSON lines.
        let page = try await send(.GET, "/v1/_scan/app/users?limit=2")
        let scanned = try JSONDecoder().decode(WireScanPage.self, from: Data(page.body))
        #expect(
            scanned.rows.map(\.key) == [[.string("alice"), .integer(1)], [.string("bob"), .integer(2)]])
        #expect(scanned.continuation != nil)
        let lines = try await send(.GET, "/v1/_scan/app/users?format=jsonl&keys_only=true")
        #expect(lines.headers.first(name: "transfer-encoding") == "chunked")
        #expect(String(decoding: lines.body, as: UTF8.self).split(separator: "\n").count == 3)
        let prefixed = try await send(.GET, "/v1/_scan/app/users/bob?keys_only=1")
        #expect(try JSONDecoder().decode(WireScanPage.self, from: Data(prefixed.body)).rows.count == 1)
        let bounded = try await send(.GET, "/v1/_scan/app/users?start=b&end=carol&end=3&reverse=true")
        #expect(
            try JSONDecoder().decode(WireScanPage.self, from: Data(bounded.body)).rows.map(\.key.first) == [
                .string("carol"), .string("bob"),
            ])

        // Batch.
        let batch = try await send(
            .POST, "/v1/_batch",
            #"{"operations":[{"op":"get","namespace":"app","table":"users","key":["alice",1]},{"op":"put","namespace":"app","table":"users","key":["dave",4],"value":"d"},{"op":"get","namespace":"app","table":"users","key":["nobody",0]},{"op":"get","namespace":"app","table":"users","key":[1,"x"]}]}"#
        )
        let results = try JSONDecoder().decode(WireBatchResponse.self, from: Data(batch.body)).results
        #expect(results.map(\.status) == [200, 204, 404, 400])
        #expect(results[0].siblings?.first?.value == "original")
        #expect(results[3].code == "request.invalid_key_part")

        // Items that do not parse are answered in place; the valid ones around them are
        // applied. Key parts follow the schema's JSON types strictly.
        let mixed = try await send(
            .POST, "/v1/_batch",
            #"{"operations":[{"op":"put","table":"users","key":["erin",5],"value":"e"},"#
                + #"{"op":"put","namespace":"app","table":"users","key":["erin",6],"value":"e6"},"#
                + #"{"op":"get","namespace":"app","table":"users","key":[{"a":1},1]},"#
                + #"{"op":"get","namespace":"app","table":"users","key":["erin",99999999999999999999]},"#
                + #"{"op":"put","namespace":"app","table":"users","key":["erin","7"],"value":"x"},"#
                + #"{"op":"put","namespace":"app","table":"users","key":[8,8],"value":"x"},"#
                + #"{"op":"get","namespace":"app","table":"users","key":["erin",6]}]}"#)
        #expect(mixed.status == 200)
        let mixedResults = try JSONDecoder().decode(WireBatchResponse.self, from: Data(mixed.body)).results
        #expect(mixedResults.map(\.status) == [400, 204, 400, 400, 400, 400, 200])
        #expect(
            mixedResults.map(\.code) == [
                "request.invalid", nil, "request.invalid_key_part", "request.invalid_key_part",
                "request.invalid_key_part", "request.invalid_key_part", nil,
            ])
        #expect(mixedResults[6].siblings?.first?.value == "e6")
        #expect(try await send(.GET, "/v1/app/users/erin/7").status == 404)

        // Delete, then the row is gone (404 with a context to write over the tombstone).
        #expect(try await send(.DELETE, "/v1/app/users/dave/4").status == 204)
        let gone = try await send(.GET, "/v1/app/users/dave/4")
        #expect(
            gone.status == 404 && code(gone) == "row.not_found"
                && gone.headers.first(name: "x-kv-context") != nil)

        // Counters.
        #expect(
            String(
                decoding: try await send(.POST, "/v1/_counter/app/users/visits/1?delta=3").body, as: UTF8.self
            ) == #"{"value":3}"#)
        #expect(
            String(decoding: try await send(.POST, "/v1/_counter/app/users/visits/1").body, as: UTF8.self)
                == #"{"value":4}"#)
        #expect(
            String(decoding: try await send(.GET, "/v1/_counter/app/users/visits/1").body, as: UTF8.self)
                == #"{"value":4}"#)
        #expect(code(try await send(.GET, "/v1/_counter/app/users/none/1")) == "row.not_found")
        #expect(code(try await send(.POST, "/v1/_counter/app/users/alice/1")) == "row.not_a_counter")
        #expect(code(try await send(.POST, "/v1/_counter/app/users/visits/1?delta=x")) == "request.invalid")

        // Table admin: clear, drop, drop namespace.
        #expect(try await send(.PUT, "/v1/_tables/tmp/t", #"{"key":["uuid"]}"#).status == 200)
        #expect(try await send(.PUT, "/v1/tmp/t/123e4567-e89b-12d3-a456-426614174000", "u").status == 204)
        #expect(try await send(.POST, "/v1/_tables/tmp/t/clear").status == 204)
        #expect(try await send(.GET, "/v1/tmp/t/123e4567-e89b-12d3-a456-426614174000").status == 404)
        #expect(try await send(.DELETE, "/v1/_tables/tmp/t").status == 204)
        #expect(code(try await send(.GET, "/v1/_tables/tmp/t")) == "table.not_found")
        #expect(try await send(.PUT, "/v1/_tables/tmp/u", #"{"key":["bytes"]}"#).status == 200)
        #expect(try await send(.DELETE, "/v1/_tables/tmp").status == 204)
        #expect(code(try await send(.GET, "/v1/_tables/tmp/u")) == "table.not_found")
        try await expectUnchanged()
    }

    /// Bad inputs: (method, target, body, extra header, expected status, expected code).
    static let badInputs: [(String, String, String?, String, Int, String)] = [
        ("PUT", "/v1/_tables/app/x", "{not json", "", 400, "request.invalid"),
        ("PUT", "/v1/_tables/app/x", #"{"key":"string"}"#, "", 400, "request.invalid"),
        ("PUT", "/v1/_tables/app/x", #"{"key":["float"]}"#, "", 400, "schema.invalid"),
        (
            "PUT", "/v1/_tables/app/x", #"{"key":["string"],"defaults":{"n":1,"r":3}}"#, "", 400,
            "request.invalid_quorum"
        ),
        ("PUT", "/v1/_tables/_bad/x", #"{"key":["string"]}"#, "", 400, "request.invalid_name"),
        ("POST", "/v1/_batch", #"{"operations":{"op":"put"}}"#, "", 400, "request.invalid"),
        ("POST", "/v1/_batch", #"{"items":[]}"#, "", 400, "request.invalid"),
        ("POST", "/v1/_batch", "[1,2", "", 400, "request.invalid"),
        ("GET", "/v1/app/users/%FF%FE/1", nil, "", 400, "request.invalid_key_part"),
        ("PUT", "/v1/app/users/alice/notanumber", "x", "", 400, "request.invalid_key_part"),
        ("PUT", "/v1/app/users/alice/99999999999999999999", "x", "", 400, "request.invalid_key_part"),
        ("GET", "/v1/app/users/alice", nil, "", 400, "request.key_arity"),
        ("PUT", "/v1/app/users/alice/1/extra", "x", "", 400, "request.key_arity"),
        ("GET", "/v1/app/users/%zz/1", nil, "", 400, "request.invalid"),
        (
            "PUT", "/v1/app/users/" + String(repeating: "k", count: 600) + "/1", "x", "", 400,
            "request.key_too_large"
        ),
        (
            "PUT", "/v1/app/users/alice/1", String(repeating: "v", count: 3000), "", 413,
            "request.value_too_large"
        ),
        (
            "PUT", "/v1/app/users/alice/1", String(repeating: "v", count: 9000), "", 413,
            "request.body_too_large"
        ),
        ("GET", "/v1/nope/users/alice/1", nil, "", 404, "table.not_found"),
        ("GET", "/v1/app/nope/alice/1", nil, "", 404, "table.not_found"),
        ("PUT", "/v1/app/users/alice/1", "x", "x-kv-context: AQHgarbage", 400, "request.invalid_context"),
        (
            "DELETE", "/v1/app/users/alice/1", nil, "x-kv-context: AQH693ejp3CMqAEBIYDII7RP4tY", 400,
            "request.invalid_context"
        ),
        ("PUT", "/v1/app/users/alice/1", "x", "if-none-match: \"abc\"", 400, "request.invalid"),
        ("GET", "/v1/_scan/app/users?limit=0", nil, "", 400, "request.invalid"),
        ("GET", "/v1/_scan/app/users?continuation=%21%21", nil, "", 400, "request.invalid_continuation"),
        ("GET", "/v1/_scan/app/users?start=a&start=b", nil, "", 400, "request.invalid_key_part"),
        ("GET", "/v1/_scan/app/users?format=xml", nil, "", 400, "request.invalid"),
        ("GET", "/v1/_scan/app/users?reverse=maybe", nil, "", 400, "request.invalid"),
        ("GET", "/nowhere", nil, "", 404, "request.not_found"),
        ("PATCH", "/v1/app/users/alice/1", "x", "", 405, "request.method_not_allowed"),
        ("POST", "/health", nil, "", 405, "request.method_not_allowed"),
    ]

    /// Each bad input gets its status and stable code; the server stays up and the
    /// stored row does not change.
    @Test func badInputGetsItsStatusAndCode() async throws {
        for (method, target, body, header, status, expectedCode) in Self.badInputs {
            try await check(
                method: method, target: target, body: body, header: header, status: status,
                expectedCode: expectedCode)
        }
    }

    func check(
        method: String, target: String, body: String?, header: String, status: Int, expectedCode: String
    )
        async throws
    {
        var headers = HTTPHeaders()
        if let colon = header.firstIndex(of: ":") {
            headers.add(
                name: String(header[..<colon]),
                value: String(header[header.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        // Each case on its own connection: some of them make the server close it.
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        let response = try await connection.send(
            HTTPMethod(rawValue: method), target, headers: headers, body: body.map { Array($0.utf8) })
        await connection.close()
        #expect(response.status == status, "\(method) \(target.prefix(60))")
        #expect(
            code(response) == expectedCode,
            "\(method) \(target.prefix(60)): \(String(decoding: response.body, as: UTF8.self))")
        try await expectUnchanged()
    }

    @Test func oversizeHeadersGet431() async throws {
        for size in [20_000, 100_000] {
            let socket = try RawSocket(port: server.port)
            socket.send(
                "GET /health HTTP/1.1\r\nhost: x\r\nx-big: \(String(repeating: "h", count: size))\r\n\r\n")
            let answer = socket.readAll(timeout: 15)
            #expect(answer.hasPrefix("HTTP/1.1 431"), "\(size): \(answer.prefix(200))")
            #expect(answer.contains("request.headers_too_large"))
        }
        try await expectUnchanged()
    }

    @Test func malformedHTTPGets400() async throws {
        let socket = try RawSocket(port: server.port)
        socket.send("THIS IS NOT HTTP\r\n\r\n")
        let answer = socket.readAll(timeout: 15)
        #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer.prefix(200))")
        #expect(answer.contains("request.invalid"))
        try await expectUnchanged()
    }

    /// A client that sends its request one byte at a time gets 408 after the request
    /// timeout (2 s here) and is disconnected, while other clients are served meanwhile.
    @Test func slowClientsAreDisconnected() async throws {
        let socket = try RawSocket(port: server.port)
        let started = Date()
        var answer = ""
        for byte in "GET /v1/app/users/alice/1 HTTP/1.1\r\nhost: slow\r\nx-dribble: ".map(String.init) {
            guard socket.send(byte) else { break }
            answer += socket.readAll(timeout: 0.2)
            if !answer.isEmpty { break }
            if Date().timeIntervalSince(started) > 1 { try await expectUnchanged() }
            if Date().timeIntervalSince(started) > 8 { break }
        }
        answer += socket.readAll(timeout: 1)
        let elapsed = Date().timeIntervalSince(started)
        #expect(answer.hasPrefix("HTTP/1.1 408"), "\(answer.prefix(200))")
        #expect(answer.contains("request.timeout"))
        #expect(elapsed >= 1.8 && elapsed < 6, "disconnected after \(elapsed) s")
        try await expectUnchanged()
    }

    /// A node on its own is a cluster of one: it serves its status and layout, takes
    /// quorum settings per request (a table's N=3 shrinks to the one node; an explicit
    /// n=3 does not) and refuses bad ones and bad request ids with stable codes.
    @Test func clusterRoutesAndQuorumParameters() async throws {
        let status = try await send(.GET, "/v1/_cluster")
        #expect(status.status == 200)
        let decoded = try JSONDecoder().decode(WireClusterStatus.self, from: Data(status.body))
        #expect(
            decoded.layoutVersion == 1 && decoded.members.count == 1 && decoded.members[0].state == "self")
        #expect(decoded.members[0].replicas == decoded.partitions)
        let layout = try JSONDecoder().decode(
            WireLayout.self, from: Data(try await send(.GET, "/v1/_cluster/layout").body))
        #expect(
            layout.partitions.count == decoded.partitions && layout.partitions.allSatisfy { $0.count == 1 })
        #expect(code(try await send(.GET, "/v1/_cluster/nodes")) == "request.not_found")
        #expect(code(try await send(.POST, "/v1/_cluster")) == "request.method_not_allowed")
        // Layout changes: nothing staged, bad changes, bad plans and bad limits are named errors
        // and leave the layout as it was.
        let plan = try JSONDecoder().decode(
            LayoutPlanReport.self, from: Data(try await send(.GET, "/v1/_cluster/plan").body))
        #expect(plan.id == nil && plan.currentVersion == 1)
        #expect(code(try await send(.POST, "/v1/_cluster/stage", "{")) == "request.invalid")
        #expect(
            code(try await send(.POST, "/v1/_cluster/stage", #"{"change":"join","node":"nobody"}"#))
                == "request.not_found")
        #expect(
            code(try await send(.POST, "/v1/_cluster/stage", #"{"change":"explode","node":"nobody"}"#))
                == "request.not_found")
        let me = decoded.members[0].nodeID
        #expect(
            code(try await send(.POST, "/v1/_cluster/stage", #"{"change":"explode","node":"\#(me)"}"#))
                == "request.invalid")
        #expect(
            code(try await send(.POST, "/v1/_cluster/stage", #"{"change":"leave","node":"\#(me)"}"#))
                == "request.invalid", "the last node cannot leave")
        #expect(
            code(
                try await send(
                    .POST, "/v1/_cluster/stage", #"{"change":"set-capacity","node":"\#(me)","capacity":0}"#))
                == "request.invalid")
        #expect(code(try await send(.POST, "/v1/_cluster/commit", #"{"plan":"1-0"}"#)) == "request.invalid")
        let staged = try await send(
            .POST, "/v1/_cluster/stage", #"{"change":"set-zone","node":"\#(me)","zone":"z1"}"#)
        #expect(staged.status == 200)
        #expect(code(try await send(.POST, "/v1/_cluster/commit", #"{"plan":"2-0"}"#)) == "layout.stale_plan")
        #expect(try await send(.DELETE, "/v1/_cluster/stage").status == 200)
        #expect(
            code(try await send(.POST, "/v1/_cluster/transfers", #"{"node_concurrency":0}"#))
                == "request.invalid")
        let transfers = try JSONDecoder().decode(
            TransfersReport.self,
            from: Data(try await send(.POST, "/v1/_cluster/transfers", #"{"paused":true}"#).body))
        #expect(transfers.paused && !transfers.inProgress)
        #expect(code(try await send(.PUT, "/v1/_cluster/transfers")) == "request.method_not_allowed")
        let unchanged = try JSONDecoder().decode(
            WireClusterStatus.self, from: Data(try await send(.GET, "/v1/_cluster").body))
        #expect(unchanged.layoutVersion == 1)

        #expect(try await send(.GET, "/v1/app/users/alice/1?r=1").status == 200)
        #expect(try await send(.GET, "/v1/app/users/alice/1", headers: ["x-kv-r": "1"]).status == 200)
        #expect(try await send(.PUT, "/v1/app/users/carol/1?w=1&dw=1", "x").status == 204)
        for bad in ["r=x", "w=-1", "n=17", "r=2&n=1", "pw=2&w=1"] {
            let answer = try await send(.GET, "/v1/app/users/alice/1?" + bad)
            #expect(answer.status == 400 && code(answer) == "request.invalid_quorum", "\(bad)")
        }
        let unavailable = try await send(.PUT, "/v1/app/users/carol/1?n=3", "x")
        #expect(unavailable.status == 503 && code(unavailable) == "quorum.unavailable")
        let longID = try await send(
            .PUT, "/v1/app/users/carol/1", "x",
            headers: ["x-kv-request-id": String(repeating: "i", count: 129)])
        #expect(longID.status == 400 && code(longID) == "request.invalid")
        // A retry with the same id is applied once.
        for _ in 0..<2 {
            #expect(
                try await send(.PUT, "/v1/app/users/dave/1", "y", headers: ["x-kv-request-id": "r-1"]).status
                    == 204)
        }
        #expect(try await send(.GET, "/v1/app/users/dave/1").status == 200)
        try await expectUnchanged()
    }

    @Test func connectionsOverTheLimitGet503() async throws {
        // Fill the server's 32 connections one at a time with requests under way (a head
        // begun, not finished: busy until the request timeout), each proven accepted by
        // its neighbour's answer. Busy connections cannot be closed to make room, so the
        // next one is refused. The suite's own setup holds one more, idle.
        var open: [RawSocket] = []
        var firstAnswerOverTheLimit = ""
        for _ in 0..<34 {
            let socket = try RawSocket(port: server.port)
            #expect(socket.send("GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\n"))
            let answer = socket.readSome(timeout: 5)
            guard answer.hasPrefix("HTTP/1.1 200") else {
                firstAnswerOverTheLimit = answer
                break
            }
            open.append(socket)
        }
        #expect((31...32).contains(open.count), "\(open.count) connections were accepted")
        #expect(firstAnswerOverTheLimit.hasPrefix("HTTP/1.1 503"), "\(firstAnswerOverTheLimit.prefix(200))")
        #expect(firstAnswerOverTheLimit.contains("server.too_many_connections"))
        open.removeAll()
        try await Task.sleep(for: .milliseconds(300))
        try await expectUnchanged()
    }

    /// Pipelined requests are answered in order, and a `Connection: close` request
    /// closes the connection right after its answer. These requests are answered through
    /// tasks (not the immediate path), where the next pipelined request starts before the
    /// previous answer has been accounted for.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let socket = try RawSocket(port: server.port)
        let started = Date()
        socket.send(
            "GET /v1/_namespaces HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/_tables/app/users HTTP/1.1\r\nhost: x\r\n\r\n"
                + "GET /v1/_namespaces HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        let answer = socket.readAll(timeout: 10)
        #expect(Date().timeIntervalSince(started) < 2, "the connection stayed open after Connection: close")
        let first = answer.range(of: #"{"namespaces":["app"]}"#)
        let second = answer.range(of: #""table":"users""#)
        let third = answer.range(of: #"{"namespaces":["app"]}"#, options: .backwards)
        #expect(first != nil && second != nil && third != nil && first != third, "\(answer)")
        if let first, let second, let third {
            #expect(first.lowerBound < second.lowerBound && second.lowerBound < third.lowerBound)
        }
    }

    /// Answers of writes started on the event loop (answered when their outcome comes
    /// back) and of reads answered there (a row held in memory, with and without a body)
    /// pipelined on one connection leave in order, and the answer to HEAD has no body
    /// even with requests queued behind it.
    @Test func pipelinedWritesAndFastReadsKeepTheirOrder() async throws {
        let socket = try RawSocket(port: server.port)
        let first = "/v1/app/users/pipelined/1"
        let second = "/v1/app/users/pipelined/2"
        socket.send(
            "PUT \(first) HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nfirst"
                + "GET \(first) HTTP/1.1\r\nhost: x\r\n\r\n" + "HEAD \(first) HTTP/1.1\r\nhost: x\r\n\r\n"
                + "PUT \(second) HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nsecond"
                + "GET \(second) HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        let answer = socket.readAll(timeout: 10)
        let statuses = answer.matches(of: /HTTP\/1\.1 (\d{3})/).map { String($0.output.1) }
        #expect(statuses == ["204", "200", "200", "204", "200"], "\(answer)")
        // The GET sees the first PUT and the HEAD adds no body (the next answer follows
        // its head at once); the last GET sees the second PUT.
        #expect(answer.contains("\r\n\r\nfirstHTTP/1.1 200 OK\r\n"), "\(answer)")
        #expect(answer.components(separatedBy: "first").count == 2, "\(answer)")
        #expect(answer.contains("\r\n\r\nHTTP/1.1 204"), "\(answer)")
        #expect(answer.hasSuffix("\r\n\r\nsecond"), "\(answer.suffix(200))")
    }

    /// A write started on the event loop answers a request that closes the connection
    /// before the connection closes, and a client gone before the answer costs nothing.
    @Test func startedWritesAnswerBeforeClosing() async throws {
        for index in 0..<20 {
            let socket = try RawSocket(port: server.port)
            socket.send(
                "PUT /v1/app/users/closing/\(index) HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            )
            let answer = socket.readAll(timeout: 5)
            #expect(answer.hasPrefix("HTTP/1.1 204"), "\(answer.prefix(120))")
        }
        for index in 0..<20 {
            let socket = try RawSocket(port: server.port)
            socket.send(
                "PUT /v1/app/users/gone/\(index) HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\ngone")
        }
        let socket = try RawSocket(port: server.port)
        socket.send("GET /v1/app/users/closing/19 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        let answer = socket.readAll(timeout: 5)
        #expect(answer.hasPrefix("HTTP/1.1 200") && answer.hasSuffix("ok"), "\(answer.prefix(200))")
    }

    @Test func http10StreamsEndByClosing() async throws {
        let socket = try RawSocket(port: server.port)
        socket.send("GET /v1/_scan/app/users?format=jsonl HTTP/1.0\r\n\r\n")
        let answer = socket.readAll(timeout: 15)
        #expect(answer.hasPrefix("HTTP/1.0 200"), "\(answer.prefix(200))")
        #expect(!answer.lowercased().contains("transfer-encoding"))
        #expect(answer.hasSuffix("}\n"), "\(answer.suffix(100))")
    }

    @Test func expectContinueIsHonoured() async throws {
        let socket = try RawSocket(port: server.port)
        socket.send(
            "PUT /v1/app/users/erin/5 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n"
        )
        let interim = socket.readSome(timeout: 10)
        #expect(interim.hasPrefix("HTTP/1.1 100 Continue"), "\(interim)")
        socket.send("hello")
        #expect(socket.readSome(timeout: 10).contains("204 No Content"))
    }
}
