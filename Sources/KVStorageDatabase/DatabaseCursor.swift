import KVCore
import KVStorage
import Synchronization

/// Walks a range page by page, each page fetched by `fetch`.
///
/// After each page the range shrinks past the last key returned (forward: the key's
/// immediate successor becomes the lower bound; reverse: the key becomes the exclusive
/// upper bound), so a page query only ever sees a half-open range.
final class PagedCursor: StorageCursor {
    typealias Fetch = (EncodedKeyRange) throws(StorageError) -> RangePage
    private var remaining: EncodedKeyRange
    private let direction: ScanDirection
    private let fetch: Fetch
    private var atEnd: (() -> Void)?
    private var buffered: [StorageEntry] = []
    private var position = 0
    private var isExhausted: Bool

    /// `atEnd` runs once, when the cursor has returned its last entry.
    init(range: EncodedKeyRange, direction: ScanDirection, fetch: @escaping Fetch, atEnd: (() -> Void)? = nil)
    {
        self.remaining = range
        self.direction = direction
        self.fetch = fetch
        self.atEnd = atEnd
        self.isExhausted = range.isEmpty
    }

    func next() throws(StorageError) -> StorageEntry? {
        while position == buffered.count {
            guard !isExhausted else {
                atEnd?()
                atEnd = nil
                return nil
            }
            let page = try fetch(remaining)
            buffered = page.entries
            position = 0
            isExhausted = page.isLast
            if let last = page.entries.last {
                switch direction {
                case .forward: remaining.lowerBound = last.key.immediateSuccessor
                case .reverse: remaining.upperBound = last.key
                }
                if remaining.isEmpty { isExhausted = true }
            }
        }
        defer { position += 1 }
        return buffered[position]
    }
}

/// A frozen view of every keyspace, shareable between threads: readers take turns on its
/// one session.
final class DatabaseSnapshot<Connection: DatabaseConnection>: StorageSnapshot {
    private let session: Mutex<SnapshotSession<Connection>>
    private let pageSize: Int

    init(session: SnapshotSession<Connection>, pageSize: Int) {
        self.session = Mutex(session)
        self.pageSize = pageSize
    }

    func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try session.withLock { session throws(StorageError) in
            try session.read { connection throws(StorageError) in try connection.get(key, in: keyspace) }
        }
    }

    func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError) -> any StorageCursor
    {
        PagedCursor(range: range, direction: direction) { remaining throws(StorageError) in
            try self.page(of: remaining, in: keyspace, direction: direction)
        }
    }

    /// One page for a cursor of this snapshot, read under the lock.
    func page(of range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection) throws(StorageError)
        -> RangePage
    {
        try session.withLock { session throws(StorageError) in
            try session.read { connection throws(StorageError) in
                try connection.page(of: range, in: keyspace, direction: direction, limit: pageSize)
            }
        }
    }
}
