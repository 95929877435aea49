import CMalloc
import Foundation

/// How `kv server` has glibc's allocator treat the 1 MiB buffers large values pass
/// through (docs/large-values.md, measured in docs/benchmarks.md).
///
/// Left alone, glibc raises its mmap threshold to the size of each large buffer freed;
/// the buffers then come from the heap arenas, which keep freed memory: a 256 MiB upload
/// grew a node by 150 MB that it never gave back. Mapping every buffer on its own (a
/// threshold below 1 MiB) returns them, but then each new buffer is fresh pages that
/// fault in and are cleared: a 1 GiB upload took 7 s instead of 4.5 s, a download 2.3 s
/// instead of 1. So the buffers come from the heap (a fixed 4 MiB threshold, which also
/// stops the adaptive one from growing), and the heap's free memory is handed back to
/// the system four times a second.
///
/// Fixing the mmap threshold also fixes glibc's trim threshold, at 128 KiB: every
/// buffer freed at the top of a heap was handed back at once, and the next one faulted
/// its pages in again (five GETs of a 512 MiB value took 1.4 million page faults, two
/// per page sent, and twice the CPU they take now). So the heaps keep up to 32 MiB in
/// all at their tops between the periodic trims: there are at most as many heaps as
/// cores (glibc's default is eight per core) and each keeps its share, at least 4 MiB
/// (so past eight cores the total grows by 4 MiB a core). On two cores,
/// 16 MiB each, those GETs took 35,000 faults and half the CPU and ran about twice as
/// fast, with no higher peak resident set (docs/benchmarks.md). The threshold without
/// the cap on heaps grew nodes past the large-value bound of 64 MiB.
enum MemoryTuning {
    /// Allocations from this size on are mapped on their own.
    static let mmapThreshold: Int32 = 4 << 20
    /// Free memory all heaps together keep at their tops until the next periodic trim.
    static let keptAtTops = 32 << 20
    /// How often free heap memory is returned.
    static let trimInterval = Duration.milliseconds(250)

    /// The most heaps (arenas) the allocator makes: one per core, at least two.
    static var arenaLimit: Int {
        max(2, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Free memory one heap keeps at its top: its share of ``keptAtTops``, at least
    /// 4 MiB (one large buffer).
    static var trimThreshold: Int {
        max(4 << 20, keptAtTops / arenaLimit)
    }

    static func apply() {
        _ = mallopt(M_ARENA_MAX, Int32(clamping: arenaLimit))
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        _ = mallopt(M_TRIM_THRESHOLD, Int32(clamping: trimThreshold))
        Task.detached(priority: .background) {
            while !Task.isCancelled {
                try? await Task.sleep(for: trimInterval)
                _ = malloc_trim(0)
            }
        }
    }
}
