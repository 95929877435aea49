import Foundation
import KVTestSupport
import Testing

/// CSE138's key-value-store API over real HTTP: a cluster started the way that
/// assignment starts its nodes (ADDRESS, VIEW and REPL_FACTOR in the environment) and a
/// Python client written the way its test scripts are.
@Suite("CSE138 dialect", .serialized)
struct CSE138DialectTests {
    /// A node started with the assignment's environment variables.
    static func node(_ address: String, view: [String], peerPort: Int) throws -> ServerProcess {
        let port = Int(address.split(separator: ":")[1])!
        return try ServerProcess(
            arguments: ["--peer-port", String(peerPort), "--partitions", "32"],
            environment: ["ADDRESS": address, "VIEW": view.joined(separator: ","), "REPL_FACTOR": "2"],
            port: port)
    }

    @Test("a CSE138 client session over four nodes, then a view change to five", .timeLimit(.minutes(5)))
    func clientSession() async throws {
        let ports = try FreePorts.take(10)
        let addresses = ports.prefix(5).map { "127.0.0.1:\($0)" }
        let view = Array(addresses.prefix(4))
        var nodes: [ServerProcess] = []
        for index in 0..<4 {
            let address = addresses[index]
            let peerPort = ports[5 + index]
            nodes.append(
                try await offCooperativePool { try Self.node(address, view: view, peerPort: peerPort) })
        }
        // The new node knows the cluster through its VIEW, as the assignment starts one.
        let newAddress = addresses[4]
        let newPeerPort = ports[9]
        nodes.append(
            try await offCooperativePool { try Self.node(newAddress, view: addresses, peerPort: newPeerPort) }
        )
        try await Self.waitForMembers(5, at: view[0])
        let python = try PythonEnvironment.python(with: ["requests"])
        let status = try await offCooperativePool {
            try Files.status(
                python,
                [PythonEnvironment.script("cse138_client.py"), view.joined(separator: ","), newAddress])
        }
        #expect(status == 0, "\(status) checks of the CSE138 session failed (see the output)")
        for node in nodes { _ = node.terminate() }
    }

    @Test("bad input gets the assignment's errors, never a crash")
    func badInput() async throws {
        let server = try ServerProcess()
        defer { _ = server.terminate() }
        let base = "http://127.0.0.1:\(server.port)/kv-store"
        func answer(_ arguments: [String]) throws -> (Int32, String) {
            let (code, body) = try HTTPGet.curl(["-w", "\n%{http_code}"] + arguments)
            let text = String(decoding: body, as: UTF8.self)
            let status = Int32(text.split(separator: "\n").last ?? "") ?? -1
            _ = code
            return (status, String(text.split(separator: "\n").dropLast().joined(separator: "\n")))
        }
        #expect(try answer(["-X", "PUT", "-d", "[1,2]", "\(base)/keys/a"]).0 == 400)
        #expect(try answer(["-X", "PUT", "-d", "{\"value\": 5}", "\(base)/keys/a"]).0 == 400)
        #expect(
            try answer(["-X", "PUT", "-d", "{\"value\": \"v\", \"causal-context\": \"x\"}", "\(base)/keys/a"])
                .0 == 400)
        let (emptyKey, body) = try answer(["-X", "PUT", "-d", "{\"value\": \"v\"}", "\(base)/keys/"])
        #expect(emptyKey == 400 && body.contains("Key is missing"), "\(body)")
        #expect(try answer(["\(base)/shards/abc"]).0 == 404)
        #expect(try answer(["\(base)/nothing"]).0 == 404)
        #expect(try answer(["-X", "PUT", "-d", "{\"view\": []}", "\(base)/view-change"]).0 == 400)
        #expect(
            try answer(["-X", "PUT", "-d", "{\"view\": [\"10.9.9.9:1\"]}", "\(base)/view-change"]).0 == 400)
        // Random bytes as a body.
        let noise = (0..<2000).map { _ in UInt8.random(in: 0...255) }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cse138-noise-\(UUID())")
            .path
        #expect(FileManager.default.createFile(atPath: file, contents: Data(noise)))
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(try answer(["-X", "PUT", "--data-binary", "@\(file)", "\(base)/keys/n"]).0 == 400)
        // The node still serves.
        #expect(try answer(["-X", "PUT", "-d", "{\"value\": \"v\"}", "\(base)/keys/after"]).0 == 201)
        #expect(try answer(["\(base)/keys/after"]).1.contains("\"value\":\"v\""))
    }

    static func waitForMembers(_ count: Int, at address: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let status = try? HTTPGet.json("http://\(address)/v1/_cluster"),
                let members = status["members"] as? [[String: Any]], members.count >= count,
                let version = status["layout_version"] as? Int, version > 0
            {
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("the cluster at \(address) did not see \(count) members within 60 s")
    }
}
