/// The bounds every update function runs within. A module is checked against them when
/// it is registered (its size, its declared memory and tables) and every run is held to
/// them (fuel, time, the bytes it is given and returns).
public struct FunctionLimits: Hashable, Sendable {
    /// The largest module accepted, binary or text.
    public var moduleBytes: Int
    /// The most 64 KiB pages a module's memory may declare as its maximum. A module must
    /// declare one: `memory.grow` past it fails inside the guest, as the standard says,
    /// so no function can take more memory than this.
    public var memoryPages: UInt64
    /// The most elements a module's table may declare as its maximum.
    public var tableElements: UInt64
    /// The fuel of one run: roughly one unit per WebAssembly instruction executed, and
    /// one per 64 bytes a bulk memory instruction moves. A run that spends it all stops.
    public var fuel: UInt64
    /// How long a caller waits for one run, queueing included. A run cannot loop past its
    /// fuel, so this bounds the wait of a loaded node, not the function.
    public var timeLimit: Duration
    /// The most bytes of arguments a run is given.
    public var argumentBytes: Int
    /// How many functions run at once, each on a thread of its own (never on the threads
    /// that serve requests).
    public var concurrentRuns: Int
    /// How many runs may wait for a thread; more are refused with `function.busy`.
    public var queuedRuns: Int

    /// The defaults: 1 MiB modules, 16 MiB of memory, 50 million fuel, 2 s, 1 MiB of
    /// arguments, 2 runs at once and 64 waiting.
    public init(
        moduleBytes: Int = 1 << 20, memoryPages: UInt64 = 256, tableElements: UInt64 = 10_000,
        fuel: UInt64 = 50_000_000, timeLimit: Duration = .seconds(2), argumentBytes: Int = 1 << 20,
        concurrentRuns: Int = 2, queuedRuns: Int = 64
    ) {
        self.moduleBytes = moduleBytes
        self.memoryPages = memoryPages
        self.tableElements = tableElements
        self.fuel = fuel
        self.timeLimit = timeLimit
        self.argumentBytes = argumentBytes
        self.concurrentRuns = concurrentRuns
        self.queuedRuns = queuedRuns
    }

    /// The most bytes a function's memory can hold.
    public var memoryBytes: Int { Int(memoryPages) * 65_536 }
}
