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
/// its pages in again (a GET of 512 MiB took 1.4 million page faults, 2.3 per page
/// sent, and half the node's CPU). A heap now keeps up to 16 MiB at its top between
/// the periodic trims, and there are at most as many heaps as cores (glibc's default
/// is eight per core), so what they keep is bounded: with both, the same GET took
/// 35,000 faults, half the CPU, and ran about twice as fast, with no higher peak resident
/// set (docs/benchmarks.md). Either alone was not enough: the threshold without the
/// cap grew nodes past the large-value bound of 64 MiB.
enum MemoryTuning {
    /// Allocations from this size on are mapped on their own.
    static let mmapThreshold: Int32 = 4 << 20
    /// Free memory a heap keeps at its top until the next periodic trim.
    static let trimThreshold: Int32 = 16 << 20
    /// How often free heap memory is returned.
    static let trimInterval = Duration.milliseconds(250)

    /// The most heaps (arenas) the allocator makes: one per core, at least two.
    static var arenaLimit: Int32 {
        Int32(clamping: max(2, ProcessInfo.processInfo.activeProcessorCount))
    }

    static func apply() {
        _ = mallopt(M_ARENA_MAX, arenaLimit)
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        _ = mallopt(M_TRIM_THRESHOLD, trimThreshold)
        Task.detached(priority: .background) {
            while !Task.isCancelled {
                try? await Task.sleep(for: trimInterval)
                _ = malloc_trim(0)
            }
        }
    }
}
