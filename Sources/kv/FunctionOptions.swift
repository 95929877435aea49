import ArgumentParser
import KVFunctions

/// `kv server`'s limits of update functions (docs/functions.md). Each setting comes from
/// its flag, its environment variable, the YAML file or the default.
struct FunctionOptions: ParsableArguments {
    @Option(
        name: .customLong("function-fuel"),
        help: "Fuel of one update function run, about one unit per instruction (default 50000000).")
    var fuel: UInt64?
    @Option(
        name: .customLong("function-time-limit-ms"),
        help: "Milliseconds a request waits for an update function, queueing included (default 2000).")
    var timeLimitMilliseconds: Int?
    @Option(
        name: .customLong("function-memory-pages"),
        help: "Most 64 KiB pages a function's memory may declare (default 256, at most 4096).")
    var memoryPages: UInt64?

    /// The YAML keys.
    struct File: Decodable {
        var functionFuel: UInt64?
        var functionTimeLimitMilliseconds: Int?
        var functionMemoryPages: UInt64?

        enum CodingKeys: String, CodingKey {
            case functionFuel = "function_fuel"
            case functionTimeLimitMilliseconds = "function_time_limit_ms"
            case functionMemoryPages = "function_memory_pages"
        }
    }

    /// The limits, checked.
    func limits(file: File, sources: SettingSources) throws -> FunctionLimits {
        let defaults = FunctionLimits()
        var limits = defaults
        limits.fuel = try sources.resolve(fuel, "KV_FUNCTION_FUEL", file.functionFuel, defaults.fuel)
        let milliseconds = try sources.resolve(
            timeLimitMilliseconds, "KV_FUNCTION_TIME_LIMIT_MS", file.functionTimeLimitMilliseconds, 2_000)
        limits.timeLimit = .milliseconds(milliseconds)
        limits.memoryPages = try sources.resolve(
            memoryPages, "KV_FUNCTION_MEMORY_PAGES", file.functionMemoryPages, defaults.memoryPages)
        guard (1_000...100_000_000_000).contains(limits.fuel) else {
            throw ValidationError("the function fuel must be 1000 to 100000000000, not \(limits.fuel)")
        }
        guard (10...600_000).contains(milliseconds) else {
            throw ValidationError("the function time limit must be 10 to 600000 ms, not \(milliseconds)")
        }
        guard (1...4096).contains(limits.memoryPages) else {
            throw ValidationError("the function memory must be 1 to 4096 pages, not \(limits.memoryPages)")
        }
        return limits
    }
}
