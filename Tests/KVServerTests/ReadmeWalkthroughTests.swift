import Foundation
import KVTestSupport
import Testing

/// Runs the README's walkthroughs exactly as written against a real server, so they
/// cannot rot. Only the port (the README uses 7700, the test an ephemeral one) and the
/// binary directory (release in the README, the build under test here) are substituted.
/// Each `# → text` line after a command must appear in that command's output.
@Suite("README walkthroughs")
struct ReadmeWalkthroughTests {
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// The shell block that follows `<!-- walkthrough:NAME -->` in the README.
    static func walkthrough(_ name: String) throws -> [String] {
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        guard let marker = readme.range(of: "<!-- walkthrough:\(name) -->") else {
            throw CrashTestError("README.md has no walkthrough:\(name) block")
        }
        let after = readme[marker.upperBound...]
        guard let open = after.range(of: "```sh\n"), let close = after[open.upperBound...].range(of: "```")
        else {
            throw CrashTestError("the walkthrough:\(name) block is not a ```sh fence")
        }
        return after[open.upperBound..<close.lowerBound].split(
            separator: "\n", omittingEmptySubsequences: false
        ).map(String.init)
    }

    /// Turns walkthrough lines into a script that checks every `# →` expectation.
    static func script(_ lines: [String]) -> String {
        var commands: [(command: String, expectations: [String])] = []
        var pending = ""
        for line in lines {
            if line.hasPrefix("# → ") {
                if !commands.isEmpty {
                    commands[commands.count - 1].expectations.append(String(line.dropFirst(4)))
                }
                continue
            }
            if line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            if line.hasSuffix("\\") {
                pending += line.dropLast() + " "
                continue
            }
            commands.append((pending + line, []))
            pending = ""
        }
        var script = "set -euo pipefail\n"
        for (index, entry) in commands.enumerated() {
            if entry.expectations.isEmpty {
                script += entry.command + "\n"
                continue
            }
            script += "__out=$( { \(entry.command) ; } 2>&1 )\nprintf '%s\\n' \"$__out\"\n"
            for expected in entry.expectations {
                let quoted = expected.replacingOccurrences(of: "'", with: "'\\''")
                script +=
                    "grep -qF -- '\(quoted)' <<<\"$__out\" || { echo \"walkthrough command \(index + 1) did not print: \(quoted)\"; exit 1; }\n"
            }
        }
        return script
    }

    /// Each walkthrough runs against a fresh `kv dev` cluster, as the README's first
    /// command starts one.
    @Test(arguments: ["curl", "cli", "large", "redis", "functions"])
    func walkthroughRunsAsWritten(name: String) async throws {
        // Processes are started and waited for on a thread of their own; the checks run
        // here, in the test.
        let run = try await offCooperativePool { try Self.run(name) }
        // A block that lost its commands or expectations must not pass.
        #expect(run.checks > 5, "the walkthrough checks too little")
        #expect(run.status == 0, "walkthrough \(name) failed:\n\(run.printed)")
        // Ctrl-C stops every node cleanly.
        #expect(run.stopped.exitedNormally && run.stopped.code == 0, "kv dev exited with \(run.stopped)")
        #expect(run.devOutput.contains("kv dev: stopped"))
    }

    /// What running one walkthrough against a fresh `kv dev` showed.
    struct Run: Sendable {
        var checks: Int
        var status: Int32
        var printed: String
        var stopped: ChildProcess.Status
        var devOutput: String
    }

    static func run(_ name: String) throws -> Run {
        // The large values walkthrough also uses the minikeyvalue listeners, as
        // `./scripts/start.sh --minikeyvalue` opens them, and the Redis one the RESP
        // listeners of `--resp`.
        let cluster = try DevCluster(
            arguments: name == "large" ? ["--minikeyvalue"] : name == "redis" ? ["--resp"] : [])
        let binaryDirectory = URL(fileURLWithPath: try TestBinaries.path(of: "kv", override: "KV_BINARY"))
            .deletingLastPathComponent().path
        var script = script(try walkthrough(name))
        let checks = script.components(separatedBy: "grep -qF").count - 1
        for node in 0..<3 {
            script = script.replacingOccurrences(
                of: "127.0.0.1:\(7700 + node)", with: "127.0.0.1:\(cluster.basePort + node)")
            script = script.replacingOccurrences(
                of: "127.0.0.1:\(9700 + node)", with: "127.0.0.1:\(cluster.basePort + 2000 + node)")
            script = script.replacingOccurrences(
                of: "-p \(10700 + node)", with: "-p \(cluster.basePort + 3000 + node)")
        }
        script = script.replacingOccurrences(of: "$PWD/.build/release", with: binaryDirectory)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        process.currentDirectoryURL = Self.packageRoot
        var environment = ProcessInfo.processInfo.environment
        environment["KV_URL"] = "http://127.0.0.1:\(cluster.basePort)"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let stopped = cluster.stop()
        return Run(
            checks: checks, status: process.terminationStatus, printed: printed, stopped: stopped,
            devOutput: cluster.output)
    }
}
