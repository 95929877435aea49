/// Events ordered by time, then by the order they were scheduled, so equal times
/// never depend on anything but the seed.
struct EventQueue {
    private var heap: [(time: Int64, sequence: UInt64, event: SimulationEvent)] = []
    private var nextSequence: UInt64 = 0

    mutating func push(_ event: SimulationEvent, at time: Int64) {
        heap.append((time, nextSequence, event))
        nextSequence += 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.precedes(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (Int64, SimulationEvent)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let first = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && Self.precedes(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count && Self.precedes(heap[right], heap[smallest]) { smallest = right }
            guard smallest != parent else { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return (first.time, first.event)
    }

    private static func precedes(
        _ a: (time: Int64, sequence: UInt64, event: SimulationEvent),
        _ b: (time: Int64, sequence: UInt64, event: SimulationEvent)
    ) -> Bool {
        (a.time, a.sequence) < (b.time, b.sequence)
    }
}
