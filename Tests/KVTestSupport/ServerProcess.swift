import Foundation
import Glibc

/// A `kv server` child process on 127.0.0.1 with an ephemeral port and its own data
/// directory, for tests that need a real server: kill -9 it, restart it on the same data.
public final class ServerProcess: @unchecked Sendable {
    /// The data directory (kept across restarts, removed by ``removeData()``).
    public let dataDirectory: String
    /// Extra `kv server` flags.
    public let extraArguments: [String]
    /// Extra environment variables.
    public let environment: [String: String]
    /// The cluster secret every test server gets (as `KV_CLUSTER_SECRET`) unless its
    /// environment names another, so that servers a test starts separately can form or
    /// join one cluster. An empty `KV_CLUSTER_SECRET` leaves the node to its own.
    public static let testClusterSecret = "test-cluster-secret-not-for-production"
    /// Where the server's log goes.
    public let logPath: String
    /// The running child.
    public private(set) var child: ChildProcess?
    /// The port of the running server.
    public private(set) var port: Int = 0

    /// Starts a server (fresh data directory unless one is given) on `port` (0 picks one).
    public init(
        arguments: [String] = [], environment: [String: String] = [:], dataDirectory: String? = nil,
        port: Int = 0
    )
        throws
    {
        let directory =
            dataDirectory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent(
                "kv-server-test-\(UUID().uuidString)"
            ).path
        self.dataDirectory = directory
        self.extraArguments = arguments
        self.environment = environment.merging(["KV_CLUSTER_SECRET": Self.testClusterSecret]) { given, _ in
            given
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        logPath = directory + ".log"
        try start(port: port)
    }

    /// The server's base URL (`https` when the environment turns TLS on).
    public var url: String { "\(scheme)://127.0.0.1:\(port)" }

    /// `https` when the server is given TLS files through its environment, else `http`.
    public var scheme: String { environment["KV_TLS_CERT_FILE"] == nil ? "http" : "https" }

    /// Starts (or restarts) the server and waits until it prints its URL; port 0 picks a
    /// free one.
    public func start(port requestedPort: Int = 0) throws {
        let binary = try TestBinaries.path(of: "kv", override: "KV_BINARY")
        let process = try ChildProcess(
            executable: binary,
            arguments: [
                "server", "--port", String(requestedPort), "--data", dataDirectory, "--log-level", "warning",
            ]
                + extraArguments,
            standardErrorPath: logPath, environment: environment)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let output = String(decoding: process.outputSoFar(), as: UTF8.self)
            if let range = output.range(of: "serving \(scheme)://127.0.0.1:") {
                let digits = output[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits),
                    output[range.upperBound...].dropFirst(digits.count).first?.isNewline == true
                {
                    self.port = port
                    child = process
                    return
                }
            }
            if process.reachedEndOfOutput() {
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw CrashTestError("kv server exited during startup: \(output) \(log.suffix(2000))")
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.kill()
        _ = process.wait()
        throw CrashTestError("kv server did not start within 30 s")
    }

    /// Kills the server with SIGKILL and reaps it.
    public func kill() {
        guard let child else { return }
        child.kill()
        _ = child.wait()
        self.child = nil
    }

    /// Stops the server with SIGTERM and returns how it exited.
    @discardableResult
    public func terminate() -> ChildProcess.Status? {
        guard let child else { return nil }
        _ = Glibc.kill(child.pid, SIGTERM)
        let status = child.wait()
        self.child = nil
        return status
    }

    /// Whether the process is still running.
    public var isRunning: Bool {
        guard let child else { return false }
        return Glibc.kill(child.pid, 0) == 0 && !child.reachedEndOfOutput()
    }

    /// Removes the data directory and log.
    public func removeData() {
        // Set to look at a failed test's data and logs afterwards.
        guard ProcessInfo.processInfo.environment["KV_KEEP_TEST_DATA"] == nil else { return }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    deinit {
        kill()
        removeData()
    }
}
