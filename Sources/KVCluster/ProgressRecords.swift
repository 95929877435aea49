import KVCore

/// A partition of one layout version, as a receipt or a release names it.
public struct LayoutPartition: Hashable, Sendable {
    /// The partition.
    public var partition: PartitionID
    /// The layout version the record is for (a newer layout makes it moot).
    public var layoutVersion: UInt64

    /// Creates a value.
    public init(_ partition: PartitionID, layoutVersion: UInt64) {
        self.partition = partition
        self.layoutVersion = layoutVersion
    }
}

/// How a machine writes its progress records (a new owner's receipts, a previous owner's
/// releases) into the cluster metadata: in batches, as a small pure state machine that
/// ``PartitionTransfers`` and ``PartitionRelease`` each hold.
///
/// Every record is a metadata change that each member decodes, merges and stores, so
/// during a handoff one change per partition kept every node busy with metadata. The
/// rules:
///
/// - A record made while nothing is being written is written at once, alone.
/// - While a batch is written, and for `coolDownMilliseconds` after it is, new records
///   wait; when the cool-down ends, everything that waited is written as one batch.
/// - A batch that could not be written is handed back to its machine (which retries its
///   partitions as it would one record), and the cool-down follows as after any batch.
///
/// So a node writes at most one progress change per cool-down (plus its write time),
/// and a lone record costs no delay.
public struct ProgressRecords: Sendable {
    /// What the machine must do next.
    public enum Step: Hashable, Sendable {
        /// Nothing.
        case none
        /// Write these records as one metadata change, then report
        /// ``ProgressRecords/written()``.
        case write([LayoutPartition])
        /// Start the cool-down timer `id`; report ``ProgressRecords/timerFired(id:)``.
        case startTimer(id: UInt64, afterMilliseconds: Int64)
    }

    private enum State: Hashable, Sendable {
        case idle
        case writing([LayoutPartition])
        case coolingDown(timer: UInt64)
    }

    /// The pause after each batch, during which new records wait.
    public let coolDownMilliseconds: Int64
    private var state = State.idle
    /// Records waiting for the next batch, in the order they were made.
    private var waiting: [LayoutPartition] = []

    /// Creates the batcher.
    public init(coolDownMilliseconds: Int64) {
        self.coolDownMilliseconds = coolDownMilliseconds
    }

    /// The records being written now.
    public var writing: [LayoutPartition] {
        if case .writing(let batch) = state { batch } else { [] }
    }

    /// Whether `record` is being written or waits to be.
    public func contains(_ record: LayoutPartition) -> Bool {
        writing.contains(record) || waiting.contains(record)
    }

    /// Whether `id` is the cool-down timer.
    public func ownsTimer(_ id: UInt64) -> Bool {
        state == .coolingDown(timer: id)
    }

    /// A record was made.
    public mutating func add(_ record: LayoutPartition) -> Step {
        guard !contains(record) else { return .none }
        guard state == .idle else {
            waiting.append(record)
            return .none
        }
        state = .writing([record])
        return .write([record])
    }

    /// The batch being written was written (or failed: the machine handles its records);
    /// the cool-down starts with timer `timerID`.
    public mutating func written(timerID: UInt64) -> Step {
        guard case .writing = state else { return .none }
        state = .coolingDown(timer: timerID)
        return .startTimer(id: timerID, afterMilliseconds: coolDownMilliseconds)
    }

    /// A timer fired: at the end of the cool-down, what waited is written.
    public mutating func timerFired(id: UInt64) -> Step {
        guard ownsTimer(id) else { return .none }
        guard !waiting.isEmpty else {
            state = .idle
            return .none
        }
        let batch = waiting
        waiting = []
        state = .writing(batch)
        return .write(batch)
    }
}
