import Foundation
import Glibc

/// Several `kv server` processes on 127.0.0.1 that form one static cluster, for tests
/// that kill, restart and partition real nodes.
public final class LocalCluster: @unchecked Sendable {
    /// The nodes, in the order of the member list.
    public private(set) var nodes: [ServerProcess]
    /// Each node's HTTP port.
    public let httpPorts: [Int]
    /// Each node's peer port.
    public let peerPorts: [Int]
    /// Flags every node gets.
    public let arguments: [String]
    /// Flags of each node alone.
    public let perNodeArguments: [[String]]
    /// The token polling sends, when the nodes require one (`KV_ADMIN_TOKEN`).
    public let adminToken: String?
    /// The CA polling trusts, when the nodes speak TLS (`KV_TLS_CA_FILE`).
    public let caFile: String?
    /// The environment every node gets.
    public let environment: [String: String]

    /// Starts `count` nodes with a static member list and waits until they formed a
    /// cluster in which every node sees every other. `ports` (HTTP ports, then peer
    /// ports) are taken free unless given; `perNodeArguments[i]` go to node `i` only.
    public init(
        count: Int, arguments: [String] = [], environment: [String: String] = [:], ports: [Int]? = nil,
        perNodeArguments: [[String]] = []
    ) throws {
        let ports = try ports ?? FreePorts.take(2 * count)
        httpPorts = Array(ports.prefix(count))
        peerPorts = Array(ports.suffix(count))
        self.arguments = arguments
        self.perNodeArguments = perNodeArguments
        adminToken = environment["KV_ADMIN_TOKEN"]
        caFile = environment["KV_TLS_CA_FILE"]
        self.environment = environment
        nodes = []
        for index in 0..<count {
            nodes.append(
                try ServerProcess(
                    arguments: nodeArguments(index), environment: environment, port: httpPorts[index]))
        }
        try waitUntilFormed()
    }

    /// The members' HTTP addresses, comma-separated.
    public var memberList: String { httpPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    func nodeArguments(_ index: Int) -> [String] {
        ["--peer-port", String(peerPorts[index]), "--peers", memberList] + arguments
            + (index < perNodeArguments.count ? perNodeArguments[index] : [])
    }

    /// The base URL of node `index`.
    public func url(_ index: Int) -> String {
        "\(caFile == nil ? "http" : "https")://127.0.0.1:\(httpPorts[index])"
    }

    /// Restarts node `index` on its data and ports.
    public func restart(_ index: Int) throws {
        try nodes[index].start(port: httpPorts[index])
    }

    /// Waits (up to 30 s) until every running node reports a layout that places every
    /// node.
    public func waitUntilFormed() throws {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            var formed = true
            for (index, node) in nodes.enumerated() where node.isRunning {
                guard
                    let status = try? HTTPGet.json(
                        url(index) + "/v1/_cluster", token: adminToken, caFile: caFile),
                    let version = status["layout_version"] as? Int, version > 0,
                    let members = status["members"] as? [[String: Any]],
                    members.filter({ ($0["state"] as? String) != "joining" }).count >= nodes.count
                else {
                    formed = false
                    break
                }
            }
            if formed { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw CrashTestError("the cluster did not form within 30 s")
    }
}

/// Ports that were free a moment ago: bound to port 0 together, then released.
public enum FreePorts {
    public static func take(_ count: Int) throws -> [Int] {
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        var ports: [Int] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw CrashTestError("socket() failed") }
            sockets.append(fd)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else { throw CrashTestError("bind() failed") }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            ports.append(Int(UInt16(bigEndian: address.sin_port)))
        }
        return ports
    }
}

/// A blocking HTTP GET for test polling, through curl.
public enum HTTPGet {
    /// The JSON object at `url`.
    public static func json(_ url: String, token: String? = nil, caFile: String? = nil) throws -> [String:
        Any]
    {
        let (_, data) = try curl(
            [url] + (token.map { ["-H", "Authorization: Bearer \($0)"] } ?? [])
                + (caFile.map { ["--cacert", $0] } ?? []), timeout: 2)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CrashTestError("\(url) did not answer a JSON object")
        }
        return object
    }

    /// Runs `curl -s` with `arguments`; returns its exit status and standard output.
    public static func curl(_ arguments: [String], timeout: Int = 5) throws -> (status: Int32, output: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "--max-time", String(timeout)] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data)
    }
}

/// A `kv dev` process (a whole local cluster) on a free base port, for tests that run
/// what the README runs.
public final class DevCluster: @unchecked Sendable {
    /// The first node's HTTP port; node i listens on `basePort + i`.
    public let basePort: Int
    /// Where the nodes keep their data.
    public let dataDirectory: String
    private let child: ChildProcess

    /// Starts `kv dev` with `arguments` and waits until it says the cluster is ready.
    public init(nodes: Int = 3, arguments: [String] = []) throws {
        basePort = try Self.freeBase(nodes: nodes)
        dataDirectory =
            FileManager.default.temporaryDirectory.appendingPathComponent("kv-dev-test-\(UUID().uuidString)")
            .path
        child = try ChildProcess(
            executable: try TestBinaries.path(of: "kv", override: "KV_BINARY"),
            arguments: [
                "dev", "--nodes", String(nodes), "--port", String(basePort), "--data", dataDirectory,
                "--engine",
                "rocksdb",
            ] + arguments,
            standardErrorPath: dataDirectory + ".log")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if String(decoding: child.outputSoFar(), as: UTF8.self).contains("kv dev cluster") { return }
            if child.reachedEndOfOutput() { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        child.kill()
        _ = child.wait()
        let log = (try? String(contentsOfFile: dataDirectory + ".log", encoding: .utf8)) ?? ""
        throw CrashTestError(
            "kv dev did not get ready: \(String(decoding: child.outputSoFar(), as: UTF8.self)) \(log)")
    }

    /// What `kv dev` printed so far.
    public var output: String { String(decoding: child.outputSoFar(), as: UTF8.self) }

    /// Stops the cluster as Ctrl-C would and returns how `kv dev` exited.
    @discardableResult
    public func stop() -> ChildProcess.Status {
        _ = Glibc.kill(child.pid, SIGINT)
        let status = child.wait()
        // The process is gone, but its last lines may still be in the pipe, unread: a
        // caller that checks what it printed last must see them.
        let deadline = Date().addingTimeInterval(5)
        while !child.reachedEndOfOutput() && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        return status
    }

    /// A base port whose `nodes` ports, the peer ports 1000 above, the minikeyvalue ports
    /// 2000 above and the RESP ports 3000 above are free.
    static func freeBase(nodes: Int) throws -> Int {
        for _ in 0..<100 {
            let base = Int.random(in: 20_000...50_000)
            let offsets = [0, 1000, 2000, 3000]
            let ports: [Int] = (0..<nodes).flatMap { node in offsets.map { base + $0 + node } }
            if ports.allSatisfy(FreePorts.isFree) { return base }
        }
        throw CrashTestError("found no free range of ports")
    }

    deinit {
        if !child.reachedEndOfOutput() {
            _ = Glibc.kill(child.pid, SIGINT)
            _ = child.wait()
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: dataDirectory + ".log")
    }
}

extension FreePorts {
    /// Whether `port` on 127.0.0.1 can be bound right now.
    public static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}

/// Runs blocking work (starting processes, polling them, waiting for them) on a thread
/// of its own, so it does not hold one of the few threads that every async test shares.
public func offCooperativePool<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws
    -> Result
{
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Swift.Result { try body() })
        }.start()
    }
}
