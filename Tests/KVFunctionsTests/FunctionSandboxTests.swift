import Foundation
import KVCore
import Testing

@testable import KVFunctions

/// Update functions in the sandbox: the shipped examples, and modules that try to escape
/// or exhaust it. Each refusal has its stable code and the sandbox runs the next
/// function as before.
@Suite("update function sandbox")
struct FunctionSandboxTests {
    /// A tenth of the default fuel, and a time limit no loaded machine reaches: what stops
    /// a run here is its fuel, never the clock.
    static let sandbox = FunctionSandbox(limits: FunctionLimits(fuel: 5_000_000, timeLimit: .seconds(300)))

    /// The example module `name` from `examples/functions`, in the text format.
    static func example(_ name: String) throws -> FunctionModule {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/functions/\(name).wat")
        return try FunctionModule(source: Array(try Data(contentsOf: url)), limits: sandbox.limits)
    }

    static func module(_ text: String) throws(KVError) -> FunctionModule {
        try FunctionModule(source: Array(text.utf8), limits: sandbox.limits)
    }

    static func run(_ module: FunctionModule, _ value: String?, _ arguments: String) async throws(KVError)
        -> FunctionOutcome
    {
        try await sandbox.run(module, value: value.map { Array($0.utf8) }, arguments: Array(arguments.utf8))
    }

    /// The error `body` throws, or `nil` when it answers.
    static func failure(_ body: @Sendable () async throws(KVError) -> FunctionOutcome) async -> KVError? {
        do {
            _ = try await body()
            return nil
        } catch {
            return error
        }
    }

    static func written(_ text: String) -> FunctionOutcome { .write(Array(text.utf8)) }

    /// The module text of an update function whose body is `body` (its result is left
    /// to the body), with the usual memory and allocator.
    static func withBody(_ body: String, memory: String = "1 16") -> String {
        """
        (module
          (memory (export "memory") \(memory))
          (func (export "alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "update") (param i32 i32 i32 i32) (result i32 i32 i32)
            \(body)))
        """
    }

