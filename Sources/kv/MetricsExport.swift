import Foundation
import Metrics
import Prometheus

/// The process's metrics backend: swift-metrics bootstrapped with Prometheus, and the
/// page `GET /metrics` answers with.
enum MetricsExport {
    /// Latency buckets from 100 µs to 10 s: reads from memory take tens of microseconds,
    /// synced writes milliseconds, quorum timeouts seconds.
    static let buckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2_500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2_500), .seconds(5), .seconds(10),
    ]

    /// Bootstraps swift-metrics (once per process) and returns what makes the page: the
    /// node's read-on-demand metrics brought up to date, the process's memory, then
    /// every metric in the Prometheus text format.
    static func bootstrap(service: DeferredService) -> @Sendable () async -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = buckets
        factory.valueHistogramBuckets["kv_storage_write_batch_commands"] = [
            1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
        ]
        MetricsSystem.bootstrap(factory)
        let resident = Gauge(label: "kv_process_resident_memory_bytes")
        let descriptors = Gauge(label: "kv_process_open_fds")
        return {
            await service.refreshMetrics()
            if let pages = residentPages() { resident.record(pages * Int(sysconf(Int32(_SC_PAGESIZE)))) }
            if let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
                descriptors.record(open.count)
            }
            return registry.emitToBuffer()
        }
    }

    /// The process's resident pages, from `/proc/self/statm`.
    private static func residentPages() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? Int(fields[1]) : nil
    }
}
