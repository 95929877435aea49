import Foundation
import KVTestSupport
import Testing

/// The minikeyvalue listener over real HTTP: a client script written the way
/// minikeyvalue's users write theirs (Python `requests`) runs against a node and against
/// a 3-node cluster.
@Suite("minikeyvalue dialect", .serialized)
struct MinikeyvalueTests {
    @Test("a minikeyvalue client session against one node", .timeLimit(.minutes(3)))
    func clientSessionOnOneNode() async throws {
        let port = try FreePorts.take(1)[0]
        let server = try ServerProcess(arguments: ["--minikeyvalue-port", String(port)])
        defer { _ = server.terminate() }
        let python = try PythonEnvironment.python(with: ["requests"])
        let status = try await offCooperativePool {
            try Files.status(
                python, [PythonEnvironment.script("minikeyvalue_client.py"), "http://127.0.0.1:\(port)"])
        }
        #expect(status == 0, "\(status) checks of the minikeyvalue session failed (see the output)")
    }

    @Test("the same session through a 3-node cluster, each node with its listener", .timeLimit(.minutes(3)))
    func clientSessionThroughCluster() async throws {
        let ports = try FreePorts.take(3)
        let cluster = try await offCooperativePool {
            try LocalCluster(
                count: 3, arguments: ["--partitions", "16"],
                perNodeArguments: ports.map { ["--minikeyvalue-port", String($0)] })
        }
        let python = try PythonEnvironment.python(with: ["requests"])
        let status = try await offCooperativePool {
            try Files.status(
                python, [PythonEnvironment.script("minikeyvalue_client.py"), "http://127.0.0.1:\(ports[1])"])
        }
        #expect(status == 0, "\(status) checks of the minikeyvalue session failed (see the output)")
        // A key written through one node's listener reads through another's.
        #expect(
            try Files.curlStatus(["-X", "PUT", "-d", "shared", "http://127.0.0.1:\(ports[0])/shared/key"])
                == 201)
        let (_, body) = try HTTPGet.curl(["-L", "http://127.0.0.1:\(ports[2])/shared/key"])
        #expect(String(decoding: body, as: UTF8.self) == "shared")
        _ = cluster
    }

    @Test("with access control on, the listener asks for the same tokens as the HTTP API")
    func tokensAreRequired() async throws {
        let port = try FreePorts.take(1)[0]
        let token = "minikeyvalue-test-admin-token-0123456789"
        let server = try ServerProcess(
            arguments: ["--minikeyvalue-port", String(port)], environment: ["KV_ADMIN_TOKEN": token])
        defer { _ = server.terminate() }
        let url = "http://127.0.0.1:\(port)/guarded"
        #expect(try Files.curlStatus(["-X", "PUT", "-d", "secret", url]) == 401)
        #expect(try Files.curlStatus(["-H", "Authorization: Bearer wrong", url]) == 401)
        #expect(
            try Files.curlStatus(["-X", "PUT", "-d", "secret", "-H", "Authorization: Bearer \(token)", url])
                == 201)
        #expect(try Files.curlStatus([url]) == 401)
        let (_, body) = try HTTPGet.curl(["-H", "Authorization: Bearer \(token)", url])
        #expect(String(decoding: body, as: UTF8.self) == "secret")
    }
}
