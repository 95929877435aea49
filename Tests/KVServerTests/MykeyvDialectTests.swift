import Foundation
import KVTestSupport
import Testing

/// Mykeyv's protocol over real sockets: a client written the way Mykeyv's Perl client
/// worked (length-prefixed JSON frames, request ids, answers in any order) against two
/// nodes of a 3-node cluster.
@Suite("Mykeyv dialect", .serialized)
struct MykeyvDialectTests {
    @Test("a Mykeyv client session through two nodes of a cluster", .timeLimit(.minutes(3)))
    func clientSession() async throws {
        let ports = try FreePorts.take(3)
        let cluster = try await offCooperativePool {
            try LocalCluster(
                count: 3, arguments: ["--partitions", "16"],
                perNodeArguments: ports.map { ["--mykeyv-port", String($0)] })
        }
        let status = try await offCooperativePool {
            try Files.status(
                "/usr/bin/python3",
                [
                    PythonEnvironment.script("mykeyv_client.py"), "127.0.0.1:\(ports[0])",
                    "127.0.0.1:\(ports[1])",
                ])
        }
        #expect(status == 0, "\(status) checks of the Mykeyv session failed (see the output)")
        // Nothing the session sent was run as code.
        #expect(!FileManager.default.fileExists(atPath: "/tmp/pwned"))
        _ = cluster
    }

    @Test("with access control on, a connection proves a token with auth first")
    func tokensAreRequired() async throws {
        let port = try FreePorts.take(1)[0]
        let token = "mykeyv-test-admin-token-0123456789abcdef"
        let server = try ServerProcess(
            arguments: ["--mykeyv-port", String(port)], environment: ["KV_ADMIN_TOKEN": token])
        defer { _ = server.terminate() }
        func session(_ messages: [String]) throws -> [String] {
            // One connection, each message framed, the answers' payloads back.
            var input = Data()
            for message in messages {
                let payload = Data(message.utf8)
                input.append(0)
                withUnsafeBytes(of: UInt32(payload.count).littleEndian) { input.append(contentsOf: $0) }
                input.append(payload)
            }
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("mykeyv-\(UUID())").path
            #expect(FileManager.default.createFile(atPath: file, contents: input))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let output = try Files.run(
                "/usr/bin/python3",
                [
                    "-c",
                    """
                    import socket, struct, sys
                    s = socket.create_connection(("127.0.0.1", \(port)), timeout=10)
                    s.sendall(open(sys.argv[1], "rb").read())
                    data = b""
                    answers = []
                    while len(answers) < \(messages.count):
                        chunk = s.recv(65536)
                        if not chunk: break
                        data += chunk
                        while len(data) >= 5 and len(data) >= 5 + struct.unpack("<I", data[1:5])[0]:
                            n = struct.unpack("<I", data[1:5])[0]
                            answers.append(data[5:5 + n].decode())
                            data = data[5 + n:]
                    print("\\n".join(answers))
                    """,
                    file,
                ])
            return output.split(separator: "\n").map(String.init)
        }
        let refused = try session([#"{"command": "get", "key": "k", "request_id": 1}"#])
        #expect(refused.first?.contains("auth.token_required") == true, "\(refused)")
        let wrong = try session([#"{"command": "auth", "token": "nope", "request_id": 1}"#])
        #expect(wrong.first?.contains("auth_error") == true, "\(wrong)")
        let allowed = try session([
            #"{"command": "auth", "token": "\#(token)", "request_id": 1}"#,
            #"{"command": "set", "key": "k", "data": [1], "request_id": 2}"#,
        ])
        #expect(allowed.count == 2 && allowed.allSatisfy { $0.contains("_ok") }, "\(allowed)")
    }
}

extension MykeyvDialectTests {
    @Test("random bytes, frames and JSON on the Mykeyv port never crash the node or stop it serving")
    func fuzzedInput() async throws {
        let port = try FreePorts.take(1)[0]
        let server = try ServerProcess(arguments: ["--mykeyv-port", String(port)])
        defer { _ = server.terminate() }
        let output = try Files.run(
            "/usr/bin/python3",
            [
                "-c",
                """
                import json, os, random, socket, struct
                random.seed(20261206)
                def send(data):
                    s = socket.create_connection(("127.0.0.1", \(port)), timeout=10)
                    try:
                        s.sendall(data)
                        s.shutdown(socket.SHUT_WR)
                        while s.recv(65536):
                            pass
                    except OSError:
                        pass
                    s.close()
                pieces = [b"{", b"}", b"[", b"\\"command\\"", b":", b"\\"set\\"", b"\\"key\\"", b"null", b"1e999",
                          b"\\"\\\\ud800\\"", b",", b"\\x00", b"\\xff"]
                for round in range(300):
                    kind = round % 3
                    if kind == 0:
                        data = os.urandom(random.randint(0, 2000))
                    elif kind == 1:
                        payload = b"".join(random.choice(pieces) for _ in range(random.randint(0, 40)))
                        data = struct.pack("<BI", 0, len(payload)) + payload
                    else:
                        message = {"command": random.choice(["set", "get", "delete", "list", "rehash", "apply", "x"]),
                                   "key": random.choice(["", "k", "\\u0000", "k" * 5000]),
                                   "data": random.choice([None, 1, "s", [1, {"a": []}], {"deep": [[[[]]]]}]),
                                   "request_id": random.choice([None, 1, "id", [1], {"a": 1}])}
                        payload = json.dumps(message).encode()
                        cut = random.randint(0, len(payload))
                        data = struct.pack("<BI", 0, len(payload)) + payload[:cut] if round % 2 else \\
                            struct.pack("<BI", 0, len(payload)) + payload
                    send(data)
                s = socket.create_connection(("127.0.0.1", \(port)), timeout=10)
                payload = json.dumps({"command": "set", "key": "after", "data": 1, "request_id": 1}).encode()
                s.sendall(struct.pack("<BI", 0, len(payload)) + payload)
                header = s.recv(5)
                print(s.recv(struct.unpack("<I", header[1:5])[0]).decode())
                """,
            ])
        #expect(output.contains("set_ok"), "\(output)")
        #expect(server.isRunning)
    }
}
