import Dispatch
import Foundation
import Glibc
import Synchronization

/// Locates the package's executables for tests that run them as child processes.
public enum TestBinaries {
    /// Finds an executable of this package, which SwiftPM puts beside the test bundle.
    ///
    /// On Linux the bundle is the executable `.build/<config>/kvPackageTests.xctest`; on
    /// macOS it is a directory whose executable sits in `Contents/MacOS`. So look in the
    /// directories above every path that names the running test binary, nearest first.
    /// The environment variable `override` replaces the search.
    public static func path(of name: String, override: String) throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment[override] { return path }
        var starts: [URL] = []
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            starts.append(URL(fileURLWithPath: executable))
        }
        starts.append(URL(fileURLWithPath: CommandLine.arguments[0]))
        if let executable = Bundle.main.executableURL { starts.append(executable) }
        starts.append(Bundle.main.bundleURL)
        var tried: [String] = []
        for start in starts {
            var directory = start.standardizedFileURL
            for _ in 0..<5 {
                let candidate = directory.appendingPathComponent(name).path
                tried.append(candidate)
                if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
                directory = directory.deletingLastPathComponent()
            }
        }
        throw CrashTestError(
            "\(name) not found beside the test bundle (build it with `swift build`); tried \(tried)"
        )
    }
}

/// A failure of a test's own machinery (spawning, finding binaries).
public struct CrashTestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A splittable, seedable generator (SplitMix64), so a failing run can be replayed.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// A child process whose standard output is read on a thread of its own.
///
/// Spawned with posix_spawn rather than Foundation's `Process` so the pid can be killed
/// and reaped directly. Reading concurrently keeps the writer from blocking on a full
/// pipe.
///
/// The child inherits nothing but its standard streams. SwiftNIO opens its sockets
/// without close-on-exec, and tests run in parallel in one process: a child spawned
/// while another test's connection is open would hold a copy of that socket, and the
/// test's close would then not end the connection (its peer never sees end-of-file
/// while the child lives). The same holds for another child's pipe in the moment
/// between `pipe()` and marking it close-on-exec.
public final class ChildProcess: Sendable {
    /// How the child ended.
    public struct Status: Sendable {
        /// Whether it exited (rather than being killed by a signal).
        public var exitedNormally: Bool
        /// The exit code, or the signal number when killed.
        public var code: Int32
    }

    public let pid: pid_t
    private let readEnd: Int32
    private let output = Mutex<[UInt8]>([])
    private let readerDone = DispatchSemaphore(value: 0)
    private let endOfOutput = Mutex<Bool>(false)

    /// Starts `executable`; its standard error goes to `standardErrorPath` (appended) when
    /// given, otherwise to the test's own.
    public init(
        executable: String, arguments: [String], standardErrorPath: String? = nil,
        environment extra: [String: String] = [:]
    ) throws {
        var pipeEnds: [Int32] = [0, 0]
        // pipe2(O_CLOEXEC) is not visible to Swift, so set the flag right after pipe(); a
        // child spawned in between by another test does not keep it (see above).
        guard pipe(&pipeEnds) == 0 else { throw CrashTestError("pipe failed: errno \(errno)") }
        for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 onto fd 1 clears close-on-exec for the child's copy only.
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        if let standardErrorPath {
            posix_spawn_file_actions_addopen(
                &actions, 2, standardErrorPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        }
        try Self.closeInheritedDescriptors(&actions)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        let environment = ProcessInfo.processInfo.environment.merging(extra) { _, new in new }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for variable in envp { free(variable) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        close(pipeEnds[1])
        guard status == 0 else {
            close(pipeEnds[0])
            throw CrashTestError("posix_spawn \(executable) failed: \(status)")
        }
        self.pid = pid
        readEnd = pipeEnds[0]
        Thread { [self] in readUntilEnd() }.start()
    }

    /// Adds the last file action: close every descriptor above the standard streams.
    ///
    /// glibc 2.34 and later do it in one action, `posix_spawn_file_actions_addclosefrom_np`,
    /// which Swift's Glibc module does not import, so it is looked up by name. Without
    /// it, every descriptor open now is closed one by one (one opened after this call
    /// could still leak, which only the one-action form rules out).
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) throws {
        typealias CloseFrom =
            @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
            let status = closeFrom(&actions, 3)
            guard status == 0 else { throw CrashTestError("closing inherited descriptors failed: \(status)") }
            return
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for descriptor in open.compactMap({ Int32($0) }) where descriptor > 2 {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }
    }

    private func readUntilEnd() {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if count > 0 {
                output.withLock { $0.append(contentsOf: buffer[0..<count]) }
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        endOfOutput.withLock { $0 = true }
        readerDone.signal()
    }

    /// What the child printed so far.
    public func outputSoFar() -> [UInt8] { output.withLock { $0 } }

    /// Whether the child's output has ended: it exited (or closed its standard output).
    public func reachedEndOfOutput() -> Bool { endOfOutput.withLock { $0 } }

    /// Sends SIGKILL.
    public func kill() {
        _ = Glibc.kill(pid, SIGKILL)
    }

    /// Reaps the child.
    public func wait() -> Status {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import as macros.
        let signal = status & 0x7F
        return signal == 0
            ? Status(exitedNormally: true, code: (status >> 8) & 0xFF)
            : Status(exitedNormally: false, code: signal)
    }

    /// Waits for end-of-file on the child's output (the child is gone) and returns it all.
    public func finishReading() -> [UInt8] {
        readerDone.wait()
        close(readEnd)
        return outputSoFar()
    }
}
