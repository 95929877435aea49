import ArgumentParser
import Foundation
import KVClient
import KVCore

/// `kv auth`: access tokens of a cluster with access control on.
struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Manage the access tokens of a cluster.",
        subcommands: [TokenCommand.self])

    struct TokenCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token",
            abstract: "Create, list and revoke access tokens (needs a token with *:admin).",
            subcommands: [Create.self, List.self, Revoke.self])
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it (the only time it is shown).",
            discussion: """
                Grants are SCOPE:LEVEL items, comma-separated: SCOPE is a namespace or * \
                (every namespace and the cluster), LEVEL is read, write (includes read) or \
                admin (includes write; creates and drops tables, or with * administers the \
                cluster). Example: kv auth token create --name reports --grant 'orders:read,audit:write'
                """)

        @OptionGroup var options: ClientOptions
        @Option(help: "Who or what holds the token.") var name: String
        @Option(help: "Grants, such as orders:write,*:read.") var grant: String
        @Option(help: "Seconds until the token expires (default never).") var expiresIn: Int64?

        func run() async throws {
            try await options.withService { service in
                let request = AccessTokenRequest(
                    name: name, grants: try AccessGrants(parsing: grant), expiresInSeconds: expiresIn)
                let created = try await service.createAccessToken(request)
                if options.json {
                    options.printJSON(WireAccessToken(created.record, token: created.token))
                } else {
                    print(created.token)
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every token (never their text).")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                let records = try await service.accessTokens()
                if options.json {
                    options.printJSON(["tokens": records.map { WireAccessToken($0) }])
                    return
                }
                for record in records {
                    let state =
                        record.revoked
                        ? "revoked"
                        : record.expiresAtMilliseconds.map { "expires \(Self.time($0))" } ?? "active"
                    print("\(record.id)  \(record.name)  \(record.grants)  \(state)")
                }
            }
        }

        static func time(_ milliseconds: Int64) -> String {
            Date(timeIntervalSince1970: Double(milliseconds) / 1000).ISO8601Format()
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token on every node.")

        @OptionGroup var options: ClientOptions
        @Argument(help: "The token's id (16 hex digits, as kv auth token list shows).") var id: String

        func run() async throws {
            try await options.withService { service in
                let record = try await service.revokeAccessToken(id: id)
                if options.json {
                    options.printJSON(WireAccessToken(record))
                } else {
                    print("revoked \(record.id) (\(record.name))")
                }
            }
        }
    }
}
