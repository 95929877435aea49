import Foundation
import KVClient
import KVCore
import KVTestSupport
import NIOConcurrencyHelpers
import NIOHTTP1
import Testing

/// Backups of real nodes taken under write load, the data wiped, and the nodes restored
/// from the backups: every write acknowledged before the backup started must be back.
@Suite("Backup and restore", .serialized)
struct BackupRestoreTests {
    static let table = try! TableName(namespace: "app", table: "b")

    static func key(_ index: Int) -> RowKey { RowKey(table: table, parts: [.string("w\(index)")]) }

    /// Writes rows `w0`, `w1`, … through `urls` in turn until stopped, recording each
    /// acknowledged index.
    final class Writer: @unchecked Sendable {
        let acknowledged = NIOLockedValueBox<Set<Int>>([])
        private let stopped = NIOLockedValueBox(false)
        private var task: Task<Void, Never>?

        init(urls: [String]) {
            task = Task { [acknowledged, stopped] in
                var clients: [HTTPKeyValueService] = []
                for url in urls {
                    if let client = try? await HTTPKeyValueService(url: url) { clients.append(client) }
                }
                var index = 0
                while !stopped.withLockedValue({ $0 }) {
                    let client = clients[index % clients.count]
                    let value = RowValue(bytes: Array("v\(index)".utf8), contentType: "text/plain")
                    if (try? await client.put(
                        BackupRestoreTests.key(index), value: value, options: WriteOptions()))
                        != nil
                    {
                        acknowledged.withLockedValue { _ = $0.insert(index) }
                    }
                    index += 1
                }
                for client in clients { await client.close() }
            }
        }

        func stop() async {
            stopped.withLockedValue { $0 = true }
            await task?.value
        }
    }

    /// Runs `kv restore` and expects it to succeed.
    static func restore(from backup: String, into data: String) throws {
        let binary = try TestBinaries.path(of: "kv", override: "KV_BINARY")
        let errors = data + ".restore.err"
        let child = try ChildProcess(
            executable: binary, arguments: ["restore", "--from", backup, "--data", data],
            standardErrorPath: errors)
        let output = String(decoding: child.finishReading(), as: UTF8.self)
        let status = child.wait()
        let message = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        #expect(status.exitedNormally && status.code == 0, "kv restore: \(message)")
        #expect(output.contains("restored node"), "\(output)")
    }

