import KVCore
import WAT
import WasmKit
import WasmParser

/// A WebAssembly module that passed the checks of an update function.
///
/// The interface, all of it (see `docs/functions.md`):
/// - **no imports**: the module reaches nothing outside itself, not even a clock;
/// - it exports `memory`, one memory with a declared maximum within the limits;
/// - `alloc(len: i32) -> i32` returns where the host may write `len` bytes;
/// - `update(value: i32, value_len: i32, args: i32, args_len: i32) -> (i32, i32, i32)`
///   gets the row's value (`value_len` is `-1` when the row is absent) and the caller's
///   arguments, and answers `(action, pointer, length)`: action `0` writes the bytes at
///   `pointer`, `1` keeps the row as it is, `2` deletes it, `3` refuses with the UTF-8
///   message at `pointer`.
public struct FunctionModule: Sendable {
    /// The module in binary form, as stored.
    public let binary: [UInt8]
    /// The parsed module, ready to instantiate.
    let module: Module
    /// The engine its runs use, its own: an engine keeps every function type it ever
    /// saw, so one shared by every module would grow with each module registered.
    let engine: Engine

    /// The WebAssembly features a function may use: the 1.0 core with multiple results
    /// and bulk memory, and none of the proposals that add tables, exceptions, threads or
    /// wider memories.
    static let features = WasmFeatureSet()
    /// How deeply the text format may nest: its parser descends once per level.
    static let maximumTextNesting = 1_000
    /// The most entries of each kind a module may declare (types, functions, globals,
    /// data and element segments): each run instantiates them all, outside the fuel.
    static let maximumEntries = 10_000

    /// The magic number every binary module starts with.
    public static let binaryMagic: [UInt8] = [0x00, 0x61, 0x73, 0x6D]

    /// Checks `source` (a binary module, or the text format) and keeps it. Throws
    /// `function.invalid` naming the first thing that is wrong.
    public init(source: [UInt8], limits: FunctionLimits) throws(KVError) {
        guard !source.isEmpty else { throw Self.invalid("the module is empty") }
        guard source.count <= limits.moduleBytes else {
            throw KVError(
                .bodyTooLarge, "a module is at most \(limits.moduleBytes) bytes, not \(source.count)")
        }
        let binary: [UInt8]
        if source.starts(with: Self.binaryMagic) {
            binary = source
        } else {
            guard let text = String(validating: source, as: UTF8.self) else {
                throw Self.invalid("the module is neither a binary module nor UTF-8 text")
            }
            try Self.checkNesting(source)
            do {
                binary = try wat2wasm(text, features: Self.features)
            } catch {
                throw Self.invalid("the text format does not parse: \(error)")
            }
            guard binary.count <= limits.moduleBytes else {
                throw KVError(
                    .bodyTooLarge, "the compiled module is \(binary.count) bytes, over \(limits.moduleBytes)")
            }
        }
        try Self.checkDeclarations(binary, limits: limits)
        do {
            module = try parseWasm(bytes: binary, features: Self.features)
        } catch {
            throw Self.invalid("the module does not parse: \(error)")
        }
        self.binary = binary
        engine = Engine(configuration: EngineConfiguration(features: Self.features, fuelMetering: true))
        try checkExports()
    }

    /// Refuses text nested deeper than ``maximumTextNesting`` before the text parser,
    /// which would exhaust the thread's stack, sees it. Parentheses in strings and
    /// comments count too, which only errs towards refusing.
    static func checkNesting(_ source: [UInt8]) throws(KVError) {
        var depth = 0
        for byte in source {
            if byte == UInt8(ascii: "(") {
                depth += 1
                if depth > maximumTextNesting {
                    throw invalid("the text nests deeper than \(maximumTextNesting) levels")
                }
            } else if byte == UInt8(ascii: ")") {
                depth = max(0, depth - 1)
            }
        }
    }

    static func invalid(_ message: String) -> KVError {
        KVError(.functionInvalid, message)
    }

