import KVCore
import KVStorage
import Synchronization

/// The contents of one keyspace: keys in ascending byte order with their values.
///
/// Sorted parallel arrays are deliberately simple: this engine is the reference model the
/// other engines are checked against, so being obviously right matters more than speed.
/// Arrays are copy-on-write, which makes snapshots and cursors free until the next write.
struct SortedKeyValues: Sendable {
    var keys: [[UInt8]] = []
    var values: [[UInt8]] = []

    /// The index of the first key not less than `key`.
    func lowerBound(_ key: [UInt8]) -> Int {
        var low = 0
        var high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if keys[middle].lexicographicallyPrecedes(key) {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low
    }

    /// The index range of the keys in `range`.
    func indices(of range: EncodedKeyRange) -> Range<Int> {
        let start = lowerBound(range.lowerBound)
        let end = range.upperBound.map(lowerBound) ?? keys.count
        return start..<max(start, end)
    }

    func get(_ key: [UInt8]) -> [UInt8]? {
        let index = lowerBound(key)
        return index < keys.count && keys[index] == key ? values[index] : nil
    }

    mutating func put(_ key: [UInt8], _ value: [UInt8]) {
        let index = lowerBound(key)
        if index < keys.count && keys[index] == key {
            values[index] = value
        } else {
            keys.insert(key, at: index)
            values.insert(value, at: index)
        }
    }

    mutating func delete(_ key: [UInt8]) {
        let index = lowerBound(key)
        if index < keys.count && keys[index] == key {
            keys.remove(at: index)
            values.remove(at: index)
        }
    }

    mutating func delete(_ range: EncodedKeyRange) {
        let indices = indices(of: range)
        keys.removeSubrange(indices)
        values.removeSubrange(indices)
    }
}

/// The "disk" of in-memory engines: it outlives any one ``MemoryStorageEngine`` opened on
/// it, so tests and the simulator can close and reopen a store, or throw the volume away
/// to model a lost disk.
public final class MemoryVolume: Sendable {
    let contents: Mutex<[Keyspace: SortedKeyValues]>

    /// Creates an empty volume.
    public init() {
        contents = Mutex(Dictionary(uniqueKeysWithValues: Keyspace.allCases.map { ($0, SortedKeyValues()) }))
    }

    func read(_ keyspace: Keyspace) -> SortedKeyValues {
        contents.withLock { $0[keyspace]! }
    }
}

/// An ordered in-memory storage engine: the reference model of ``StorageEngine``.
///
/// Every write is "durable" as soon as it returns, in the sense that it survives closing
/// and reopening an engine on the same ``MemoryVolume``; nothing survives the process.
public final class MemoryStorageEngine: StorageEngine {
    private let volume: MemoryVolume
    private let isOpen = Mutex(true)

    /// Opens an engine on `volume` (a new, empty one by default).
    public init(volume: MemoryVolume = MemoryVolume()) {
        self.volume = volume
    }

    private func checkOpen() throws(StorageError) {
        guard isOpen.withLock({ $0 }) else { throw StorageError.closed }
    }

    public func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try checkOpen()
        return volume.read(keyspace).get(key)
    }

    /// Its cursors step through the engine entry by entry.
    public var cursorsStopAnywhere: Bool { true }

    /// Everything is in memory: always answers.
    public func getIfCached(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> CachedRead {
        .found(try get(key, in: keyspace))
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws(StorageError) {
        try checkOpen()
        volume.contents.withLock { contents in
            for operation in batch.operations {
                switch operation {
                case .put(let keyspace, let key, let value): contents[keyspace]!.put(key, value)
                case .delete(let keyspace, let key): contents[keyspace]!.delete(key)
                case .deleteRange(let keyspace, let range): contents[keyspace]!.delete(range)
                }
            }
        }
    }

    public func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError) -> any StorageCursor
    {
        try checkOpen()
        return MemoryCursor(contents: volume.read(keyspace), range: range, direction: direction)
    }

    public func snapshot() throws(StorageError) -> any StorageSnapshot {
        try checkOpen()
        return MemorySnapshot(contents: volume.contents.withLock { $0 })
    }

    public func estimateSize(of range: EncodedKeyRange, in keyspace: Keyspace) throws(StorageError)
        -> StorageSizeEstimate
    {
        try checkOpen()
        let contents = volume.read(keyspace)
        let indices = contents.indices(of: range)
        let bytes = indices.reduce(0) { $0 + contents.keys[$1].count + contents.values[$1].count }
        return StorageSizeEstimate(bytes: UInt64(bytes), keyCount: UInt64(indices.count))
    }

    public func close() throws(StorageError) {
        isOpen.withLock { $0 = false }
    }
}

/// A frozen copy of every keyspace (copy-on-write, so taking it is cheap).
final class MemorySnapshot: StorageSnapshot {
    private let contents: [Keyspace: SortedKeyValues]

    init(contents: [Keyspace: SortedKeyValues]) {
        self.contents = contents
    }

    func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        contents[keyspace]!.get(key)
    }

    func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError)
        -> any StorageCursor
    {
        MemoryCursor(contents: contents[keyspace]!, range: range, direction: direction)
    }
}

/// Walks a frozen copy of one keyspace.
final class MemoryCursor: StorageCursor {
    private let contents: SortedKeyValues
    private var remaining: Range<Int>
    private let direction: ScanDirection

    init(contents: SortedKeyValues, range: EncodedKeyRange, direction: ScanDirection) {
        self.contents = contents
        self.remaining = contents.indices(of: range)
        self.direction = direction
    }

    func next() throws(StorageError) -> StorageEntry? {
        guard !remaining.isEmpty else { return nil }
        let index: Int
        switch direction {
        case .forward:
            index = remaining.lowerBound
            remaining = (index + 1)..<remaining.upperBound
        case .reverse:
            index = remaining.upperBound - 1
            remaining = remaining.lowerBound..<index
        }
        return StorageEntry(key: contents.keys[index], value: contents.values[index])
    }
}