    @Test("the bounded counter counts from an absent row up to its maximum, then refuses")
    func boundedCounter() async throws {
        let counter = try Self.example("bounded-counter")
        #expect(try await Self.run(counter, nil, "3") == Self.written("1"))
        #expect(try await Self.run(counter, "1", "3") == Self.written("2"))
        #expect(try await Self.run(counter, "99999", "1000000") == Self.written("100000"))
        #expect(try await Self.run(counter, "3", "3") == .refuse("the counter is at its maximum"))
        #expect(
            try await Self.run(counter, "1", "three")
                == .refuse("the arguments must be the maximum, a decimal number"))
        #expect(try await Self.run(counter, "x1", "3") == .refuse("the row does not hold a decimal number"))
    }

    @Test("append-to-list adds the item to a JSON array, starting one for an absent row")
    func appendToList() async throws {
        let append = try Self.example("append-to-list")
        #expect(try await Self.run(append, nil, #""milk""#) == Self.written(#"["milk"]"#))
        #expect(try await Self.run(append, " [ ] ", "1") == Self.written(" [ 1]"))
        #expect(
            try await Self.run(append, #"["a", {"b": 2}]"#, "[3]") == Self.written(#"["a", {"b": 2},[3]]"#))
        #expect(
            try await Self.run(append, #"{"a": 1}"#, "1") == .refuse("the row does not hold a JSON array"))
        #expect(
            try await Self.run(append, "[1]", "") == .refuse("the arguments must be the JSON value to append")
        )
        // A list of 100,000 items: its copy grows the memory page by page.
        let long = "[" + Array(repeating: "12345", count: 100_000).joined(separator: ",") + "]"
        guard case .write(let bytes) = try await Self.run(append, long, "6") else {
            Issue.record("the long list was not appended to")
            return
        }
        #expect(bytes.count == long.utf8.count + 2 && bytes.suffix(3) == Array(",6]".utf8))
    }

    @Test("an infinite loop runs out of fuel, and the next run is served as before")
    func infiniteLoopStops() async throws {
        let loop = try Self.module(Self.withBody("(loop $forever (br $forever)) (unreachable)"))
        await #expect(
            throws: KVError(.functionLimitExceeded, "the function ran out of its fuel (5000000 units)")
        ) {
            _ = try await Self.run(loop, "x", "")
        }
        #expect(try await Self.run(try Self.example("bounded-counter"), "1", "5") == Self.written("2"))
    }

    @Test("a caller waits no longer than the time limit; a run still queued then never starts")
    func timeLimitBoundsTheWait() async throws {
        let slow = FunctionSandbox(
            limits: FunctionLimits(fuel: 5_000_000, timeLimit: .milliseconds(50), concurrentRuns: 1))
        let loop = try Self.module(Self.withBody("(loop $forever (br $forever)) (unreachable)"))
        async let first = Self.failure { () async throws(KVError) in
            try await slow.run(loop, value: nil, arguments: [])
        }
        async let second = Self.failure { () async throws(KVError) in
            try await slow.run(loop, value: nil, arguments: [])
        }
        let expected = KVError(
            .functionLimitExceeded, "the function did not finish within its time limit of 0.05 seconds")
        #expect(await first == expected)
        #expect(await second == expected)
        // Both were answered at their deadline: a run that ended first would have
        // answered that it ran out of fuel.
    }

    @Test("runaway recursion stops at the stack's limit")
    func recursionStops() async throws {
        let text = """
            (module
              (memory (export "memory") 1 1)
              (func (export "alloc") (param i32) (result i32) (i32.const 0))
              (func $deeper (param i64) (result i64)
                (i64.add (call $deeper (i64.add (local.get 0) (i64.const 1))) (i64.const 1)))
              (func (export "update") (param i32 i32 i32 i32) (result i32 i32 i32)
                (drop (call $deeper (i64.const 0)))
                (i32.const 1) (i32.const 0) (i32.const 0)))
            """
        let error = await #expect(throws: KVError.self) {
            _ = try await Self.run(try Self.module(text), nil, "")
        }
        #expect(error?.code == .functionLimitExceeded)
    }

    @Test("memory bombs: no declared maximum or too large a one is refused; growth stops at the maximum")
    func memoryIsBounded() async throws {
        for memory in ["1", "1 65536", "1 257"] {
            let error = #expect(throws: KVError.self) {
                _ = try Self.module(Self.withBody("unreachable", memory: memory))
            }
            #expect(error?.code == .functionInvalid, "memory \(memory)")
            #expect(error?.message.contains("maximum") == true, "\(error?.message ?? "")")
        }
        // Grows a page at a time until memory.grow fails, then reports the size it reached.
        let bomb = try Self.module(
            Self.withBody(
                """
                (block $full (loop $more
                  (br_if $full (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)))
                  (br $more)))
                (i32.store (i32.const 0) (memory.size))
                (i32.const 0) (i32.const 0) (i32.const 4)
                """))
        #expect(try await Self.run(bomb, nil, "") == .write([16, 0, 0, 0]))
        // An initial size over the maximum does not even parse as a memory.
        #expect(throws: KVError.self) { _ = try Self.module(Self.withBody("unreachable", memory: "300 256")) }
    }

    @Test("imports of anything are refused at registration, WASI and memories included")
    func importsAreRefused() throws {
        let imports = [
            #"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
            #"(import "env" "clock" (func (result i64)))"#,
            #"(import "env" "memory" (memory 1 1))"#,
            #"(import "env" "g" (global i32))"#,
        ]
        for line in imports {
            let text = Self.withBody("unreachable").replacingOccurrences(
                of: "(module", with: "(module " + line)
            let error = #expect(throws: KVError.self) { _ = try Self.module(text) }
            #expect(error?.code == .functionInvalid, "\(line)")
            #expect(error?.message.contains("may import nothing") == true, "\(error?.message ?? "")")
        }
    }

    @Test("a module without the interface, with a start function, or not WebAssembly is refused")
    func interfaceIsChecked() throws {
        let refused: [(String, String)] = [
            ("(module (memory (export \"memory\") 1 1))", "export a function 'alloc'"),
            (
                """
                (module (memory (export "memory") 1 1)
                  (func (export "alloc") (param i32) (result i32) (i32.const 0))
                  (func (export "update") (param i32) (result i32) (i32.const 0)))
                """, "'update' must have the type"
            ),
            (
                """
                (module (memory 1 1)
                  (func (export "alloc") (param i32) (result i32) (i32.const 0)))
                """, "export its memory"
            ),
            (
                Self.withBody("unreachable").replacingOccurrences(of: "(module", with: "(module (start 0)"),
                "start function"
            ),
            ("(module (func (result i32) (i64.const 1)))", "memory"),
            ("not a module", "does not parse"),
            (
                "(module (func " + String(repeating: "(block ", count: 100_000)
                    + String(repeating: ")", count: 100_001) + ")",
                "nests deeper than 1000 levels"
            ),
            (
                Self.withBody("unreachable").replacingOccurrences(
                    of: "(module", with: "(module (table 1 1 funcref) (table 1 1 funcref)"), "table"
            ),
            (
                Self.withBody("unreachable").replacingOccurrences(
                    of: "(module", with: "(module (table 1 funcref)"),
                "a table must declare a maximum"
            ),
            (
                Self.withBody("unreachable").replacingOccurrences(
                    of: "(module", with: "(module (tag $oops) (func (throw $oops))"), "does not parse"
            ),
            ("\0asm\u{1}\0\0\0\u{7}", "does not parse"),
        ]
        for (text, message) in refused {
            let error = #expect(throws: KVError.self) { _ = try Self.module(text) }
            #expect(error?.code == .functionInvalid, "\(text)")
            #expect(error?.message.contains(message) == true, "\(error?.message ?? "") should say \(message)")
        }
        let tooLarge = #expect(throws: KVError.self) {
            _ = try FunctionModule(
                source: Array(repeating: 0x20, count: (1 << 20) + 1), limits: FunctionLimits())
        }
        #expect(tooLarge?.code == .bodyTooLarge)
    }

    @Test("compiling on the sandbox's threads checks the module as registering does")
    func compileOnThePool() async throws {
        let compiled = try await Self.sandbox.compile(
            Array(Self.withBody("(i32.const 1) (i32.const 0) (i32.const 0)").utf8))
        #expect(try await Self.sandbox.run(compiled, value: nil, arguments: []) == .keep)
        let refused = await Self.failure { () async throws(KVError) in
            _ = try await Self.sandbox.compile(Array("(module)".utf8))
            return .keep
        }
        #expect(refused?.code == .functionInvalid)
    }

    @Test("answers outside the memory, unknown actions and traps are failures of the function")
    func malformedAnswersFail() async throws {
        let cases: [(String, String)] = [
            ("(i32.const 0) (i32.const 65530) (i32.const 100)", "outside the memory"),
            ("(i32.const 9) (i32.const 0) (i32.const 0)", "action 9"),
            ("(i32.const 0) (i32.const -1) (i32.const 2)", "outside the memory"),
            ("(i32.div_u (i32.const 1) (i32.const 0)) (i32.const 0) (i32.const 0)", "divide by zero"),
        ]
        for (body, message) in cases {
            let error = await #expect(throws: KVError.self) {
                _ = try await Self.run(try Self.module(Self.withBody(body)), "v", "a")
            }
            #expect(error?.code == .functionFailed, "\(body)")
            #expect(error?.message.contains(message) == true, "\(error?.message ?? "") should say \(message)")
        }
        // An allocator that points outside the memory is caught before any byte is copied.
        let lying = try Self.module(
            Self.withBody("(i32.const 1) (i32.const 0) (i32.const 0)").replacingOccurrences(
                of: "(i32.const 1024))", with: "(i32.const 65535))"))
        let error = await #expect(throws: KVError.self) { _ = try await Self.run(lying, "value", "") }
        #expect(error?.message.contains("alloc answered") == true)
        #expect(try await Self.run(lying, nil, "") == .keep)
    }

    @Test("arguments over the limit, or a value that cannot fit in memory, are refused before running")
    func inputsAreBounded() async throws {
        let keep = try Self.module(Self.withBody("(i32.const 1) (i32.const 0) (i32.const 0)"))
        let small = FunctionSandbox(limits: FunctionLimits(memoryPages: 2, argumentBytes: 10))
        let arguments = await #expect(throws: KVError.self) {
            _ = try await small.run(keep, value: nil, arguments: Array(repeating: 1, count: 11))
        }
        #expect(arguments?.code == .bodyTooLarge)
        let value = await #expect(throws: KVError.self) {
            _ = try await small.run(keep, value: Array(repeating: 1, count: 131_072), arguments: [])
        }
        #expect(value?.code == .functionLimitExceeded)
    }
}
