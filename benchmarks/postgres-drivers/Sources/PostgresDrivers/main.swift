// libpq against postgres-nio for what the engine on PostgreSQL asks of a driver: the
// engine protocol is blocking (a call from the storage thread pool returns when the
// database answered), so each driver is called that way, from 1 and from 8 threads,
// each thread with its own connection. postgres-nio also runs natively, from tasks with
// async/await, to show what it does when nothing blocks. Workloads: a single-row upsert
// committed with synchronous_commit on (a synced put), and a point read by primary key.
// Usage: PostgresDrivers --url postgres://user@host:port/db [--seconds 5] [--rows 10000]
import CLibpq
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
}

/// What the engine asks of a driver, called from a blocking thread.
protocol BlockingSession: AnyObject {
    func put(_ key: [UInt8], _ value: [UInt8]) throws
    /// The length of the value read, 0 when absent.
    func get(_ key: [UInt8]) throws -> Int
}

// MARK: - libpq

/// A libpq connection with both statements prepared, parameters and results in binary,
/// as the engine uses it.
final class LibpqSession: BlockingSession {
    let connection: OpaquePointer

    /// Connects; with `prepared`, prepares both statements (the table must exist).
    init(url: String, prepared: Bool = true) throws {
        guard let connection = PQconnectdb(url), PQstatus(connection) == CONNECTION_OK else {
            throw BenchmarkError(description: "libpq cannot connect to \(url)")
        }
        self.connection = connection
        guard prepared else { return }
        try prepare("put", "INSERT INTO driver_bench (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
        try prepare("get", "SELECT v FROM driver_bench WHERE k = $1")
    }

    deinit { PQfinish(connection) }

    private func prepare(_ name: String, _ text: String) throws {
        let result = PQprepare(connection, name, text, 0, nil)
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK else {
            throw BenchmarkError(description: String(cString: PQerrorMessage(connection)))
        }
    }

    func execute(_ text: String) throws {
        let result = PQexec(connection, text)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            throw BenchmarkError(description: String(cString: PQerrorMessage(connection)))
        }
    }

    private func run(_ name: String, _ parameters: [[UInt8]]) throws -> OpaquePointer {
        let buffers = parameters.map { bytes -> UnsafeMutablePointer<CChar> in
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            bytes.withUnsafeBytes { raw in
                if let base = raw.baseAddress { UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: raw.count) }
            }
            return buffer
        }
        defer { for buffer in buffers { buffer.deallocate() } }
        var pointers: [UnsafePointer<CChar>?] = buffers.map { UnsafePointer($0) }
        let lengths = parameters.map { Int32($0.count) }
        let formats = [Int32](repeating: 1, count: parameters.count)
        let result = pointers.withUnsafeMutableBufferPointer { values in
            PQexecPrepared(connection, name, Int32(parameters.count), values.baseAddress, lengths, formats, 1)
        }
        guard let result else { throw BenchmarkError(description: "libpq returned no result") }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let message = String(cString: PQresultErrorMessage(result))
            PQclear(result)
            throw BenchmarkError(description: message)
        }
        return result
    }

    func put(_ key: [UInt8], _ value: [UInt8]) throws { PQclear(try run("put", [key, value])) }

    func get(_ key: [UInt8]) throws -> Int {
        let result = try run("get", [key])
        defer { PQclear(result) }
        return PQntuples(result) > 0 ? Int(PQgetlength(result, 0, 0)) : 0
    }
}

// MARK: - postgres-nio

/// A postgres-nio connection called from a blocking thread: each query's future is
/// waited for, as an engine on the blocking protocol would have to.
final class NIOBlockingSession: BlockingSession {
    let connection: PostgresConnection
    let logger = Logger(label: "bench")

    init(_ configuration: PostgresConnection.Configuration, group: any EventLoopGroup, id: Int) throws {
        connection = try PostgresConnection.connect(
            on: group.any(), configuration: configuration, id: id, logger: logger
        ).wait()
    }

    deinit { try? connection.close().wait() }

    func put(_ key: [UInt8], _ value: [UInt8]) throws {
        let future: EventLoopFuture<PostgresQueryResult> = connection.query(
            NIOQueries.put(key, value), logger: logger)
        _ = try future.wait()
    }

    func get(_ key: [UInt8]) throws -> Int {
        let future: EventLoopFuture<PostgresQueryResult> = connection.query(NIOQueries.get(key), logger: logger)
        guard let row = try future.wait().rows.first else { return 0 }
        return try row.decode(ByteBuffer.self).readableBytes
    }
}

enum NIOQueries {
    static func put(_ key: [UInt8], _ value: [UInt8]) -> PostgresQuery {
        "INSERT INTO driver_bench (k, v) VALUES (\(ByteBuffer(bytes: key)), \(ByteBuffer(bytes: value))) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
    }

    static func get(_ key: [UInt8]) -> PostgresQuery {
        "SELECT v FROM driver_bench WHERE k = \(ByteBuffer(bytes: key))"
    }
}

// MARK: - Measuring

struct Measurement {
    var operations: Int
    var seconds: Double
    var latencies: [Double]

    var perSecond: Int { Int(Double(operations) / seconds) }

    func percentile(_ fraction: Double) -> Double {
        guard !latencies.isEmpty else { return 0 }
        let sorted = latencies.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
    }

    var summary: String {
        String(format: "%d/s (p50 %.2f ms, p99 %.2f ms)", perSecond, percentile(0.5), percentile(0.99))
    }
}

final class Collected: @unchecked Sendable {
    let lock = NSLock()
    var operations = 0
    var latencies: [Double] = []
    var failure: String?

