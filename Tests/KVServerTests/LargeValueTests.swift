import Foundation
import KVTestSupport
import Testing

/// Large values through real `kv server` processes: streamed PUT and GET of hundreds of
/// MiB through a 3-node cluster with bounded memory, ranges, HEAD, kill -9 of the
/// coordinator and of a replica during an upload, chunk collection after overwrites and
/// deletes, and the bad inputs of a streamed upload.
@Suite("large values", .serialized)
struct LargeValueTests {
    /// RocksDB at its default sizes (64 MiB memtables and block cache: chunks must not
    /// wait in either) and a short grace, so that chunk collection happens within a test.
    static func arguments(grace: Int) -> [String] {
        [
            "--partitions", "16", "--replica-timeout-ms", "5000", "--chunk-collection-interval-ms", "500",
            "--large-value-grace-seconds", String(grace),
        ]
    }

    /// The size of the big value: 256 MiB, or `KV_LARGE_VALUE_BYTES` (1 GiB in the opt-in run).
    static let bigValueBytes =
        Int(ProcessInfo.processInfo.environment["KV_LARGE_VALUE_BYTES"] ?? "") ?? (256 << 20)

    @Test(
        "a big value through a 3-node cluster: the same bytes through every node, bounded memory, ranges at the edges",
        .timeLimit(.minutes(5)))
    func bigValueThroughCluster() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments(grace: 3600))
        }
        try Files.createTable(cluster.url(0))
        let file = try Files.random(bytes: Self.bigValueBytes, seed: 15)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let digest = try Files.sha256(file)
        let before = cluster.nodes.map { Files.residentKiB($0.child!.pid) }
        let put = try await offCooperativePool {
            try Files.curlStatus(
                ["-X", "PUT", "-T", file, cluster.url(0) + "/v1/big/files/value"], timeout: 240)
        }
        #expect(put == 204)
        for index in 0..<3 {
            let copy = file + ".\(index)"
            defer { try? FileManager.default.removeItem(atPath: copy) }
            let status = try await offCooperativePool {
                try Files.curlStatus(["-o", copy, cluster.url(index) + "/v1/big/files/value"], timeout: 240)
            }
            #expect(status == 200)
            #expect(try Files.sha256(copy) == digest, "node \(index) answered other bytes")
        }
        let peak = cluster.nodes.map { Files.peakResidentKiB($0.child!.pid) }
        // Each chunk reached the disk as a flush of its own, a small table file per
        // keyspace; compaction merges every 64 MiB of them into a few (20 files in all
        // after 256 MiB, 83-85 after 1 GiB). Without it a 256 MiB value left over 500
        // table files on each node.
        let tableFileBound = 24 + 5 * (Self.bigValueBytes >> 26)
        let deadline = Date().addingTimeInterval(60)
        var tableFiles: [Int] = []
        repeat {
            tableFiles = try cluster.nodes.map { node in
                try FileManager.default.contentsOfDirectory(atPath: node.dataDirectory + "/rocksdb")
                    .filter { $0.hasSuffix(".sst") }.count
            }
            if tableFiles.allSatisfy({ $0 < tableFileBound }) { break }
            try await Task.sleep(for: .milliseconds(500))
        } while Date() < deadline
        print("table files per node: \(tableFiles)")
        #expect(tableFiles.allSatisfy { $0 < tableFileBound }, "table files per node: \(tableFiles)")
        // Every node stored the whole value (N=3) and served it once. At its peak its
        // memory grew by the chunks in flight and the buffers around them, never by
        // the value, and by less than the issue's bar of 64 MiB.
        for index in 0..<3 {
            let growth = peak[index] - before[index]
            print("node \(index): peak resident growth \(growth >> 10) MiB during the transfers")
            #expect(growth < 64 << 10, "node \(index) grew by \(growth) KiB at its peak")
        }
        // HEAD: the length, the row's ETag and the MD5 of the whole value.
        let head = try Files.headers(["-I", cluster.url(1) + "/v1/big/files/value"])
        #expect(head["content-length"] == String(Self.bigValueBytes))
        #expect(head["etag"]?.hasPrefix("\"") == true)
        #expect(head["content-md5"] == (try Files.md5Base64(file)))
        #expect(head["accept-ranges"] == "bytes")
        // Ranges: the first byte, across the first chunk boundary, the last bytes.
        let size = Self.bigValueBytes
        let chunk = 1 << 20
        let ranges: [(header: String, range: Range<Int>)] = [
            ("bytes=0-0", 0..<1), ("bytes=\(chunk - 3)-\(chunk + 2)", (chunk - 3)..<(chunk + 3)),
            ("bytes=-5", (size - 5)..<size), ("bytes=\(size - 1)-", (size - 1)..<size),
            ("bytes=\(size - 10)-\(size + 100)", (size - 10)..<size),
        ]
        for (header, range) in ranges {
            let (status, body, headers) = try Files.get(cluster.url(2) + "/v1/big/files/value", range: header)
            #expect(status == 206, "\(header)")
            #expect(body == (try Files.bytes(file, range)), "\(header)")
            #expect(headers["content-range"] == "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)")
        }
        let (status, _, headers) = try Files.get(
            cluster.url(0) + "/v1/big/files/value", range: "bytes=\(size)-")
        #expect(status == 416)
        #expect(headers["content-range"] == "bytes */\(size)")
    }

    @Test("kill -9 of the coordinator during an upload leaves no partial value, and its chunks are collected")
    func coordinatorKilledDuringUpload() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments(grace: 16))
        }
        try Files.createTable(cluster.url(0))
        // An acknowledged value written before must survive.
        let earlier = try Files.random(bytes: 3 << 20, seed: 1)
        defer { try? FileManager.default.removeItem(atPath: earlier) }
        #expect(
            try Files.curlStatus(["-X", "PUT", "-T", earlier, cluster.url(1) + "/v1/big/files/earlier"])
                == 204)
        let file = try Files.random(bytes: 64 << 20, seed: 2)
        defer { try? FileManager.default.removeItem(atPath: file) }
        // A slow upload through node 0, which is killed halfway.
        let status = try await Files.upload(
            file, to: cluster.url(0) + "/v1/big/files/partial", after: .seconds(2)
        ) {
            cluster.nodes[0].kill()
        }
        #expect(status != 204)
        let written = try Files.counter("chunks.collected", cluster.url(1))
        #expect(try Files.curlStatus([cluster.url(1) + "/v1/big/files/partial"]) == 404)
        #expect(try Files.curlStatus([cluster.url(2) + "/v1/big/files/partial"]) == 404)
        let copy = earlier + ".read"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        #expect(try Files.curlStatus(["-o", copy, cluster.url(2) + "/v1/big/files/earlier"]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(earlier)))
        // The orphaned chunks go once the grace has passed (the collectors of the two
        // live nodes lead the partitions they hold first; the dead node's wait for it).
        try await offCooperativePool { try cluster.restart(0) }
        let deadline = Date().addingTimeInterval(60)
        var collected: Int64 = 0
        var lastError: (any Error)?
        while Date() < deadline {
            // A node busy collecting may answer slowly: that sum is skipped, not fatal.
            do {
                collected = try (0..<3).reduce(0) {
                    $0 + (try Files.counter("chunks.collected", cluster.url($1)))
                }
            } catch {
                lastError = error
            }
            if collected > written + 8 { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(
            collected > written + 8,
            "orphaned chunks were not collected (\(collected)); last error: \(lastError.map { "\($0)" } ?? "none")"
        )
        #expect(try Files.curlStatus(["-o", copy, cluster.url(0) + "/v1/big/files/earlier"]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(earlier)))
    }

    @Test("kill -9 of a replica during an upload: the upload succeeds with W=2 and reads back whole")
    func replicaKilledDuringUpload() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments(grace: 60))
        }
        try Files.createTable(cluster.url(0))
        let file = try Files.random(bytes: 48 << 20, seed: 3)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let status = try await Files.upload(
            file, to: cluster.url(0) + "/v1/big/files/value", after: .seconds(1)
        ) {
            cluster.nodes[2].kill()
        }
        #expect(status == 204)
        let copy = file + ".read"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        #expect(try Files.curlStatus(["-o", copy, cluster.url(1) + "/v1/big/files/value"]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(file)))
        // The replica that missed chunks gets them back (hints, anti-entropy) and then
        // serves the value on its own. How long that takes depends on the disk (each hint
        // is synced), so the test waits for it rather than for a fixed time.
        try await offCooperativePool { try cluster.restart(2) }
        let servedWhole = await eventually(within: 60) {
            try Files.curlStatus(["-o", copy, cluster.url(2) + "/v1/big/files/value?r=1"]) == 200
                && (try Files.sha256(copy)) == (try Files.sha256(file))
        }
        #expect(servedWhole, "node 2 did not serve the whole value with r=1 within 60 s")
    }

    @Test("a damaged chunk on the replica reads go to first is read from another and repaired")
    func damagedChunkIsRepaired() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments(grace: 3600))
        }
        try Files.createTable(cluster.url(0))
        let file = try Files.random(bytes: 6 << 20, seed: 11)
        let copy = file + ".read"
        defer {
            try? FileManager.default.removeItem(atPath: file)
            try? FileManager.default.removeItem(atPath: copy)
        }
        #expect(
            try Files.curlStatus(["-X", "PUT", "-T", file, cluster.url(0) + "/v1/big/files/value"]) == 204)
        // Which partition holds the chunks, and which node is its first replica.
        let layout =
            try HTTPGet.json(cluster.url(0) + "/v1/_cluster/layout")["partitions"] as? [[String]] ?? []
        let ids = try (0..<3).map {
            try HTTPGet.json(cluster.url($0) + "/v1/_node")["node_id"] as? String ?? ""
        }
        _ = try await offCooperativePool { cluster.nodes[0].terminate() }
        let found = try ChunkRows.rewrite(cluster.nodes[0].dataDirectory) { _ in false }
        try await offCooperativePool { try cluster.restart(0) }
        #expect(found.partitions.count == 1 && found.sound == 6, "\(found)")
        let partition = Int(found.partitions.first ?? 0)
        let first = ids.firstIndex(of: layout[partition][0]) ?? 0
        // Damage every chunk there: one byte of each chunk's data flipped.
        _ = try await offCooperativePool { cluster.nodes[first].terminate() }
        let damaged = try ChunkRows.rewrite(cluster.nodes[first].dataDirectory) { record in
            record.data[100] ^= 0xFF
            return true
        }
        #expect(damaged.changed == 6)
        try await offCooperativePool {
            try cluster.restart(first)
            try cluster.waitUntilFormed()
        }
        // Read through another node: the damaged copies are noticed and the sound ones
        // from the other replicas returned.
        let reader = (first + 1) % 3
        #expect(try Files.curlStatus(["-o", copy, cluster.url(reader) + "/v1/big/files/value"]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(file)))
        #expect(try Files.counter("chunks.damaged_found", cluster.url(first)) >= 6)
        // Read repair stored the sound copies over the damaged ones. It runs after the
        // answer, so the test waits until a read through the same node finds no damaged
        // chunk on `first` before it looks at its files.
        var damagedFound = try Files.counter("chunks.damaged_found", cluster.url(first))
        let settled = await eventually {
            let before = damagedFound
            guard try Files.curlStatus(["-o", copy, cluster.url(reader) + "/v1/big/files/value"]) == 200
            else { return false }
            damagedFound = try Files.counter("chunks.damaged_found", cluster.url(first))
            return damagedFound == before
        }
        #expect(settled, "reads still found damaged chunks after 30 s")
        _ = try await offCooperativePool { cluster.nodes[first].terminate() }
        let repaired = try ChunkRows.rewrite(cluster.nodes[first].dataDirectory) { _ in false }
        #expect(repaired.sound == 6, "\(repaired)")
    }

    @Test("overwriting and deleting large values collects their chunks, and the disk space returns")
    func overwriteAndDeleteCollectChunks() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments(grace: 2))
        }
        try Files.createTable(cluster.url(0))
        let baseline = cluster.nodes.map { DiskUsage.bytes(under: $0.dataDirectory) }
        let first = try Files.random(bytes: 5 << 20, seed: 4)
        let second = try Files.random(bytes: 7 << 20, seed: 5)
        defer {
            try? FileManager.default.removeItem(atPath: first)
            try? FileManager.default.removeItem(atPath: second)
        }
        let url = cluster.url(0) + "/v1/big/files/value"
        #expect(try Files.curlStatus(["-X", "PUT", "-T", first, url]) == 204)
        // Overwritten with the context of the first version, so it supersedes it.
        let firstContext = try Files.headers(["-I", url])["x-kv-context"] ?? ""
        #expect(
            try Files.curlStatus(["-X", "PUT", "-H", "x-kv-context: \(firstContext)", "-T", second, url])
                == 204)
        let full = cluster.nodes.map { DiskUsage.bytes(under: $0.dataDirectory) }
        for node in 0..<3 {
            #expect(
                full[node] - baseline[node] > 11 << 20,
                "node \(node) holds \(full[node] - baseline[node]) bytes more")
        }
        // The first version's 5 chunks and its upload record go; the second stays.
        try await Files.waitForCollected(atLeast: 6, cluster: cluster)
        let copy = second + ".read"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        #expect(try Files.curlStatus(["-o", copy, url]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(second)))
        try await Task.sleep(for: .seconds(3))
        #expect(try Files.curlStatus(["-o", copy, url]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(second)))
        // A delete (with the row's context) takes the second value's chunks too.
        let context = try Files.headers(["-I", url])["x-kv-context"] ?? ""
        #expect(try Files.curlStatus(["-X", "DELETE", "-H", "x-kv-context: \(context)", url]) == 204)
        try await Files.waitForCollected(atLeast: 6 + 8, cluster: cluster)
        #expect(try Files.curlStatus([url]) == 404)
        // Every replica compacts what it deleted at its collector's next pass, so each
        // node's data directory returns close to its size before the uploads (logs,
        // the tombstones and RocksDB's own files account for the rest).
        let deadline = Date().addingTimeInterval(30)
        var now = full
        repeat {
            try await Task.sleep(for: .milliseconds(500))
            now = cluster.nodes.map { DiskUsage.bytes(under: $0.dataDirectory) }
        } while Date() < deadline && (0..<3).contains { now[$0] - baseline[$0] > 2 << 20 }
        for node in 0..<3 {
            #expect(
                now[node] - baseline[node] <= 2 << 20,
                "node \(node): \(now[node] - baseline[node]) bytes above the baseline, \(full[node] - baseline[node]) with both values"
            )
        }
    }

    @Test("siblings of large values are named, not inlined, each fetched on its own, and never collected")
    func siblingsOfLargeValues() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: Self.arguments(grace: 2))
        }
        try Files.createTable(cluster.url(0))
        let first = try Files.random(bytes: 3 << 20, seed: 8)
        let second = try Files.random(bytes: 2 << 20 + 5, seed: 9)
        defer {
            try? FileManager.default.removeItem(atPath: first)
            try? FileManager.default.removeItem(atPath: second)
        }
        // Two blind writes through different nodes: concurrent versions, so siblings.
        #expect(
            try Files.curlStatus(["-X", "PUT", "-T", first, cluster.url(0) + "/v1/big/files/both"]) == 204)
        #expect(
            try Files.curlStatus(["-X", "PUT", "-T", second, cluster.url(1) + "/v1/big/files/both"]) == 204)
        // Past the grace, several collector passes later, both are still there.
        try await Task.sleep(for: .seconds(5))
        let (status, body) = try HTTPGet.curl(["-w", "\n%{http_code}", cluster.url(2) + "/v1/big/files/both"])
        let text = String(decoding: body, as: UTF8.self)
        #expect(text.hasSuffix("\n300"), "\(text.suffix(200)) \(status)")
        #expect(body.count < 4096, "the 300 answer inlined the values")
        let json = try JSONSerialization.jsonObject(with: Data(text.utf8.dropLast(4))) as? [String: Any]
        let siblings = json?["siblings"] as? [[String: Any]] ?? []
        #expect(siblings.count == 2)
        var digests: Set<String> = []
        for sibling in siblings {
            let id = sibling["value_id"] as? String ?? ""
            let copy = first + ".\(id)"
            defer { try? FileManager.default.removeItem(atPath: copy) }
            #expect(
                try Files.curlStatus(["-o", copy, cluster.url(0) + "/v1/big/files/both?value_id=\(id)"])
                    == 200)
            digests.insert(try Files.sha256(copy))
        }
        #expect(digests == [try Files.sha256(first), try Files.sha256(second)])
        #expect(
            try Files.curlStatus([
                cluster.url(0) + "/v1/big/files/both?value_id=00000000-0000-0000-0000-000000000000"
            ]) == 404)
    }

    @Test(
        "kv put --file and kv get --output stream a value larger than the inline limit, on a node that logs every batch"
    )
    func commandLineStreams() async throws {
        // Every batch through the log and no blob files, by flag and by environment: the
        // path the engine took before large batches skipped the log.
        let server = try ServerProcess(
            arguments: ["--rocksdb-write-buffer-mib", "8", "--rocksdb-unlogged-batch-kib", "0"],
            environment: ["KV_ROCKSDB_BLOB_THRESHOLD_KIB": "0"])
        try Files.createTable(server.url)
        let file = try Files.random(bytes: 40 << 20, seed: 10)
        let copy = file + ".out"
        defer {
            try? FileManager.default.removeItem(atPath: file)
            try? FileManager.default.removeItem(atPath: copy)
        }
        let kv = try TestBinaries.path(of: "kv", override: "KV_BINARY")
        let put = try Files.run(kv, ["put", "big/files", "cli", "--file", file, "--url", server.url])
        #expect(put.hasPrefix("ok  context: "), "\(put)")
        let get = try Files.run(kv, ["get", "big/files", "cli", "--output", copy, "--url", server.url])
        #expect(get.hasPrefix("ok  \(40 << 20) bytes to \(copy)"), "\(get)")
        #expect(try Files.sha256(copy) == (try Files.sha256(file)))
        // Through the HTTP API the same value comes back too.
        #expect(try Files.curlStatus(["-o", copy, server.url + "/v1/big/files/cli"]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(file)))
        let files = try FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/rocksdb")
        #expect(!files.contains { $0.hasSuffix(".blob") }, "blob files despite a threshold of 0")
    }

    @Test("bad uploads: a length over the limit is refused before reading, a short body stores nothing")
    func badUploads() async throws {
        let server = try ServerProcess(
            arguments: ["--max-value-bytes", String(8 << 20), "--max-body-bytes", "65536"])
        try Files.createTable(server.url)
        let port = server.port
        // 413 at once: the body is never sent.
        let refused = try RawHTTP.exchange(
            port: port,
            "PUT /v1/big/files/huge HTTP/1.1\r\nHost: x\r\nContent-Length: \(1 << 40)\r\n\r\n")
        #expect(refused.hasPrefix("HTTP/1.1 413"), "\(refused.prefix(200))")
        // The connection closes after this answer (the body would be in the way), and
        // the answer says so.
        #expect(refused.lowercased().contains("connection: close"), "\(refused.prefix(300))")
        // A chunked body past the limit is refused once it passes it.
        let tooLong = try Files.random(bytes: 9 << 20, seed: 6)
        defer { try? FileManager.default.removeItem(atPath: tooLong) }
        #expect(
            try Files.curlStatus([
                "-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + tooLong,
                server.url + "/v1/big/files/chunked",
            ]) == 413)
        // A body that stops short of its Content-Length: the connection closes, nothing is stored.
        try RawHTTP.sendAndClose(
            port: port,
            "PUT /v1/big/files/short HTTP/1.1\r\nHost: x\r\nContent-Length: \(4 << 20)\r\n\r\n",
            body: [UInt8](repeating: 7, count: 3 << 20))
        try await Task.sleep(for: .milliseconds(500))
        #expect(try Files.curlStatus([server.url + "/v1/big/files/short"]) == 404)
        // Within the limit, with chunked encoding: stored whole.
        let fits = try Files.random(bytes: 6 << 20, seed: 7)
        defer { try? FileManager.default.removeItem(atPath: fits) }
        #expect(
            try Files.curlStatus([
                "-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + fits,
                server.url + "/v1/big/files/fits",
            ]) == 204)
        let copy = fits + ".read"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        #expect(try Files.curlStatus(["-o", copy, server.url + "/v1/big/files/fits"]) == 200)
        #expect(try Files.sha256(copy) == (try Files.sha256(fits)))
        // A malformed range is a clear error; an unsatisfiable one 416.
        let (malformed, body, _) = try Files.get(server.url + "/v1/big/files/fits", range: "bytes=9-3")
        #expect(malformed == 400)
        #expect(String(decoding: body, as: UTF8.self).contains("request.invalid"))
        let (unsatisfiable, _, _) = try Files.get(server.url + "/v1/big/files/fits", range: "bytes=-0")
        #expect(unsatisfiable == 416)
        // Small values keep the inline path and answer ranges too.
        #expect(
            try Files.curlStatus([
                "-X", "PUT", "--data-binary", "hello world", server.url + "/v1/big/files/s",
            ]) == 204)
        let (small, bytes, headers) = try Files.get(server.url + "/v1/big/files/s", range: "bytes=6-")
        #expect(small == 206)
        #expect(String(decoding: bytes, as: UTF8.self) == "world")
        #expect(headers["content-range"] == "bytes 6-10/11")
    }
}