    /// Moves a backup off the node's data directory, as an operator copies it off the machine.
    static func keep(_ path: String) throws -> String {
        let kept = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-backup-\(UUID().uuidString)"
        ).path
        try FileManager.default.moveItem(atPath: path, toPath: kept)
        return kept
    }

    /// Every row in `indexes` reads back with its value through `client`.
    static func expectRows(_ indexes: Set<Int>, through client: HTTPKeyValueService) async throws {
        var missing: [Int] = []
        for index in indexes.sorted() {
            let read = try await client.get(key(index))
            let values = read.siblings.compactMap {
                $0.value.map { String(decoding: $0.bytes, as: UTF8.self) }
            }
            if !values.contains("v\(index)") { missing.append(index) }
        }
        #expect(
            missing.isEmpty,
            "\(missing.count) of \(indexes.count) acknowledged writes are missing: \(missing.prefix(20))")
    }

    @Test(
        "a node backed up under write load, wiped and restored has every write acknowledged before the backup"
    )
    func singleNode() async throws {
        let server = try ServerProcess()
        let client = try await HTTPKeyValueService(url: server.url)
        _ = try await client.createTable(TableDescriptor(name: Self.table, schema: try KeySchema([.string])))
        let identity = try await client.nodeInfo().nodeID
        let writer = Writer(urls: [server.url])
        // Each write is synced on its own, so how many are done by a given time depends
        // on the disk: the test waits for a count instead.
        _ = await eventually { writer.acknowledged.withLockedValue { $0.count } > 20 }
        let before = writer.acknowledged.withLockedValue { $0 }
        let report = try await client.backup(name: "under-load")
        try await Task.sleep(for: .milliseconds(300))
        await writer.stop()
        await client.close()
        #expect(report.nodeID == identity)
        #expect(before.count > 20, "only \(before.count) writes before the backup")
        server.kill()
        let kept = try Self.keep(report.path)
        defer { try? FileManager.default.removeItem(atPath: kept) }
        server.removeData()
        #expect(!FileManager.default.fileExists(atPath: server.dataDirectory))

        let data = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-restored-\(UUID().uuidString)"
        ).path
        try Self.restore(from: kept, into: data)
        let restored = try ServerProcess(dataDirectory: data)
        let again = try await HTTPKeyValueService(url: restored.url)
        #expect(try await again.nodeInfo().nodeID == identity, "the restored node has another id")
        try await Self.expectRows(before, through: again)
        await again.close()
        _ = restored.terminate()
        restored.removeData()
    }

    @Test("backup names are checked, a name is used once, and a node without files takes none")
    func refusals() async throws {
        let server = try ServerProcess()
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        for name in ["../escape", ".hidden", "a/b", String(repeating: "x", count: 129)] {
            let response = try await connection.send(
                .POST, "/v1/_node/backup", body: Array(#"{"name":"\#(name)"}"#.utf8))
            #expect(response.status == 400, "\(name): \(response.status)")
        }
        #expect(
            try await connection.send(.POST, "/v1/_node/backup", body: Array(#"{"name":"once"}"#.utf8)).status
                == 200)
        let again = try await connection.send(
            .POST, "/v1/_node/backup", body: Array(#"{"name":"once"}"#.utf8))
        #expect(again.status == 409)
        #expect(String(decoding: again.body, as: UTF8.self).contains("backup.exists"))
        #expect(try await connection.send(.GET, "/v1/_node/backup").status == 405)
        await connection.close()
        _ = server.terminate()
        server.removeData()

        let memory = try ServerProcess(arguments: ["--engine", "memory"])
        let other = try await HTTPConnection(host: "127.0.0.1", port: memory.port)
        #expect(try await other.send(.POST, "/v1/_node/backup").status == 400)
        await other.close()
        _ = memory.terminate()
        memory.removeData()
    }

    @Test(
        "a 3-node cluster backed up under write load, wiped and restored on new ports has every write acknowledged before the backups",
        .timeLimit(.minutes(3)))
    func wholeCluster() async throws {
        let arguments = ["--partitions", "64", "--replica-timeout-ms", "2000"]
        let cluster = try await offCooperativePool { try LocalCluster(count: 3, arguments: arguments) }
        let urls = (0..<3).map { cluster.url($0) }
        let first = try await HTTPKeyValueService(url: urls[0])
        _ = try await first.createTable(TableDescriptor(name: Self.table, schema: try KeySchema([.string])))
        let writer = Writer(urls: urls)
        _ = await eventually { writer.acknowledged.withLockedValue { $0.count } > 20 }
        let before = writer.acknowledged.withLockedValue { $0 }
        var backups: [String] = []
        for url in urls {
            let client = try await HTTPKeyValueService(url: url)
            backups.append(try await client.backup(name: "cluster").path)
            await client.close()
        }
        try await Task.sleep(for: .milliseconds(300))
        await writer.stop()
        await first.close()
        #expect(before.count > 20, "only \(before.count) writes before the backups")
        for node in cluster.nodes { node.kill() }
        let kept = try backups.map(Self.keep)
        defer { for path in kept { try? FileManager.default.removeItem(atPath: path) } }
        for node in cluster.nodes { node.removeData() }

        // New "machines": new data directories and new ports.
        let ports = try FreePorts.take(6)
        let members = (0..<3).map { "127.0.0.1:\(ports[$0])" }.joined(separator: ",")
        var restored: [ServerProcess] = []
        for index in 0..<3 {
            let data = FileManager.default.temporaryDirectory.appendingPathComponent(
                "kv-restored-\(UUID().uuidString)"
            ).path
            try Self.restore(from: kept[index], into: data)
            restored.append(
                try await offCooperativePool {
                    try ServerProcess(
                        arguments: ["--peer-port", String(ports[3 + index]), "--peers", members] + arguments,
                        dataDirectory: data, port: ports[index])
                })
        }
        // Every node reaches the others at their new addresses.
        let client = try await HTTPKeyValueService(url: restored[0].url)
        var up = 0
        for _ in 0..<200 where up != 2 {
            up = try await client.clusterStatus().members.count { $0.state == "up" }
            if up != 2 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(up == 2, "the restored nodes did not find each other")
        try await Self.expectRows(before, through: client)
        await client.close()
        for node in restored {
            _ = node.terminate()
            node.removeData()
        }
    }
}
