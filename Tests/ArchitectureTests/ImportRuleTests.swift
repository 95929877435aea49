import Foundation
import Testing

/// Enforces the import rules of ARCHITECTURE.md by reading every `import` line under
/// `Sources/<target>/`. A target that is not listed here fails the test, so a new target
/// must state its rule before it can land.
@Suite("Architecture import rules")
struct ImportRuleTests {
    /// What each target may import. Standard library modules that every target may use
    /// are not listed; anything else (Foundation, NIO, …) must be.
    static let allowedImports: [String: Set<String>] = [
        // Pure vocabulary: standard library only. No Foundation, no NIO, no clocks.
        "KVCore": [],
        "KVStorage": ["KVCore"],
        // Pure cluster logic: no NIO, no Foundation clocks, no system randomness, no logging.
        "KVCluster": ["KVCore"],
        "KVWire": ["KVCore", "KVCluster", "NIOCore", "Crypto", "Synchronization"],
        // Access tokens: made and checked by hash, nothing else.
        "KVAccess": ["KVCore", "Crypto"],
        "KVSimulation": ["KVCore", "KVCluster", "KVStorage", "KVStorageMemory", "KVReplica"],
        // The replica's storage: shared by the node and the simulator, so no NIO.
        "KVReplica": ["KVCore", "KVCluster", "KVStorage", "Synchronization", "Crypto"],
        "Simulator": ["KVSimulation", "Foundation"],
        "KVStorageMemory": ["KVCore", "KVStorage", "Synchronization"],
        "KVStorageRocksDB": ["KVCore", "KVStorage", "CRocksDB", "CRocksDBFlush", "Glibc", "Synchronization"],
        // The engine contract over database sessions, and the engines on real databases.
        "KVStorageDatabase": ["KVCore", "KVStorage", "Foundation", "Synchronization"],
        "KVStorageSQLite": ["KVCore", "KVStorage", "KVStorageDatabase", "CSQLite", "Glibc"],
        "KVStoragePostgres": ["KVCore", "KVStorage", "KVStorageDatabase", "CPostgres"],
        "KVStorageMariaDB": ["KVCore", "KVStorage", "KVStorageDatabase", "CMariaDB", "Crypto"],
        "KVStorageRedis": ["KVCore", "KVStorage", "KVStorageDatabase", "CHiredis"],
        "CSQLite": [],
        "CPostgres": [],
        "CMariaDB": [],
        "CHiredis": [],
        "StorageCrashWriter": ["KVCore", "KVStorage", "KVStorageRocksDB", "Foundation", "Glibc"],
        "StorageBenchmark": [
            "KVCore", "KVStorage", "KVStorageMemory", "KVStorageRocksDB", "Foundation", "Glibc",
            "KVStorageDatabase", "KVStorageSQLite", "KVStoragePostgres", "KVStorageMariaDB", "KVStorageRedis",
        ],
        // A system-library target: a module map and a header, no Swift.
        "CRocksDB": [],
        "CRocksDBFlush": [],
        "CMalloc": [],
        // The node shell: storage on a thread pool, logs. No HTTP, no engines by name.
        "KVNode": [
            "KVCore", "KVStorage", "KVCluster", "KVWire", "KVReplica", "NIOCore", "NIOPosix",
            "NIOConcurrencyHelpers", "Logging", "Glibc", "CoreMetrics", "KVAccess", "NIOSSL", "Crypto",
            "Synchronization",
        ],
        // Front end: translates HTTP to KeyValueService; knows no node, cluster or engine.
        // The Redis protocol: no NIO channels, only buffers.
        "KVRESP": ["KVCore", "NIOCore", "FoundationEssentials", "Synchronization"],
        // Update functions: the WebAssembly sandbox, no I/O but its own thread pool.
        "KVFunctions": ["KVCore", "WasmKit", "WasmParser", "WAT", "NIOPosix", "Synchronization"],
        "KVServer": [
            "KVCore", "KVRESP", "KVFunctions", "NIOCore", "NIOPosix", "NIOHTTP1", "NIOConcurrencyHelpers",
            "Logging",
            "FoundationEssentials", "Synchronization", "CoreMetrics", "KVAccess", "NIOSSL", "Crypto",
        ],
        // Client library: no server code.
        "KVClient": [
            "KVCore", "NIOCore", "NIOPosix", "NIOHTTP1", "FoundationEssentials", "Glibc", "NIOSSL", "NIOTLS",
            "Synchronization",
        ],
        // The executable: the only place that reads flags, files and the environment.
        "kv": [
            "KVCore", "KVStorage", "KVStorageMemory", "KVStorageRocksDB", "KVStorageDatabase",
            "KVStorageSQLite",
            "KVStoragePostgres", "KVStorageMariaDB", "KVStorageRedis", "KVNode", "KVServer", "KVClient",
            "KVCluster", "KVWire", "KVAccess", "KVRESP", "KVFunctions", "CMalloc", "ArgumentParser", "Yams",
            "Logging",
            "ServiceLifecycle",
            "NIOCore",
            "NIOPosix",
            "NIOConcurrencyHelpers", "Histogram", "UnixSignals", "Foundation", "Glibc", "Metrics",
            "Prometheus", "NIOSSL", "X509", "SwiftASN1", "Crypto",
        ],
        "HTTPBaselineServer": ["KVCore", "KVServer", "Logging", "NIOCore", "NIOPosix", "NIOHTTP1"],
    ]

