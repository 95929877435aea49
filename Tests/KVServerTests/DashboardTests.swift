import Foundation
import Glibc
import KVClient
import KVCore
import KVTestSupport
import Testing

/// The dashboard at `/ui`, loaded by a real headless Chromium against a real 3-node
/// cluster under load: the page must show the members and their states, the layout's
/// partitions and this node's request rates, and, after a node is killed, that node as
/// down. Screenshots of both are kept under `.build/test-artifacts/`.
@Suite("dashboard in headless Chromium", .serialized)
struct DashboardTests {
    static let table = try! TableName(namespace: "ui", table: "rows")

    static var artifacts: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/test-artifacts").path
    }

    /// Debian's chromium, which `./scripts/test.sh` installs.
    static func chromium() throws -> String {
        for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw CrashTestError(
            "chromium is not installed; ./scripts/test.sh installs it (apt-get install chromium)")
    }

    /// Runs headless Chromium on `url` with `arguments`, giving the page's timers and
    /// fetches `budget` milliseconds of virtual time; returns what it printed.
    static func chromium(_ url: String, _ arguments: [String], budget: Int = 6_000) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try chromium())
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("kv-chromium-\(UUID())")
            .path
        defer { try? FileManager.default.removeItem(atPath: profile) }
        process.arguments =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(profile)", "--virtual-time-budget=\(budget)", "--window-size=1400,1000",
            ] + arguments + [url]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 90, execute: watchdog)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return String(decoding: data, as: UTF8.self)
    }

    /// The page as Chromium rendered it, and a screenshot of it saved as `name`.
    static func render(_ url: String, screenshot name: String) throws -> String {
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let path = artifacts + "/" + name
        try? FileManager.default.removeItem(atPath: path)
        _ = try chromium(url, ["--screenshot=\(path)", "--hide-scrollbars"])
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        #expect(size > 10_000, "the screenshot \(path) is missing or blank")
        print("dashboard screenshot: \(path)")
        return try chromium(url, ["--dump-dom"])
    }

    /// The state the members table shows for `node`.
    static func shownState(of node: String, in dom: String) -> String? {
        guard let range = dom.range(of: "data-node=\"\(node)\" data-state=\"") else { return nil }
        return String(dom[range.upperBound...].prefix { $0 != "\"" })
    }

    static func count(_ needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }

    @Test func showsMembersLayoutRatesAndADeadNode() async throws {
        let cluster = try await offCooperativePool {
            try LocalCluster(count: 3, arguments: ["--partitions", "64"])
        }
        defer { for node in cluster.nodes { node.kill() } }
        let client = try await HTTPKeyValueService(url: cluster.url(0))
        _ = try await client.createTable(TableDescriptor(name: Self.table, schema: try KeySchema([.int64])))
        let load = Task {
            var index: Int64 = 0
            while !Task.isCancelled {
                let key = RowKey(table: Self.table, parts: [.int64(index % 100)])
                _ = try? await client.put(key, value: RowValue(bytes: [1, 2, 3]), options: WriteOptions())
                _ = try? await client.get(key)
                index += 1
            }
        }
        defer { load.cancel() }
        let status = try HTTPGet.json(cluster.url(0) + "/v1/_cluster")
        let members = try #require(status["members"] as? [[String: Any]])
        let idByPort = Dictionary(
            uniqueKeysWithValues: members.map {
                (
                    String(($0["http_address"] as? String ?? "").split(separator: ":").last ?? ""),
                    $0["node_id"] as? String ?? ""
                )
            })
        let ids = cluster.httpPorts.map { idByPort[String($0)] ?? "" }

        let page = cluster.url(0) + "/ui"
        let before = try await offCooperativePool {
            try Self.render(page, screenshot: "dashboard-3-nodes.png")
        }
        #expect(before.contains("data-loaded=\"true\""), "the page never loaded its data")
        #expect(Self.shownState(of: ids[0], in: before) == "self")
        #expect(Self.shownState(of: ids[1], in: before) == "up")
        #expect(Self.shownState(of: ids[2], in: before) == "up")
        #expect(Self.count("class=\"partition", in: before) == 64)
        for id in ids { #expect(before.contains("data-owner=\"\(id)\""), "no partition is shown as \(id)'s") }
        #expect(before.contains("data-operation=\"put\""), "no request rates are shown")
        #expect(before.contains("none in progress"))

        // Kill the third node; once the first node has noticed, the page must say so.
        cluster.nodes[2].kill()
        let deadline = Date().addingTimeInterval(30)
        var noticed = false
        while !noticed && Date() < deadline {
            let now = try? HTTPGet.json(cluster.url(0) + "/v1/_cluster")
            noticed = ((now?["members"] as? [[String: Any]]) ?? []).contains {
                $0["node_id"] as? String == ids[2] && $0["state"] as? String == "down"
            }
            if !noticed { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(noticed, "the first node did not notice the killed node")
        let after = try await offCooperativePool {
            try Self.render(page, screenshot: "dashboard-node-killed.png")
        }
        #expect(Self.shownState(of: ids[2], in: after) == "down")
        #expect(Self.shownState(of: ids[1], in: after) == "up")
        load.cancel()
        await client.close()
    }
}
