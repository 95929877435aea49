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
    ],
    dependencies: [
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1")
    ],
    targets: [
        // Pure vocabulary of the store: keys, values, versions, errors. Standard library only.
        .target(name: "KVCore", swiftSettings: strict),
        // The storage engine protocol family, shared by every engine.
        .target(name: "KVStorage", dependencies: ["KVCore"], swiftSettings: strict),
        // Ordered in-memory engine: the reference model for every other engine.
        .target(name: "KVStorageMemory", dependencies: ["KVStorage"], swiftSettings: strict),
        // Debian's librocksdb-dev, through its C API.
        .systemLibrary(
            name: "CRocksDB",
            pkgConfig: "rocksdb",
            providers: [.apt(["librocksdb-dev"])]
        ),
        // The embedded default engine.
        .target(
            name: "KVStorageRocksDB",
            dependencies: ["KVStorage", "CRocksDB"],
            swiftSettings: strict
        ),
        // Test helper: writes through the RocksDB engine from several threads and
        // reports every committed write, so a test can kill -9 it and check.
        .executableTarget(
            name: "StorageCrashWriter",
            dependencies: ["KVStorageRocksDB"],
            swiftSettings: strict
        ),
        // Release-build storage benchmark (scripts/bench-storage.sh); never a test.
        .executableTarget(
            name: "StorageBenchmark",
            dependencies: ["KVStorageMemory", "KVStorageRocksDB"],
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
        .testTarget(
            name: "KVStorageTests",
            dependencies: [
                "KVStorageMemory",
                "KVStorageRocksDB",
                "StorageCrashWriter",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "ArchitectureTests", swiftSettings: strict),
    ]
)
