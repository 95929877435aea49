// swift-tools-version: 6.0
// The PostgreSQL drivers side by side, for the engine on PostgreSQL
// (scripts/bench-postgres-drivers.sh): libpq, which the engine uses, and postgres-nio,
// the Swift server ecosystem's driver. A package of its own, so the store does not
// build postgres-nio for a question it answers once.
import PackageDescription

let package = Package(
    name: "postgres-drivers",
    dependencies: [
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0")
    ],
    targets: [
        .systemLibrary(name: "CLibpq", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .executableTarget(
            name: "PostgresDrivers",
            dependencies: ["CLibpq", .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
