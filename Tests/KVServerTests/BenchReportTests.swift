import Foundation
import KVTestSupport
import Testing

/// `kv bench --output`: the report the benchmark scripts keep and plot must hold each
/// operation's whole latency distribution and a timeline that accounts for every
/// operation.
@Suite("kv bench report")
struct BenchReportTests {
    struct Point: Decodable {
        var percentile: Double
        var microseconds: UInt64
    }

    struct Latencies: Decodable {
        var count: UInt64
        var p50: UInt64
        var p99: UInt64
        var max: UInt64
        var percentiles: [Point]
    }

    struct Second: Decodable {
        var second: Int
        var operations: UInt64
        var p50: UInt64
        var p99: UInt64
    }

    struct Report: Decodable {
        var gets: Latencies
        var puts: Latencies
        var timeline: [Second]
    }

    @Test("the report holds every operation's distribution and a second-by-second timeline")
    func reportShape() throws {
        let server = try ServerProcess()
        defer {
            _ = server.terminate()
            server.removeData()
        }
        let output = server.dataDirectory + ".bench.json"
        let errors = server.dataDirectory + ".bench.err"
        let child = try ChildProcess(
            executable: try TestBinaries.path(of: "kv", override: "KV_BINARY"),
            arguments: [
                "bench", "--url", server.url, "--clients", "4", "--duration", "2.5", "--keys", "50",
                "--get-ratio", "0.5", "--no-progress", "--output", output,
            ],
            standardErrorPath: errors)
        _ = child.finishReading()
        let status = child.wait()
        let message = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        try #require(status.exitedNormally && status.code == 0, "kv bench: \(message)")
        let report = try JSONDecoder().decode(
            Report.self, from: Data(contentsOf: URL(fileURLWithPath: output)))

        for latencies in [report.gets, report.puts] {
            #expect(latencies.count > 0)
            let points = latencies.percentiles
            #expect(points.count == 22)
            #expect(points.first?.percentile == 0)
            #expect(points.last.map { ($0.percentile, $0.microseconds) } ?? (0, 0) == (100, latencies.max))
            #expect(zip(points, points.dropFirst()).allSatisfy { $0.percentile < $1.percentile })
            #expect(zip(points, points.dropFirst()).allSatisfy { $0.microseconds <= $1.microseconds })
            #expect(points.contains { $0.percentile == 99 && $0.microseconds == latencies.p99 })
        }
        // Seconds 0, 1 and 2 (cut short), in order, and every operation in one of them;
        // an operation still running at the end may finish in a later second.
        #expect(report.timeline.count >= 3)
        #expect(report.timeline.map(\.second) == Array(0..<report.timeline.count))
        #expect(report.timeline.reduce(0) { $0 + $1.operations } == report.gets.count + report.puts.count)
        #expect(report.timeline.allSatisfy { $0.operations == 0 || $0.p50 <= $0.p99 })
    }
}