    func add(_ count: Int, _ measured: [Double]) {
        lock.withLock {
            operations += count
            latencies += measured
        }
    }

    func fail(_ message: String) { lock.withLock { failure = failure ?? message } }
}

func key(_ index: Int) -> [UInt8] { withUnsafeBytes(of: Int32(index).bigEndian, Array.init) }

/// `threads` threads, each with its own session, run `operation` for `seconds`.
func measureBlocking(
    threads: Int, seconds: Double, rows: Int, write: Bool, session: @escaping @Sendable (Int) throws -> any BlockingSession
) throws -> Measurement {
    let collected = Collected()
    let ready = DispatchGroup()
    let done = DispatchGroup()
    let start = DispatchSemaphore(value: 0)
    let value = [UInt8](repeating: 0x76, count: 100)
    for thread in 0..<threads {
        ready.enter()
        done.enter()
        Thread {
            defer { done.leave() }
            let connection: any BlockingSession
            do {
                connection = try session(thread)
            } catch {
                collected.fail("\(error)")
                ready.leave()
                return
            }
            ready.leave()
            start.wait()
            var random = SystemRandomNumberGenerator()
            var latencies: [Double] = []
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let started = DispatchTime.now().uptimeNanoseconds
                do {
                    let chosen = key(Int.random(in: 0..<rows, using: &random))
                    if write { try connection.put(chosen, value) } else { _ = try connection.get(chosen) }
                } catch {
                    collected.fail("\(error)")
                    return
                }
                latencies.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
            }
            collected.add(latencies.count, latencies)
        }.start()
    }
    ready.wait()
    for _ in 0..<threads { start.signal() }
    done.wait()
    if let failure = collected.failure { throw BenchmarkError(description: failure) }
    return Measurement(operations: collected.operations, seconds: seconds, latencies: collected.latencies)
}

/// `tasks` tasks, each with its own postgres-nio connection, use the async API.
func measureAsync(
    tasks: Int, seconds: Double, rows: Int, write: Bool, configuration: PostgresConnection.Configuration,
    group: any EventLoopGroup
) async throws -> Measurement {
    let logger = Logger(label: "bench")
    var connections: [PostgresConnection] = []
    for index in 0..<tasks {
        connections.append(
            try await PostgresConnection.connect(
                on: group.any(), configuration: configuration, id: 1000 + index, logger: logger))
    }
    let value = [UInt8](repeating: 0x76, count: 100)
    let deadline = Date().addingTimeInterval(seconds)
    let results = try await withThrowingTaskGroup(of: [Double].self) { tasksGroup in
        for connection in connections {
            tasksGroup.addTask {
                var latencies: [Double] = []
                while Date() < deadline {
                    let started = DispatchTime.now().uptimeNanoseconds
                    let chosen = key(Int.random(in: 0..<rows))
                    if write {
                        try await connection.query(NIOQueries.put(chosen, value), logger: logger)
                    } else {
                        for try await row in try await connection.query(NIOQueries.get(chosen), logger: logger) {
                            _ = try row.decode(ByteBuffer.self)
                        }
                    }
                    latencies.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
                }
                return latencies
            }
        }
        var all: [Double] = []
        for try await latencies in tasksGroup { all += latencies }
        return all
    }
    for connection in connections { try await connection.close() }
    return Measurement(operations: results.count, seconds: seconds, latencies: results)
}

// MARK: - Main

var arguments = CommandLine.arguments.dropFirst()
var url = ""
var seconds = 5.0
var rows = 10_000
while let flag = arguments.popFirst() {
    switch flag {
    case "--url": url = arguments.popFirst() ?? ""
    case "--seconds": seconds = Double(arguments.popFirst() ?? "") ?? seconds
    case "--rows": rows = Int(arguments.popFirst() ?? "") ?? rows
    default: throw BenchmarkError(description: "unknown argument \(flag)")
    }
}
guard let components = URLComponents(string: url), let host = components.host else {
    throw BenchmarkError(description: "give --url postgres://user@host:port/db")
}
let configuration = PostgresConnection.Configuration(
    host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
    password: components.password, database: String(components.path.dropFirst()), tls: .disable)
let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)

let setup = try LibpqSession(url: url, prepared: false)
try setup.execute("CREATE TABLE IF NOT EXISTS driver_bench (k bytea PRIMARY KEY, v bytea NOT NULL)")
try setup.execute("TRUNCATE driver_bench")
try setup.execute(
    "INSERT INTO driver_bench SELECT int4send(g), convert_to(repeat('v', 100), 'UTF8') FROM generate_series(0, \(rows - 1)) g")
try setup.execute("VACUUM ANALYZE driver_bench")
// The check a PostgreSQL engine relies on: commits are synced.
try setup.execute("SET synchronous_commit = on")

let serverURL = url
print("| workload | threads | libpq (blocking) | postgres-nio (blocking, future.wait) | postgres-nio (async/await) |")
print("|---|---|---|---|---|")
for (name, write) in [("synced single-row upsert", true), ("point read", false)] {
    for threads in [1, 8] {
        let libpq = try measureBlocking(threads: threads, seconds: seconds, rows: rows, write: write) { _ in
            try LibpqSession(url: serverURL)
        }
        let blocking = try measureBlocking(threads: threads, seconds: seconds, rows: rows, write: write) { index in
            try NIOBlockingSession(configuration, group: group, id: index)
        }
        let native = try await measureAsync(
            tasks: threads, seconds: seconds, rows: rows, write: write, configuration: configuration, group: group)
        print("| \(name) | \(threads) | \(libpq.summary) | \(blocking.summary) | \(native.summary) |")
    }
}
try await group.shutdownGracefully()
