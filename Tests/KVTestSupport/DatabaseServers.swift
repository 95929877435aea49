import Foundation

/// The PostgreSQL, MariaDB and Redis servers that `scripts/test.sh` starts for the run
/// (`scripts/lib/database-servers.sh`) and announces through the environment.
public enum DatabaseServers {
    /// A database server kind.
    public enum Kind: String, Sendable, CaseIterable {
        case postgres = "POSTGRES"
        case mariadb = "MARIADB"
        case redis = "REDIS"
    }

    /// The server's URL. A missing server is a failure with directions, not a skip: the
    /// engine's tests are part of the suite.
    public static func url(_ kind: Kind) throws -> String {
        let name = "KV_TEST_\(kind.rawValue)_URL"
        guard let url = ProcessInfo.processInfo.environment[name], !url.isEmpty else {
            throw MissingServer(
                description:
                    "\(name) is not set: run ./scripts/test.sh, or `source scripts/lib/system-packages.sh; source scripts/lib/database-servers.sh; start_database_servers` before `swift test`"
            )
        }
        return url
    }

    /// The data directory of the test run's server (to restart it, or to read its files).
    public static func directory(_ kind: Kind) -> String? {
        ProcessInfo.processInfo.environment["KV_TEST_DATABASE_DIR"].map {
            $0 + "/" + kind.rawValue.lowercased()
        }
    }

    /// Kills the test run's server of `kind` with SIGKILL and starts it again on the same
    /// port and data (`restart_database_server` of the servers script); returns once it
    /// answers.
    public static func restart(_ kind: Kind, filePath: String = #filePath) throws {
        let root = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        // The project's own spawner, not Foundation's Process: the restarted server
        // outlives the shell, and only the shell's own exit is waited for.
        let child = try ChildProcess(
            executable: "/usr/bin/timeout",
            arguments: [
                "120", "/bin/bash", "-c",
                "source '\(root)/scripts/lib/database-servers.sh' && restart_database_server \(kind.rawValue.lowercased()) >/dev/null",
            ])
        let status = child.wait()
        guard status.exitedNormally, status.code == 0 else {
            throw MissingServer(description: "restarting \(kind) failed: \(status)")
        }
    }

    struct MissingServer: Error, CustomStringConvertible {
        var description: String
    }
}
