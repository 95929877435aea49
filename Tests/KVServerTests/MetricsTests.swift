import Foundation
import KVClient
import KVCore
import KVTestSupport
import NIOHTTP1
import Testing

/// A strict reader of the Prometheus text format (version 0.0.4): every line is a
/// comment, a `# HELP`/`# TYPE` line or a sample, names and labels are well formed,
/// values are numbers, and each histogram's buckets are cumulative and end at `+Inf`
/// with the count.
struct PrometheusText {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    var samples: [Sample] = []
    var types: [String: String] = [:]

    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    static func isName(_ text: Substring, colons: Bool = true) -> Bool {
        guard let first = text.first, first.isLetter || first == "_" || (colons && first == ":") else {
            return false
        }
        return text.allSatisfy {
            ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "_" || (colons && $0 == ":")
        }
    }

    init(_ text: String) throws {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3)
                if parts.count >= 3, parts[1] == "TYPE" {
                    guard Self.isName(parts[2]), parts.count == 4,
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3])
                    else { throw Malformed(description: "line \(number + 1): \(line)") }
                    types[String(parts[2])] = String(parts[3])
                }
                continue
            }
            samples.append(try Self.sample(line, number: number + 1))
        }
        try checkHistograms()
    }

    static func sample(_ line: Substring, number: Int) throws -> Sample {
        let fail = Malformed(description: "line \(number): \(line)")
        var rest = line[...]
        let name = rest.prefix { $0 != "{" && $0 != " " }
        guard isName(name) else { throw fail }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = rest.prefix { $0 != "=" }
                guard isName(label, colons: false) else { throw fail }
                rest = rest.dropFirst(label.count)
                guard rest.hasPrefix("=\"") else { throw fail }
                rest = rest.dropFirst(2)
                var value = ""
                while let character = rest.first, character != "\"" {
                    rest = rest.dropFirst()
                    if character == "\\" {
                        guard let escaped = rest.first, ["\\", "\"", "n"].contains(escaped) else {
                            throw fail
                        }
                        value.append(escaped == "n" ? "\n" : escaped)
                        rest = rest.dropFirst()
                    } else {
                        value.append(character)
                    }
                }
                guard rest.first == "\"" else { throw fail }
                rest = rest.dropFirst()
                labels[String(label)] = value
                if rest.first == "," { rest = rest.dropFirst() }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw fail }
        let fields = rest.dropFirst().split(separator: " ")
        guard (1...2).contains(fields.count) else { throw fail }
        let text = String(fields[0])
        guard let value = text == "+Inf" ? Double.infinity : text == "-Inf" ? -Double.infinity : Double(text)
        else { throw fail }
        return Sample(name: String(name), labels: labels, value: value)
    }

    func checkHistograms() throws {
        for (name, type) in types where type == "histogram" {
            var series: [[String: String]: [(le: Double, count: Double)]] = [:]
            for sample in samples where sample.name == name + "_bucket" {
                guard let bound = sample.labels["le"] else {
                    throw Malformed(description: "\(name): a bucket without le")
                }
                var rest = sample.labels
                rest["le"] = nil
                series[rest, default: []].append(
                    (bound == "+Inf" ? .infinity : Double(bound) ?? .nan, sample.value))
            }
            for (labels, buckets) in series {
                let sorted = buckets.sorted { $0.le < $1.le }
                guard sorted.last?.le == .infinity else {
                    throw Malformed(description: "\(name): no +Inf bucket")
                }
                for (lower, upper) in zip(sorted, sorted.dropFirst()) where upper.count < lower.count {
                    throw Malformed(description: "\(name) \(labels): buckets are not cumulative")
                }
                let count = samples.first { $0.name == name + "_count" && $0.labels == labels }?.value
                guard count == sorted.last?.count else {
                    throw Malformed(
                        description: "\(name) \(labels): count \(count ?? -1) is not the +Inf bucket")
                }
            }
        }
    }

    /// The value of the sample `name` with exactly these labels (0 when absent).
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double {
        samples.first { $0.name == name && $0.labels == labels }?.value ?? 0
    }
}

