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
        ProcessInfo.processInfo.environment["KV_TEST_DATABASE_DIR"].map { $0 + "/" + kind.rawValue.lowercased() }
    }

    struct MissingServer: Error, CustomStringConvertible {
        var description: String
    }
}
