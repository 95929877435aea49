// swift-tools-version:6.2
import PackageDescription

/// Every target of this package builds in Swift 6 language mode with warnings
/// treated as errors, so "no warnings" is enforced by the build, not by review.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "kv",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "KVCore", targets: ["KVCore"]),
        .library(name: "KVStorage", targets: ["KVStorage"]),
        .library(name: "KVStorageMemory", targets: ["KVStorageMemory"]),
        .library(name: "KVStorageRocksDB", targets: ["KVStorageRocksDB"]),
        .library(name: "KVStorageSQLite", targets: ["KVStorageSQLite"]),
        .library(name: "KVStoragePostgres", targets: ["KVStoragePostgres"]),
        .library(name: "KVStorageMariaDB", targets: ["KVStorageMariaDB"]),
        .library(name: "KVStorageRedis", targets: ["KVStorageRedis"]),
        // The client library applications depend on (docs/client.md).
        .library(name: "KVClient", targets: ["KVClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/swiftwasm/WasmKit.git", from: "0.4.2"),
    ],
    targets: [
        // Pure vocabulary of the store: keys, values, versions, errors. Standard library only.
        .target(name: "KVCore", swiftSettings: strict),
        // Pure cluster state machines and values (layout now; coordination, membership and
        // anti-entropy later): no NIO, no clocks, no system randomness.
        .target(name: "KVCluster", dependencies: ["KVCore"], swiftSettings: strict),
        // The replica's storage: the one interpreter of storage commands over any engine
        // (ReplicaStore), the anti-entropy index and the hint store. No NIO, so the
        // simulator runs the same code the node does.
        .target(
            name: "KVReplica",
            dependencies: [
                "KVCore", "KVCluster", "KVStorage", .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Making and checking access tokens (a hash of each, never the token, is stored).
        .target(
            name: "KVAccess",
            dependencies: ["KVCore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // The storage engine protocol family, shared by every engine.
        .target(name: "KVStorage", dependencies: ["KVCore"], swiftSettings: strict),
        // Ordered in-memory engine: the reference model for every other engine.
        .target(name: "KVStorageMemory", dependencies: ["KVStorage"], swiftSettings: strict),
        // glibc's malloc tuning (mallopt), for the server's memory behaviour.
        .systemLibrary(name: "CMalloc"),
        // Debian's librocksdb-dev, through its C API.
        .systemLibrary(
            name: "CRocksDB",
            pkgConfig: "rocksdb",
            providers: [.apt(["librocksdb-dev"])]
        ),
        // The one RocksDB call its C API lacks: an atomic flush of several column families.
        .target(name: "CRocksDBFlush", dependencies: ["CRocksDB"]),
        // The embedded default engine.
        .target(
            name: "KVStorageRocksDB",
            dependencies: ["KVStorage", "CRocksDB", "CRocksDBFlush"],
            swiftSettings: strict
        ),
        // The engine contract over any database session: pooling, snapshots, cursors.
        .target(name: "KVStorageDatabase", dependencies: ["KVCore", "KVStorage"], swiftSettings: strict),
        // Debian's libsqlite3-dev, libpq-dev, libmariadb-dev and libhiredis-dev. hiredis is included
        // by its path, since its pkg-config flags carry a define SwiftPM refuses.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CMariaDB", pkgConfig: "libmariadb", providers: [.apt(["libmariadb-dev"])]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        // The engines over real databases, one target each.
        .target(
            name: "KVStorageSQLite", dependencies: ["KVStorage", "KVStorageDatabase", "CSQLite"],
            swiftSettings: strict),
        .target(
            name: "KVStoragePostgres", dependencies: ["KVStorage", "KVStorageDatabase", "CPostgres"],
            swiftSettings: strict),
        .target(
            name: "KVStorageMariaDB",
            dependencies: [
                "KVStorage", "KVStorageDatabase", "CMariaDB",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .target(
            name: "KVStorageRedis", dependencies: ["KVStorage", "KVStorageDatabase", "CHiredis"],
            swiftSettings: strict),
        // The node: implements KeyValueService over a storage engine, running blocking
        // storage calls on a thread pool.
        .target(
            name: "KVNode",
            dependencies: [
                "KVCore", "KVStorage", "KVCluster", "KVWire", "KVReplica", "KVAccess",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // The Redis protocol: parsing, replies and the commands, over any KeyValueService.
        .target(
            name: "KVRESP",
            dependencies: ["KVCore", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // Update functions: WebAssembly modules checked on registration and run in a
        // sandbox with no imports, under fuel, memory and time limits.
        .target(
            name: "KVFunctions",
            dependencies: [
                "KVCore",
                .product(name: "WasmKit", package: "WasmKit"),
                .product(name: "WasmParser", package: "WasmKit"),
                .product(name: "WAT", package: "WasmKit"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // HTTP and RESP front ends over any KeyValueService, on NIOHTTP1 directly.
        .target(
            name: "KVServer",
            dependencies: [
                "KVCore", "KVAccess", "KVRESP", "KVFunctions",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // Swift client library: speaks the HTTP API, no server code.
        .target(
            name: "KVClient",
            dependencies: [
                "KVCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The one binary: server, client commands. Only here are flags, the YAML file
        // and the environment read, and logging bootstrapped.
        .executableTarget(
            name: "kv",
            dependencies: [
                "KVCore", "KVStorage", "KVStorageRocksDB", "KVStorageMemory", "KVStorageDatabase",
                "KVStorageSQLite",
                "KVStoragePostgres", "KVStorageMariaDB", "KVStorageRedis", "KVNode", "KVServer",
                "KVClient", "KVCluster", "KVWire", "KVAccess", "KVRESP", "KVFunctions", "CMalloc",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Benchmark servers (scripts/bench-http.sh): a bare NIOHTTP1 handler answering
        // fixed bytes, and kv's HTTP layer over a service answering the same bytes.
        .executableTarget(
            name: "HTTPBaselineServer",
            dependencies: [
                "KVCore", "KVServer",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Test helper: writes through the RocksDB engine from several threads and
        // reports every committed write, so a test can kill -9 it and check.
        .executableTarget(
            name: "StorageCrashWriter",
            dependencies: ["KVStorageRocksDB"],
            swiftSettings: strict
        ),
        // The node-to-node protocol: binary, versioned, length-prefixed frames, and the
        // handshake that proves both ends hold the cluster's secret.
        .target(
            name: "KVWire",
            dependencies: [
                "KVCore", "KVCluster",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Deterministic simulation: nodes' coordinators over in-memory engines, a seeded
        // network with faults, virtual time, and the safety checkers.
        .target(
            name: "KVSimulation",
            dependencies: ["KVCore", "KVCluster", "KVStorage", "KVStorageMemory", "KVReplica"],
            swiftSettings: strict
        ),
        // Runs or replays simulations from the command line (`--seed N --trace`).
        .executableTarget(
            name: "Simulator",
            dependencies: ["KVSimulation"],
            swiftSettings: strict
        ),
        // Release-build storage benchmark (scripts/bench-storage.sh); never a test.
        .executableTarget(
            name: "StorageBenchmark",
            dependencies: [
                "KVStorageMemory", "KVStorageRocksDB", "KVStorageDatabase", "KVStorageSQLite",
                "KVStoragePostgres",
                "KVStorageMariaDB", "KVStorageRedis",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVCoreTests",
            dependencies: [
                "KVCore",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        // Shared by the test targets: child processes, locating the package's binaries,
        // waiting for a condition, a memory engine whose writes a test can stall or fail.
        .target(
            name: "KVTestSupport", dependencies: ["KVWire", "KVCore", "KVStorage", "KVStorageMemory"],
            path: "Tests/KVTestSupport",
            swiftSettings: strict),
        .testTarget(
            name: "KVStorageTests",
            dependencies: [
                "KVTestSupport",
                "KVStorageMemory",
                "KVStorageRocksDB",
                "KVStorageSQLite",
                "KVStoragePostgres",
                "KVStorageMariaDB",
                "KVStorageRedis",
                "StorageCrashWriter",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "ArchitectureTests", swiftSettings: strict),
        .testTarget(
            name: "KVClusterTests",
            dependencies: [
                "KVCluster",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVWireTests",
            dependencies: [
                "KVWire", "KVCluster", "KVCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVNodeTests",
            dependencies: [
                "KVNode", "KVCluster", "KVCore", "KVStorage", "KVStorageMemory", "KVReplica", "KVWire",
                "KVTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVReplicaTests",
            dependencies: [
                "KVReplica", "KVCluster", "KVCore", "KVStorage", "KVStorageMemory", "KVTestSupport",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVSimulationTests",
            dependencies: ["KVSimulation", "KVCluster"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVFunctionsTests",
            dependencies: ["KVFunctions", "KVCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KVServerTests",
            dependencies: [
                "KVTestSupport", "KVCore", "KVStorage", "KVStorageMemory", "KVStorageRocksDB", "KVNode",
                "KVServer", "KVReplica", "KVStorageDatabase", "KVStorageSQLite", "KVStoragePostgres",
                "KVStorageMariaDB",
                "KVStorageRedis",
                "KVClient", "KVCluster", "KVWire", "KVAccess", "KVRESP", "kv",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ],
    // RocksDB's headers need C++17.
    cxxLanguageStandard: .cxx17
)
