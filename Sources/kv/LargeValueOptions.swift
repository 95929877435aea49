import ArgumentParser
import KVNode

/// `kv server`'s settings for large values: when chunks no row names any more are
/// collected (how large a value may be is `--max-value-bytes`). Each comes from its flag, its environment
/// variable, the YAML file or the default, like every other setting.
struct LargeValueOptions: ParsableArguments {
    @Option(
        name: .customLong("large-value-grace-seconds"),
        help:
            "Seconds before chunks no row names (overwritten, deleted, abandoned uploads) are collected; an upload must finish within half (default 3600)."
    )
    var graceSeconds: Int?
    @Option(
        name: .customLong("chunk-collection-interval-ms"),
        help: "Milliseconds between passes of the chunk collector (default 60000).")
    var collectionIntervalMilliseconds: Int?

    /// The YAML keys, as ``ServerConfigFile`` reads them.
    struct File: Decodable {
        var largeValueGraceSeconds: Int?
        var chunkCollectionIntervalMilliseconds: Int?

        enum CodingKeys: String, CodingKey {
            case largeValueGraceSeconds = "large_value_grace_seconds"
            case chunkCollectionIntervalMilliseconds = "chunk_collection_interval_ms"
        }
    }

    /// Applies the settings; `environment` and `file` as for every other setting.
    func apply(
        to cluster: inout ClusterSettings, file: File, environment: [String: String]
    ) throws {
        let sources = SettingSources(environment: environment)
        cluster.largeValueGraceMilliseconds =
            Int64(
                try sources.resolve(
                    graceSeconds, "KV_LARGE_VALUE_GRACE_SECONDS", file.largeValueGraceSeconds,
                    Int(cluster.largeValueGraceMilliseconds / 1000))) * 1000
        cluster.chunkCollectionIntervalMilliseconds = Int64(
            try sources.resolve(
                collectionIntervalMilliseconds, "KV_CHUNK_COLLECTION_INTERVAL_MS",
                file.chunkCollectionIntervalMilliseconds, Int(cluster.chunkCollectionIntervalMilliseconds)))
    }
}