    /// Targets whose code must replay exactly from a seed: no sleeping, no clock and no
    /// randomness but a generator passed in. Time comes in as an argument (`now:`) or
    /// through a clock the runtime injects.
    static let deterministicTargets = ["KVCore", "KVCluster", "KVReplica", "KVSimulation"]

    /// Calls that read time, sleep or draw unseeded randomness.
    static let forbiddenCalls = [
        "Task.sleep", "clock_gettime", "gettimeofday", "Date(", ".now()", "ContinuousClock",
        "SuspendingClock", "DispatchTime", "SystemRandomNumberGenerator", "arc4random", "drand48",
    ]

    /// The forbidden calls in one source text, and every `random`, `shuffled`,
    /// `shuffle` or `randomElement` call whose arguments pass no generator (`using:`).
    static func nondeterministicCalls(in source: String) -> [String] {
        let code = source.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.range(of: "//").map { String(line[..<$0.lowerBound]) } ?? String(line)
        }.joined(separator: "\n")
        var found = forbiddenCalls.filter { code.contains($0) }
        for call in [".random(", ".shuffled(", ".shuffle(", ".randomElement("] {
            var rest = code[...]
            while let start = rest.range(of: call) {
                // The argument list, up to its closing parenthesis.
                var depth = 1
                var end = start.upperBound
                while end < rest.endIndex, depth > 0 {
                    if rest[end] == "(" { depth += 1 }
                    if rest[end] == ")" { depth -= 1 }
                    end = rest.index(after: end)
                }
                let arguments = rest[start.upperBound..<end]
                if !arguments.contains("using:") { found.append("\(call)\(arguments)") }
                rest = rest[end...]
            }
        }
        return found
    }

    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// The module names imported by one Swift source text.
    static func importedModules(in source: String) -> [String] {
        source.split(whereSeparator: \.isNewline).compactMap { line -> String? in
            var words = line.split(separator: " ").map(String.init)
            // Attributes such as @testable or @preconcurrency come first.
            while let first = words.first, first.hasPrefix("@") { words.removeFirst() }
            // Access modifiers (public import, internal import …).
            if let first = words.first,
                ["public", "package", "internal", "fileprivate", "private"].contains(first)
            {
                words.removeFirst()
            }
            guard words.first == "import", words.count >= 2 else { return nil }
            // `import struct Module.Type` names a kind first.
            let kinds: Set = ["struct", "class", "enum", "protocol", "func", "var", "let", "typealias"]
            let path = kinds.contains(words[1]) && words.count >= 3 ? words[2] : words[1]
            return String(path.split(separator: ".").first!)
        }
    }

    static func sourceFiles(of target: String) -> [URL] {
        let directory = packageRoot.appendingPathComponent("Sources").appendingPathComponent(target)
        guard let walker = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil)
        else {
            return []
        }
        return walker.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
    }

    @Test func everyTargetHasARule() throws {
        let sources = Self.packageRoot.appendingPathComponent("Sources")
        let targets = try FileManager.default.contentsOfDirectory(atPath: sources.path).filter {
            !$0.hasPrefix(".")
        }
        #expect(!targets.isEmpty)
        for target in targets {
            #expect(
                Self.allowedImports[target] != nil, "target \(target) has no import rule in ImportRuleTests")
        }
    }

    @Test func targetsImportOnlyWhatTheirRuleAllows() throws {
        var checkedFiles = 0
        for (target, allowed) in Self.allowedImports {
            let permitted = allowed.union(["Swift", "_Concurrency", "_StringProcessing"])
            for file in Self.sourceFiles(of: target) {
                checkedFiles += 1
                let source = try String(contentsOf: file, encoding: .utf8)
                for module in Self.importedModules(in: source) {
                    #expect(
                        permitted.contains(module),
                        "\(target)/\(file.lastPathComponent) imports \(module), which its rule forbids")
                }
            }
        }
        #expect(checkedFiles > 10, "the import check found only \(checkedFiles) source files")
    }

    @Test func deterministicTargetsReadNoClockAndDrawNoUnseededRandomness() throws {
        var checkedFiles = 0
        for target in Self.deterministicTargets {
            for file in Self.sourceFiles(of: target) {
                checkedFiles += 1
                let source = try String(contentsOf: file, encoding: .utf8)
                let calls = Self.nondeterministicCalls(in: source)
                #expect(calls.isEmpty, "\(target)/\(file.lastPathComponent) calls \(calls)")
            }
        }
        #expect(checkedFiles > 10, "the determinism check found only \(checkedFiles) source files")
    }

    @Test func nondeterminismDetectorFindsEveryForm() {
        let source = """
            try await Task.sleep(for: .seconds(1))
            let a = Int.random(in: 0..<10)
            let b = Int.random(in: 0..<(n + 1), using: &random)
            let c = items.shuffled()
            let d = items.randomElement(using: &random)
            var g = SystemRandomNumberGenerator()
            // Date() in a comment is fine
            """
        #expect(
            Self.nondeterministicCalls(in: source) == [
                "Task.sleep", "SystemRandomNumberGenerator", ".random(in: 0..<10)", ".shuffled()",
            ])
    }

    @Test func importParserUnderstandsEveryForm() {
        let source = """
            import Foundation
            @testable import KVCore
            @preconcurrency import NIOCore
            public import struct Synchronization.Mutex
            // import Commented
            let importantValue = 1
            """
        #expect(Self.importedModules(in: source) == ["Foundation", "KVCore", "NIOCore", "Synchronization"])
    }
}