/// `GET /metrics` of a real server: well-formed Prometheus text whose counters move with
/// the traffic.
@Suite("Metrics of a real server")
struct MetricsTests {
    static func scrape(_ connection: HTTPConnection) async throws -> PrometheusText {
        let response = try await connection.send(.GET, "/metrics")
        #expect(response.status == 200)
        #expect(response.headers.first(name: "content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
        return try PrometheusText(String(decoding: response.body, as: UTF8.self))
    }

    @Test("/metrics parses as Prometheus text and its counters move with traffic")
    func countersMove() async throws {
        let server = try ServerProcess()
        defer { server.kill() }
        let connection = try await HTTPConnection(host: "127.0.0.1", port: server.port)
        _ = try await connection.send(.PUT, "/v1/_tables/app/m", body: Array(#"{"key":["string"]}"#.utf8))
        let before = try await Self.scrape(connection)
        for index in 0..<5 {
            let put = try await connection.send(
                .PUT, "/v1/app/m/k\(index)", headers: ["content-type": "text/plain"], body: Array("v".utf8))
            #expect(put.status == 204)
        }
        #expect(try await connection.send(.GET, "/v1/app/m/missing?r=1").status == 404)
        let after = try await Self.scrape(connection)

        let puts = ["operation": "put", "status": "204"]
        #expect(
            after.value("kv_http_requests_total", puts) - before.value("kv_http_requests_total", puts) == 5)
        #expect(after.value("kv_http_requests_total", ["operation": "get", "status": "404"]) >= 1)
        #expect(after.types["kv_http_request_duration_seconds"] == "histogram")
        let writes = ["operation": "write", "outcome": "ok"]
        #expect(
            after.value("kv_quorum_operations_total", writes)
                - before.value("kv_quorum_operations_total", writes)
                == 5)
        #expect(after.value("kv_quorum_duration_seconds_count", ["operation": "write"]) >= 5)
        // On a node of its own each put was started on the event loop and applied by
        // the node's replica alone, and is counted as every write is.
        #expect(
            after.value("kv_writes_applied_locally_total") - before.value("kv_writes_applied_locally_total")
                == 5)
        #expect(
            after.value("kv_storage_write_batch_duration_seconds_count")
                > before.value("kv_storage_write_batch_duration_seconds_count"))
        #expect(after.value("kv_members", ["state": "self"]) == 1)
        #expect(after.value("kv_layout_version") >= 1)
        #expect(after.value("kv_http_connections") >= 1)
        #expect(after.value("kv_hints_pending") == 0)
        #expect(after.types["kv_anti_entropy_rounds_total"] == "counter")
        #expect(after.value("kv_process_resident_memory_bytes") > 1_000_000)
        // The missing row's read above asked for r=1, so the coordinator answered it;
        // this one is the node's own replica's alone, answered where it arrived.
        #expect(try await connection.send(.GET, "/v1/app/m/k0").status == 200)
        let local = try await Self.scrape(connection)
        #expect(
            local.value("kv_reads_answered_locally_total") - after.value("kv_reads_answered_locally_total")
                == 1)
        // RocksDB says what it holds: the rows just written sit in a memtable.
        #expect(after.value("kv_storage_memory_bytes", ["part": "memtables"]) > 0)
        #expect(after.types["kv_storage_memory_bytes"] == "gauge")
        await connection.close()
    }

    @Test("the reader refuses what is not Prometheus text")
    func readerRefusesGarbage() {
        for text in [
            "kv total 1", "kv_x{a=\"1\" 1", "kv_x{1a=\"b\"} 1", "kv_x one", "# TYPE kv_x nonsense",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1",
        ] {
            #expect(throws: PrometheusText.Malformed.self, "\(text)") { try PrometheusText(text) }
        }
    }
}
