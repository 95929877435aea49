import Foundation
import KVCore
import KVReplica
import KVStorage
import KVStorageRocksDB
import KVTestSupport
import Testing

/// Files, curl and process figures for the large value tests.
enum Files {
    /// A file of `bytes` pseudo-random bytes from `seed`, in the temporary directory.
    static func random(bytes: Int, seed: UInt64) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-large-\(UUID().uuidString)"
        ).path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var random = SplitMix64(seed: seed)
        var remaining = bytes
        while remaining > 0 {
            let count = min(remaining, 1 << 20)
            var block = [UInt8](repeating: 0, count: count)
            block.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for index in words.indices { words[index] = random.next() }
                for index in (words.count * 8)..<raw.count {
                    raw[index] = UInt8(truncatingIfNeeded: random.next())
                }
            }
            try handle.write(contentsOf: block)
            remaining -= count
        }
        return path
    }

    /// The SHA-256 of a file, hexadecimal.
    static func sha256(_ path: String) throws -> String {
        String(try run("/usr/bin/sha256sum", [path]).prefix(64))
    }

    /// The MD5 of a file, base64 (as `Content-MD5` carries it).
    static func md5Base64(_ path: String) throws -> String {
        let hex = Array(try run("/usr/bin/md5sum", [path]).prefix(32).utf8)
        let bytes = stride(from: 0, to: 32, by: 2).map {
            UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
        return Data(bytes).base64EncodedString()
    }

    /// The bytes of `range` of a file.
    static func bytes(_ path: String, _ range: Range<Int>) throws -> [UInt8] {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(range.lowerBound))
        return Array(try handle.read(upToCount: range.count) ?? Data())
    }

    /// A process's resident memory in KiB (0 when it is gone).
    static func residentKiB(_ pid: pid_t) -> Int { statusKiB(pid, "VmRSS:") }

    /// The most resident memory a process has had since it started, in KiB.
    static func peakResidentKiB(_ pid: pid_t) -> Int { statusKiB(pid, "VmHWM:") }

    private static func statusKiB(_ pid: pid_t, _ field: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
            return 0
        }
        for line in status.split(separator: "\n") where line.hasPrefix(field) {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    /// Runs curl and returns the HTTP status (0 when there was none).
    static func curlStatus(_ arguments: [String], timeout: Int = 60) throws -> Int {
        var arguments = arguments
        if !arguments.contains("-o") { arguments = ["-o", "/dev/null"] + arguments }
        let (_, output) = try HTTPGet.curl(["-w", "%{http_code}"] + arguments, timeout: timeout)
        return Int(String(decoding: output, as: UTF8.self)) ?? 0
    }

    /// Uploads `file` to `url` at 16 MiB/s with curl, runs `fault` after `delay`, and
    /// returns the upload's HTTP status (0 when there was none).
    static func upload(
        _ file: String, to url: String, after delay: Duration, fault: @escaping @Sendable () -> Void
    ) async throws -> Int {
        let upload = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: [
                "-s", "-o", "/dev/null", "-w", "%{http_code}", "--limit-rate", "16M", "-X", "PUT", "-T", file,
                url,
            ])
        try await Task.sleep(for: delay)
        try await offCooperativePool { fault() }
        return try await offCooperativePool {
            _ = upload.wait()
            return Int(String(decoding: upload.finishReading(), as: UTF8.self)) ?? 0
        }
    }

    /// The response headers of a request (names lowercased).
    static func headers(_ arguments: [String]) throws -> [String: String] {
        let (_, output) = try HTTPGet.curl(["-D", "-", "-o", "/dev/null"] + arguments)
        var headers: [String: String] = [:]
        for line in String(decoding: output, as: UTF8.self).split(separator: "\r\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        return headers
    }

    /// A GET with a `Range` header: status, body and headers.
    static func get(_ url: String, range: String) throws -> (Int, [UInt8], [String: String]) {
        let headerFile = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kv-h-\(UUID().uuidString)"
        ).path
        defer { try? FileManager.default.removeItem(atPath: headerFile) }
        let (_, body) = try HTTPGet.curl(["-D", headerFile, "-H", "Range: \(range)", url])
        let text = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
        var headers: [String: String] = [:]
        var status = 0
        for line in text.split(separator: "\r\n") {
            if line.hasPrefix("HTTP/") {
                status = Int(line.split(separator: " ")[1]) ?? 0
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        return (status, Array(body), headers)
    }

    /// Creates the table `big/files` (one string key part).
    static func createTable(_ base: String) throws {
        let status = try curlStatus([
            "-X", "PUT", "--data-binary", #"{"key":["string"]}"#, base + "/v1/_tables/big/files",
        ])
        guard status == 200 || status == 201 else {
            throw CrashTestError("creating the table answered \(status)")
        }
    }

    /// A maintenance counter of the node at `base` (`/v1/_cluster`).
    static func counter(_ name: String, _ base: String) throws -> Int64 {
        let status = try HTTPGet.json(base + "/v1/_cluster")
        return ((status["counters"] as? [String: Any])?[name] as? NSNumber)?.int64Value ?? 0
    }

    /// Waits until the nodes together collected at least `count` chunk rows.
    static func waitForCollected(atLeast count: Int64, cluster: LocalCluster) async throws {
        let deadline = Date().addingTimeInterval(60)
        var collected: Int64 = 0
        var lastError: (any Error)?
        while Date() < deadline {
            // A node busy collecting may answer slowly: that sum is skipped, not fatal.
            do {
                collected = try (0..<cluster.nodes.count).reduce(0) {
                    $0 + (try counter("chunks.collected", cluster.url($1)))
                }
            } catch {
                lastError = error
            }
            if collected >= count { return }
            try await Task.sleep(for: .milliseconds(300))
        }
        Issue.record(
            "only \(collected) chunk rows were collected, not \(count); last error: \(lastError.map { "\($0)" } ?? "none")"
        )
    }

    /// Runs a program to its end; its exit status (its output goes to the test's).
    static func status(_ executable: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Raw HTTP for requests curl will not send.
enum RawHTTP {
    /// Sends `head` and returns what arrives within two seconds.
    static func exchange(port: Int, _ head: String) throws -> String {
        let socket = try RawSocket(port: port)
        socket.send(head)
        return socket.readAll(timeout: 2)
    }

    /// Sends `head` and part of a body, then closes the connection.
    static func sendAndClose(port: Int, _ head: String, body: [UInt8]) throws {
        let socket = try RawSocket(port: port)
        socket.send(head)
        body.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let sent = Glibc.send(
                    socket.descriptor, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if sent <= 0 { break }
                offset += sent
            }
        }
    }
}

/// Reading and damaging the chunk rows of a stopped node's RocksDB directly.
enum ChunkRows {
    /// Applies `change` to every chunk row of the store in `dataDirectory` (the node must
    /// be stopped) and returns the partitions they are in and how many it changed.
    static func rewrite(
        _ dataDirectory: String, _ change: (inout ChunkRecord) -> Bool
    ) throws -> (partitions: Set<UInt32>, changed: Int, sound: Int) {
        let engine = try RocksDBStorageEngine(path: dataDirectory + "/rocksdb")
        defer { try? engine.close() }
        var partitions: Set<UInt32> = []
        var changed = 0
        var sound = 0
        var batch = WriteBatch()
        let cursor = try engine.cursor(over: .all, in: .data, direction: .forward)
        while let entry = try cursor.next() {
            guard ChunkChecks.isChunkRow(entry.key) else { continue }
            partitions.insert(entry.key.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            let object = try StoredObjectCodec.decode(entry.value)
            if ChunkChecks.isSound(object) { sound += 1 }
            var modified = false
            let entries = object.entries.map { stored in
                StoredObject.Entry(
                    actor: stored.actor, counter: stored.counter,
                    values: stored.values.map { sibling in
                        guard var record = ChunkRecord(encoded: sibling.value?.bytes ?? []), change(&record)
                        else { return sibling }
                        modified = true
                        var copy = sibling
                        copy.value = RowValue(bytes: record.encoded, contentType: sibling.value!.contentType)
                        return copy
                    })
            }
            if modified, let rewritten = StoredObject(validatedEntries: entries) {
                batch.put(entry.key, StoredObjectCodec.encode(rewritten))
                changed += 1
            }
        }
        try engine.write(batch, durability: .synced)
        return (partitions, changed, sound)
    }
}

/// A Python with the packages a client script needs, in a virtual environment under the
/// package's ignored `.build/` (Debian's Python refuses system-wide installs), made on
/// first use.
enum PythonEnvironment {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/test-venv")
        .path

    /// The environment's interpreter, with `packages` importable.
    static func python(with packages: [String]) throws -> String {
        let python = directory + "/bin/python"
        let imports = "import " + packages.joined(separator: ", ")
        if (try? Files.status(python, ["-c", imports])) == 0 { return python }
        guard try Files.status("/usr/bin/python3", ["-m", "venv", directory]) == 0,
            try Files.status(directory + "/bin/pip", ["install", "--quiet"] + packages) == 0
        else { throw CrashTestError("cannot make a Python environment with \(packages) in \(directory)") }
        return python
    }

    /// The path of a client script in `Tests/ClientScripts`.
    static func script(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ClientScripts/\(name)").path
    }
}
