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
    private let counters = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])
    private let timers = NIOLockedValueBox<[String: CoreMetrics.Timer]>([:])
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
        let key = "\(operation) \(status.code)"
        let counter = counters.withLockedValue { counters in
            if let known = counters[key] { return known }
            let made = CoreMetrics.Counter(
                label: "kv_http_requests_total",
                dimensions: [("operation", operation), ("status", String(status.code))])
            counters[key] = made
            return made
        }
        counter.increment()
        let timer = timers.withLockedValue { timers in
            if let known = timers[operation] { return known }
            let made = CoreMetrics.Timer(
                label: "kv_http_request_duration_seconds", dimensions: [("operation", operation)])
            timers[operation] = made
            return made
        }
        timer.recordNanoseconds(nanoseconds)
    }

    /// The operation a request asks for, as a metric label: a fixed, small set, so a
    /// client cannot make the metrics grow by inventing paths.
    static func operation(method: HTTPMethod, path: [[UInt8]]) -> String {
        let first = path.first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        switch first {
        case "health": return "health"
        case "metrics": return "metrics"
        case "v1": break
        default: return "other"
        }
        guard path.count >= 2 else { return "other" }
        switch String(decoding: path[1], as: UTF8.self) {
        case "_node": return "node"
        case "_cluster": return "cluster"
        case "_namespaces", "_tables": return "tables"
        case "_scan": return "scan"
        case "_batch": return "batch"
        case "_counter": return "counter"
        default:
            switch method {
            case .GET: return "get"
            case .HEAD: return "head"
            case .PUT: return "put"
            case .DELETE: return "delete"
            default: return "other"
            }
        }
    }
}
