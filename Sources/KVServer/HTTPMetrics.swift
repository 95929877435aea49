import CoreMetrics
import NIOConcurrencyHelpers
import NIOHTTP1

/// The HTTP front end's metrics, through swift-metrics (whatever backend the process
/// bootstrapped; none in tests): requests per operation and status, their latency per
/// operation, and open connections. `GET /metrics` answers with what ``exporter`` makes.
public final class HTTPMetrics: Sendable {
    /// Produces the `/metrics` page (Prometheus text format), or `nil` when the process
    /// exports no metrics (then `/metrics` is `404`).
    let exporter: (@Sendable () async -> [UInt8])?
    /// A request's metric series: its operation (one of a few literals) and status.
    private struct Series: Hashable {
        var operation: String
        var status: UInt
    }
    private let series = NIOLockedValueBox<
        [Series: (count: CoreMetrics.Counter, latency: CoreMetrics.Timer)]
    >([:])
    /// Open HTTP connections.
    let connections = Gauge(label: "kv_http_connections")
    /// Connections refused because every one was busy.
    let refusedConnections = CoreMetrics.Counter(label: "kv_http_refused_connections_total")

    /// Creates the metrics; `exporter` makes the `/metrics` page.
    public init(exporter: (@Sendable () async -> [UInt8])? = nil) {
        self.exporter = exporter
    }

    /// Counts one answered request and its latency.
    func record(operation: String, status: HTTPResponseStatus, nanoseconds: Int64) {
        series(operation: operation, status: status).record(nanoseconds: nanoseconds)
    }

    /// The metrics of requests for one operation answered with one status, which a
    /// connection keeps for its next request (mostly the same): one lookup under a lock
    /// per distinct answer rather than per request.
    struct RequestSeries {
        let operation: String
        let status: UInt
        let count: CoreMetrics.Counter
        let latency: CoreMetrics.Timer

        /// Whether these are the metrics of `operation` answered with `status`.
        func matches(_ operation: String, _ status: HTTPResponseStatus) -> Bool {
            self.status == status.code && self.operation == operation
        }

        /// Counts one request and its latency.
        func record(nanoseconds: Int64) {
            count.increment()
            latency.recordNanoseconds(nanoseconds)
        }
    }

    /// The metrics of `operation` answered with `status`, made on first use.
    func series(operation: String, status: HTTPResponseStatus) -> RequestSeries {
        // Keyed without building a string.
        let key = Series(operation: operation, status: status.code)
        let metrics = series.withLockedValue { series in
            if let known = series[key] { return known }
            let made = (
                count: CoreMetrics.Counter(
                    label: "kv_http_requests_total",
                    dimensions: [("operation", operation), ("status", String(status.code))]),
                latency: CoreMetrics.Timer(
                    label: "kv_http_request_duration_seconds", dimensions: [("operation", operation)])
            )
            series[key] = made
            return made
        }
        return RequestSeries(
            operation: operation, status: status.code, count: metrics.count, latency: metrics.latency)
    }

    /// The operation a request asks for, as a metric label: a fixed, small set, so a
    /// client cannot make the metrics grow by inventing paths.
    static func operation(method: HTTPMethod, path: [[UInt8]]) -> String {
        // Compared as bytes, answered with literals: nothing is allocated per request.
        guard let first = path.first else { return "other" }
        if first == Self.health { return "health" }
        if first == Self.metrics { return "metrics" }
        guard first == Self.version, path.count >= 2 else { return "other" }
        let second = path[1]
        guard second.first == UInt8(ascii: "_") else {
            switch method {
            case .GET: return "get"
            case .HEAD: return "head"
            case .PUT: return "put"
            case .DELETE: return "delete"
            default: return "other"
            }
        }
        return Self.internalRoutes.first { $0.segment == second }?.operation ?? "other"
    }

    private static let health = Array("health".utf8)
    private static let metrics = Array("metrics".utf8)
    private static let version = Array("v1".utf8)
    private static let internalRoutes: [(segment: [UInt8], operation: String)] = [
        ("_node", "node"), ("_cluster", "cluster"), ("_namespaces", "tables"), ("_tables", "tables"),
        ("_scan", "scan"), ("_batch", "batch"), ("_counter", "counter"),
    ].map { (Array($0.0.utf8), $0.1) }
}
