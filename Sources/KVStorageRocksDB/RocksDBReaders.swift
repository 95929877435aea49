import CRocksDB
import KVCore
import KVStorage

/// A cursor over one range of one column family, backed by a RocksDB iterator.
///
/// The iterator pins the database state at creation (RocksDB gives every iterator an
/// implicit snapshot), which is what ``StorageReader/cursor(over:in:direction:)``
/// promises. The cursor holds the ``RocksDBDatabase`` (and, when made from a snapshot,
/// the snapshot) so neither can be freed under it. It lets go of the iterator and of both
/// references as soon as the range is exhausted, so an exhausted cursor that is kept
/// around neither pins memtables and table files nor keeps a closed database open.
final class RocksDBCursor: StorageCursor {
    /// Keeps the database open while the iterator lives; `nil` once released.
    private var database: RocksDBDatabase?
    /// Keeps the snapshot that `readOptions` points to alive; `nil` once released.
    private var snapshot: RocksDBSnapshot?
    private let keyspace: Keyspace
    private let direction: ScanDirection
    private let lowerBound: [UInt8]
    private let upperBound: [UInt8]?
    /// RocksDB keeps pointers to the bound bytes rather than copies; these own them.
    private let pinnedLowerBound: PinnedBytes?
    private let pinnedUpperBound: PinnedBytes?
    private var readOptions: OpaquePointer?
    private var iterator: OpaquePointer?
    private var started = false
    /// Once a scan failed every later call fails the same way, so a caller that ignores
    /// one error cannot mistake the end of a broken scan for the end of the range.
    private var failure: StorageError?

    /// Creates a cursor over the latest state, or over `snapshot`'s state when given.
    init(
        database: RocksDBDatabase, snapshot: RocksDBSnapshot?, range: EncodedKeyRange, keyspace: Keyspace,
        direction: ScanDirection
    ) {
        self.keyspace = keyspace
        self.direction = direction
        self.lowerBound = range.lowerBound
        self.upperBound = range.upperBound
        guard !range.isEmpty else {
            // Nothing to read: no iterator at all (RocksDB must never see lower > upper),
            // and so nothing to keep alive.
            pinnedLowerBound = nil
            pinnedUpperBound = nil
            return
        }
        self.database = database
        self.snapshot = snapshot
        let readOptions = rocksdb_readoptions_create()!
        if let snapshot { rocksdb_readoptions_set_snapshot(readOptions, snapshot.handle) }
        // The bounds let RocksDB skip table files and stop at the range's end itself;
        // the checks in next() stay anyway, so correctness never depends on them.
        if range.lowerBound.isEmpty {
            pinnedLowerBound = nil
        } else {
            let pinned = PinnedBytes(range.lowerBound)
            rocksdb_readoptions_set_iterate_lower_bound(readOptions, pinned.pointer, pinned.count)
            pinnedLowerBound = pinned
        }
        if let upperBound = range.upperBound {
            let pinned = PinnedBytes(upperBound)
            rocksdb_readoptions_set_iterate_upper_bound(readOptions, pinned.pointer, pinned.count)
            pinnedUpperBound = pinned
        } else {
            pinnedUpperBound = nil
        }
        self.readOptions = readOptions
        iterator = rocksdb_create_iterator_cf(database.handle, readOptions, database.family(keyspace))
    }

    deinit {
        release()
    }

    func next() throws(StorageError) -> StorageEntry? {
        if let failure { throw failure }
        guard let iterator else { return nil }
        if !started {
            started = true
            seekToStart(iterator)
        } else if direction == .forward {
            rocksdb_iter_next(iterator)
        } else {
            rocksdb_iter_prev(iterator)
        }
        while rocksdb_iter_valid(iterator) != 0 {
            var keyLength = 0
            let key = rocksdb_iter_key(iterator, &keyLength)!
            switch direction {
            case .forward:
                if let upperBound, Bytes.compare(key, count: keyLength, with: upperBound) >= 0 {
                    release()
                    return nil
                }
            case .reverse:
                if let upperBound, Bytes.compare(key, count: keyLength, with: upperBound) >= 0 {
                    // seek_for_prev lands on the upper bound itself when it exists, but the
                    // range excludes it.
                    rocksdb_iter_prev(iterator)
                    continue
                }
                if Bytes.compare(key, count: keyLength, with: lowerBound) < 0 {
                    release()
                    return nil
                }
            }
            var valueLength = 0
            let value = rocksdb_iter_value(iterator, &valueLength)
            return StorageEntry(
                key: Bytes.copy(key, count: keyLength), value: Bytes.copy(value, count: valueLength))
        }
        // An invalid iterator is either the end or a failure; only the error tells which.
        var error: UnsafeMutablePointer<CChar>? = nil
        rocksdb_iter_get_error(iterator, &error)
        release()
        do {
            try RocksDBError.check(error, .io, "scanning \(keyspace.rawValue)")
        } catch {
            failure = error
            throw error
        }
        return nil
    }

    private func seekToStart(_ iterator: OpaquePointer) {
        switch direction {
        case .forward:
            Bytes.with(lowerBound) { pointer, count in rocksdb_iter_seek(iterator, pointer, count) }
        case .reverse:
            if let upperBound {
                Bytes.with(upperBound) { pointer, count in
                    rocksdb_iter_seek_for_prev(iterator, pointer, count)
                }
            } else {
                rocksdb_iter_seek_to_last(iterator)
            }
        }
    }

    /// Frees the iterator, then its read options (the iterator reads them until
    /// destroyed), then drops the snapshot and the database, in that order, because each
    /// must outlive what came before it.
    private func release() {
        if let iterator { rocksdb_iter_destroy(iterator) }
        iterator = nil
        if let readOptions { rocksdb_readoptions_destroy(readOptions) }
        readOptions = nil
        snapshot = nil
        database = nil
    }
}

/// A RocksDB snapshot: reads through it see the database as it was when it was taken.
///
/// It holds the ``RocksDBDatabase`` so the database stays open while the snapshot lives,
/// even past ``RocksDBStorageEngine/close()``, and releases the RocksDB snapshot in
/// `deinit`. Reads through one snapshot may run on several threads at once: RocksDB reads
/// are thread-safe and the read options are never changed after `init`.
final class RocksDBSnapshot: StorageSnapshot, @unchecked Sendable {
    /// The RocksDB snapshot.
    let handle: OpaquePointer
    private let database: RocksDBDatabase
    private let readOptions: OpaquePointer

    /// Takes a snapshot of `database`'s current state.
    init(database: RocksDBDatabase) {
        self.database = database
        handle = rocksdb_create_snapshot(database.handle)!
        readOptions = rocksdb_readoptions_create()!
        rocksdb_readoptions_set_snapshot(readOptions, handle)
    }

    deinit {
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_release_snapshot(database.handle, handle)
    }

    func get(_ key: [UInt8], in keyspace: Keyspace) throws(StorageError) -> [UInt8]? {
        try database.get(key, in: keyspace, readOptions: readOptions)
    }

    func cursor(over range: EncodedKeyRange, in keyspace: Keyspace, direction: ScanDirection)
        throws(StorageError)
        -> any StorageCursor
    {
        RocksDBCursor(
            database: database, snapshot: self, range: range, keyspace: keyspace, direction: direction)
    }
}
