import CMalloc

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
enum MemoryTuning {
    /// Allocations from this size on are mapped on their own.
    static let mmapThreshold: Int32 = 4 << 20
    /// How often free heap memory is returned.
    static let trimInterval = Duration.milliseconds(250)

    static func apply() {
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        Task.detached(priority: .background) {
            while !Task.isCancelled {
                try? await Task.sleep(for: trimInterval)
                _ = malloc_trim(0)
            }
        }
    }
}
