import ArgumentParser
import KVNode

/// The `kv` command: one binary for the server and its clients.
@main
struct KV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "A Dynamo-style distributed key-value store.",
        discussion: """
            Start a node with `kv server`, then talk to it with the client commands \
            (or with curl: see docs/http-api.md). Client commands take --url (default \
            http://127.0.0.1:7700, or $KV_URL) and --json for machine-readable output; \
            a failure exits non-zero and prints the error code.

            Rows live in tables of a namespace, written NAMESPACE/TABLE, and are \
            addressed by their key parts in order, one argument per part.
            """,
        version: ClusterNode.version,
        subcommands: [
            ServerCommand.self, PutCommand.self, GetCommand.self, DeleteCommand.self, IncrementCommand.self,
            ScanCommand.self,
            BatchCommand.self, TableCommand.self, NodeCommand.self, ClusterCommand.self, DevCommand.self,
            BenchCommand.self, BackupCommand.self, RestoreCommand.self, AuthCommand.self,
            TLSCommand.self,
        ]
    )
}
