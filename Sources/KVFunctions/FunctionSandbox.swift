import KVCore
import NIOPosix
import Synchronization
import WasmKit

/// What an update function decided for its row.
public enum FunctionOutcome: Hashable, Sendable {
    /// Write these bytes as the row's new value.
    case write([UInt8])
    /// Leave the row as it is.
    case keep
    /// Delete the row.
    case delete
    /// Refuse the update, with the function's reason.
    case refuse(String)
}

/// Runs update functions: each run in a fresh instance with no imports, on a thread of
/// the sandbox's own pool, under the limits' fuel, memory and time.
///
/// A run cannot outlive its fuel, so a thread is never lost to a function; the time limit
/// bounds how long a caller waits (a run still queued at its deadline never starts).
public final class FunctionSandbox: Sendable {
    /// The limits of every run.
    public let limits: FunctionLimits
    private let pool: NIOThreadPool
    /// Runs admitted and not finished, running or queued.
    private let admitted = Atomic<Int>(0)

    /// The sandbox of this process, with the default limits. Its threads live as long as
    /// the process, as NIO's own singletons do.
    public static let shared = FunctionSandbox(limits: FunctionLimits())

    /// Creates a sandbox and starts its threads, which live as long as the process.
    public init(limits: FunctionLimits) {
        self.limits = limits
        pool = NIOThreadPool(numberOfThreads: max(1, limits.concurrentRuns))
        pool.start()
    }

    /// Runs `function` on `value` (`nil` for an absent row) with `arguments`.
    ///
    /// Throws `function.limit_exceeded` (fuel, time, memory), `function.failed` (a trap or
    /// a malformed answer), `function.busy` (too many runs waiting) or `request.body_too_large`
    /// (arguments over the limit).
    public func run(_ function: FunctionModule, value: [UInt8]?, arguments: [UInt8]) async throws(KVError)
        -> FunctionOutcome
    {
        guard arguments.count <= limits.argumentBytes else {
            throw KVError(
                .bodyTooLarge,
                "a function's arguments are at most \(limits.argumentBytes) bytes, not \(arguments.count)")
        }
        let inputBytes = (value?.count ?? 0) + arguments.count
        guard inputBytes < limits.memoryBytes else {
            throw KVError(
                .functionLimitExceeded,
                "the value and arguments (\(inputBytes) bytes) do not fit in a function's memory of \(limits.memoryBytes) bytes"
            )
        }
        let fuel = limits.fuel
        return try await onPool(doing: "finish") {
            Self.execute(function, value: value, arguments: arguments, fuel: fuel)
        }
    }

    /// Checks and compiles `source` (a binary module or the text format) on the
    /// sandbox's threads, within its queue and time limit, as runs are: compiling is
    /// work a request asks for too.
    public func compile(_ source: [UInt8]) async throws(KVError) -> FunctionModule {
        let limits = limits
        return try await onPool(doing: "compile") {
            Result { () throws(KVError) in try FunctionModule(source: source, limits: limits) }
        }
    }

    /// Runs `work` on a thread of the pool once one is free, unless too much waits
    /// already or the caller's time limit passes first (then it never starts).
    private func onPool<Value: Sendable>(
        doing what: String, _ work: @escaping @Sendable () -> Result<Value, KVError>
    ) async throws(KVError) -> Value {
        let capacity = limits.concurrentRuns + limits.queuedRuns
        guard admitted.add(1, ordering: .relaxed).newValue <= capacity else {
            admitted.subtract(1, ordering: .relaxed)
            throw KVError(
                .functionBusy, "\(capacity) function runs are running or waiting; try again shortly")
        }
        let timeLimit = limits.timeLimit
        let result: Result<Value, KVError> = await withCheckedContinuation { continuation in
            let answer = SingleAnswer(continuation)
            let timer = Task {
                // Cancelled when the work finishes first.
                guard (try? await Task.sleep(for: timeLimit)) != nil else { return }
                answer.give(
                    .failure(
                        KVError(
                            .functionLimitExceeded,
                            "the function did not \(what) within its time limit of \(timeLimit)")))
            }
            pool.submit { [self] state in
                defer { admitted.subtract(1, ordering: .relaxed) }
                guard case .active = state else {
                    answer.give(.failure(KVError(.unavailable, "the node is shutting down")))
                    return
                }
                // Work whose caller stopped waiting is not started.
                guard !answer.isGiven else { return }
                let outcome = work()
                timer.cancel()
                answer.give(outcome)
            }
        }
        return try result.get()
    }

