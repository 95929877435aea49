import Foundation
import KVClient
import KVCore
import KVTestSupport
import Synchronization
import Testing

/// Kills a loaded `kv server` with SIGKILL and checks that every write it answered with
/// a 2xx is still there after a restart, with its exact value.
@Suite("kill -9 of a loaded server", .serialized)
struct ServerCrashTests {
    static let writers = 8
    static let writesPerRound = 20_000

    @Test(.timeLimit(.minutes(10)))
    func acknowledgedWritesSurviveKill() async throws {
        let seed =
            ProcessInfo.processInfo.environment["KV_CRASH_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64.max)
        print("server crash test seed: \(seed) (replay with KV_CRASH_SEED=\(seed))")
        var random = SplitMix64(seed: seed)
        // Few partitions keep the verifying scans cheap; placement is not under test here.
        let server = try ServerProcess(arguments: ["--partitions", "8"])
        let rows = table("crash", "rows")
        do {
            let setup = try await HTTPKeyValueService(host: "127.0.0.1", port: server.port)
            _ = try await setup.createTable(TableDescriptor(name: rows, schema: try KeySchema([.string])))
            await setup.close()
        }
        var acknowledged: [String: String] = [:]
        for round in 1...5 {
            // Kill once a random share (10–80 %) of the round's writes is acknowledged.
            let killAt = Int.random(
                in: (Self.writesPerRound / 10)...(Self.writesPerRound * 8 / 10), using: &random)
            let acked = AcknowledgedWrites()
            let port = server.port
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<Self.writers {
                    group.addTask {
                        guard let client = try? await HTTPKeyValueService(host: "127.0.0.1", port: port)
                        else { return }
                        for index in 0..<(Self.writesPerRound / Self.writers) {
                            let key = "r\(round)-w\(writer)-\(index)"
                            let value = "value of \(key)"
                            do {
                                _ = try await client.put(
                                    RowKey(table: rows, parts: [.string(key)]), value: text(value),
                                    options: WriteOptions())
                            } catch {
                                break  // The server is gone.
                            }
                            acked.record(key, value)
                        }
                        await client.close()
                    }
                }
                group.addTask {
                    while acked.count < killAt {
                        try? await Task.sleep(for: .milliseconds(2))
                    }
                    server.kill()
                }
            }
            let roundAcked = acked.all
            print("round \(round): killed at \(roundAcked.count) acknowledged writes (target \(killAt))")
            #expect(roundAcked.count >= killAt)
            #expect(roundAcked.count < Self.writesPerRound, "the kill came after the load had finished")
            acknowledged.merge(roundAcked) { _, new in new }

            try server.start()
            let found = try await Self.readAll(rows, port: server.port)
            let missing = acknowledged.filter { found[$0.key] != $0.value }
            #expect(
                missing.isEmpty,
                "round \(round): \(missing.count) acknowledged writes lost, e.g. \(missing.keys.sorted().prefix(5))"
            )
        }
    }

    /// Every row of the table, by key, read through paged scans.
    static func readAll(_ name: TableName, port: Int) async throws -> [String: String] {
        let client = try await HTTPKeyValueService(host: "127.0.0.1", port: port)
        var request = ScanRequest(table: name, limit: 1000)
        var rows: [String: String] = [:]
        while true {
            let page = try await client.scan(request)
            for row in page.rows {
                guard case .string(let key) = row.key[0], row.siblings.count == 1,
                    let value = row.siblings[0].value
                else {
                    continue
                }
                rows[key] = String(decoding: value.bytes, as: UTF8.self)
            }
            guard let continuation = page.continuation else { break }
            request.continuation = continuation
        }
        await client.close()
        return rows
    }
}

/// The writes a server acknowledged, recorded from concurrent writers.
final class AcknowledgedWrites: Sendable {
    private let writes = Mutex<[String: String]>([:])

    func record(_ key: String, _ value: String) { writes.withLock { $0[key] = value } }
    var count: Int { writes.withLock { $0.count } }
    var all: [String: String] { writes.withLock { $0 } }
}