    /// Walks the sections the sandbox depends on: imports, memories and tables.
    private static func checkDeclarations(_ binary: [UInt8], limits: FunctionLimits) throws(KVError) {
        var parser = WasmParser.Parser(bytes: binary, features: features)
        var memories = 0
        var tables = 0
        func checkCount(_ count: Int, _ what: String) throws(KVError) {
            guard count <= maximumEntries else {
                throw invalid("the module declares \(count) \(what); at most \(maximumEntries)")
            }
        }
        do {
            while let payload = try parser.parseNext() {
                switch payload {
                case .typeSection(let types): try checkCount(types.count, "types")
                case .functionSection(let functions): try checkCount(functions.count, "functions")
                case .globalSection(let globals): try checkCount(globals.count, "globals")
                case .dataSection(let segments): try checkCount(segments.count, "data segments")
                case .elementSection(let segments): try checkCount(segments.count, "element segments")
                case .importSection(let imports):
                    if let first = imports.first {
                        throw invalid(
                            "the module imports \(first.module).\(first.name): an update function may import nothing"
                        )
                    }
                case .memorySection(let declared):
                    for memory in declared {
                        memories += 1
                        try checkMemory(memory.type, limits: limits)
                    }
                case .startSection:
                    throw invalid(
                        "the module has a start function: every run starts from a fresh instance, so there is nothing for it to prepare"
                    )
                case .tableSection(let declared):
                    tables += declared.count
                    guard tables <= 1 else { throw invalid("the module may define one table, not \(tables)") }
                    for table in declared {
                        guard let maximum = table.type.limits.max, maximum <= limits.tableElements else {
                            throw invalid(
                                "a table must declare a maximum of at most \(limits.tableElements) elements")
                        }
                    }
                default:
                    continue
                }
            }
        } catch let error as KVError {
            throw error
        } catch {
            throw invalid("the module does not parse: \(error)")
        }
        guard memories == 1 else {
            throw invalid("the module must define exactly one memory, not \(memories)")
        }
    }

    private static func checkMemory(_ memory: MemoryType, limits: FunctionLimits) throws(KVError) {
        guard !memory.shared, !memory.isMemory64 else {
            throw invalid("the memory must be a plain 32-bit memory, not shared or 64-bit")
        }
        guard let maximum = memory.max else {
            throw invalid(
                "the memory must declare a maximum (at most \(limits.memoryPages) pages of 64 KiB)")
        }
        guard maximum <= limits.memoryPages else {
            throw invalid(
                "the memory declares a maximum of \(maximum) pages; the limit is \(limits.memoryPages) pages of 64 KiB"
            )
        }
    }

    /// The exports the host calls, with their exact types, read off a trial instance (the
    /// module has no start function, so instantiating it runs no code of its own). The
    /// instance is compiled eagerly, so a function body that does not validate is refused
    /// here rather than on its first run.
    private func checkExports() throws(KVError) {
        let instance: Instance
        do {
            let validating = Engine(
                configuration: EngineConfiguration(
                    compilationMode: .eager, features: Self.features, fuelMetering: true))
            instance = try module.instantiate(store: Store(engine: validating))
        } catch {
            throw Self.invalid("the module does not instantiate: \(error)")
        }
        guard instance.exports[memory: "memory"] != nil else {
            throw Self.invalid("the module must export its memory as 'memory'")
        }
        let i32 = ValueType.i32
        let expected: [(String, FunctionType)] = [
            ("alloc", FunctionType(parameters: [i32], results: [i32])),
            ("update", FunctionType(parameters: [i32, i32, i32, i32], results: [i32, i32, i32])),
        ]
        for (name, type) in expected {
            guard let function = instance.exports[function: name] else {
                throw Self.invalid("the module must export a function '\(name)'")
            }
            guard function.type == type else {
                throw Self.invalid("'\(name)' must have the type \(type), not \(function.type)")
            }
        }
    }
}
