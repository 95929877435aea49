import ArgumentParser
import Foundation
import KVClient
import KVCore
import KVNode

/// `kv backup`: a consistent backup of a running node, taken while it serves.
struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Take a consistent backup of a running node, on that node's machine.",
        discussion: """
            The node writes a checkpoint of its engine (rows, hints, its cluster metadata \
            and identity) as of one instant, and a manifest, to a new directory under its \
            backup directory (kv server --backup-dir, default DATA/backups), and keeps \
            serving meanwhile. Copy that directory off the machine; kv restore brings a node \
            back from it. For a cluster, back up every node (docs/backup.md says what a \
            restore of the whole cluster guarantees). The cluster secret is not in a backup.
            """)

    @OptionGroup var options: ClientOptions
    @Option(help: "The backup's name: letters, digits, '-', '_', '.' (default backup-<time>-<node>).")
    var name: String?

    func run() async throws {
        try await options.withService { service in
            let report = try await service.backup(name: name)
            if options.json {
                options.printJSON(
                    WireBackup(
                        nodeID: report.nodeID.description, path: report.path,
                        takenAtMilliseconds: report.takenAtMilliseconds, layoutVersion: report.layoutVersion))
            } else {
                print(
                    "node \(report.nodeID): backup at \(report.path) (layout version \(report.layoutVersion))"
                )
            }
        }
    }
}

/// `kv restore`: a node's data directory made from a backup, before the node starts.
struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Make a node's data directory from a backup (the node must not be running).",
        discussion: """
            Copies the backup's engine checkpoint into DATA, which must not hold a store. \
            Then start the node on DATA as usual: it comes back with its node id, its \
            cluster metadata and every row the backup holds, and its peers learn its new \
            addresses when it announces itself. To move a whole cluster to new machines, \
            restore every node's backup and start them with --peers listing the new \
            addresses, or --join one of them.
            """)

    @Option(help: "The backup directory (what kv backup printed, copied here).") var from: String
    @Option(name: .customLong("data"), help: "The data directory to restore into.") var dataDirectory: String

    func run() throws {
        let files = FileManager.default
        let manifest = from + "/" + ClusterNode.manifestName
        guard let text = try? String(contentsOfFile: manifest, encoding: .utf8),
            let fields = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let node = fields["node_id"] as? String
        else {
            throw ValidationError(
                "\(from) is not a complete backup: it has no readable \(ClusterNode.manifestName)")
        }
        let engine = from + "/" + ClusterNode.engineDirectory
        guard files.fileExists(atPath: engine) else {
            throw ValidationError("\(from) holds no engine checkpoint (\(ClusterNode.engineDirectory))")
        }
        let target = dataDirectory + "/rocksdb"
        guard !files.fileExists(atPath: target) else {
            throw ValidationError(
                "\(dataDirectory) holds a store already; restore into a new data directory (or remove \(target))"
            )
        }
        try files.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        do {
            try files.copyItem(atPath: engine, toPath: target)
        } catch {
            try? files.removeItem(atPath: target)
            throw ValidationError("cannot copy the backup into \(target): \(error)")
        }
        print(
            """
            restored node \(node) into \(dataDirectory) (backup taken at \(fields["taken_at_ms"] ?? "?") ms, \
            layout version \(fields["layout_version"] ?? "?"))
            start it with: kv server --data \(dataDirectory) … (and the cluster's secret)
            """)
    }
}