    /// One run, on the calling thread, in a fresh store and instance.
    static func execute(_ function: FunctionModule, value: [UInt8]?, arguments: [UInt8], fuel: UInt64)
        -> Result<FunctionOutcome, KVError>
    {
        let store = Store(engine: function.engine)
        store.fuel = Fuel(remaining: fuel)
        do {
            let instance = try function.module.instantiate(store: store)
            guard let memory = instance.exports[memory: "memory"],
                let alloc = instance.exports[function: "alloc"],
                let update = instance.exports[function: "update"]
            else {
                return .failure(FunctionModule.invalid("the module lacks memory, alloc or update"))
            }
            let guest = GuestMemory(memory: memory, alloc: alloc)
            let valueArguments: [Value]
            if let value {
                valueArguments = [.i32(try guest.place(value)), .i32(UInt32(value.count))]
            } else {
                valueArguments = [.i32(0), .i32(UInt32(bitPattern: -1))]
            }
            let argumentPointer = try guest.place(arguments)
            let results = try update.invoke(
                valueArguments + [.i32(argumentPointer), .i32(UInt32(arguments.count))])
            guard results.count == 3, case .i32(let action) = results[0], case .i32(let pointer) = results[1],
                case .i32(let length) = results[2]
            else {
                return .failure(
                    KVError(.functionFailed, "update answered \(results), not (action, pointer, length)"))
            }
            switch action {
            case 0: return .success(.write(try guest.read(pointer: pointer, length: length)))
            case 1: return .success(.keep)
            case 2: return .success(.delete)
            case 3:
                let message = try guest.read(pointer: pointer, length: min(length, 4096))
                return .success(.refuse(String(decoding: message, as: UTF8.self)))
            default:
                return .failure(
                    KVError(.functionFailed, "update answered action \(action); the actions are 0 to 3"))
            }
        } catch let error as KVError {
            return .failure(error)
        } catch {
            return .failure(classify(error, fuel: fuel))
        }
    }

    /// A stable code for what stopped a run: its limits, or a trap of its own.
    static func classify(_ error: any Error, fuel: UInt64) -> KVError {
        let reason = String(describing: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        if reason.contains("out of fuel") {
            return KVError(.functionLimitExceeded, "the function ran out of its fuel (\(fuel) units)")
        }
        if reason.contains("call stack exhausted") {
            return KVError(.functionLimitExceeded, "the function's calls nested deeper than its stack allows")
        }
        return KVError(.functionFailed, "the function trapped: \(reason)")
    }
}

/// The module's memory as the host sees it: every access is checked against its size.
private struct GuestMemory {
    let memory: Memory
    let alloc: Function

    /// Asks the module for `bytes.count` bytes and copies `bytes` there.
    func place(_ bytes: [UInt8]) throws -> UInt32 {
        guard !bytes.isEmpty else { return 0 }
        let results = try alloc.invoke([.i32(UInt32(bytes.count))])
        guard results.count == 1, case .i32(let pointer) = results[0] else {
            throw KVError(.functionFailed, "alloc answered \(results), not one i32")
        }
        try checkBounds(pointer: pointer, length: UInt32(bytes.count), what: "alloc")
        memory.withUnsafeMutableBufferPointer(offset: UInt(pointer), count: bytes.count) { destination in
            bytes.withUnsafeBytes { destination.copyMemory(from: $0) }
        }
        return pointer
    }

    /// The `length` bytes at `pointer`.
    func read(pointer: UInt32, length: UInt32) throws -> [UInt8] {
        try checkBounds(pointer: pointer, length: length, what: "update")
        return memory.withUnsafeBufferPointer(offset: UInt(pointer), count: Int(length)) { Array($0) }
    }

    private func checkBounds(pointer: UInt32, length: UInt32, what: String) throws {
        guard UInt64(pointer) + UInt64(length) <= UInt64(memory.byteCount) else {
            throw KVError(
                .functionFailed,
                "\(what) answered \(length) bytes at \(pointer), outside the memory of \(memory.byteCount) bytes"
            )
        }
    }
}

/// Hands a result to its caller exactly once: the work and the timer race for it.
private final class SingleAnswer<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Result<Value, KVError>, Never>?>

    init(_ continuation: CheckedContinuation<Result<Value, KVError>, Never>) {
        self.continuation = Mutex(continuation)
    }

    var isGiven: Bool { continuation.withLock { $0 == nil } }

    func give(_ result: Result<Value, KVError>) {
        continuation.withLock { $0.take() }?.resume(returning: result)
    }
}
