import CRocksDB
import Glibc
import KVStorage

/// A `pthread_rwlock_t` that prefers writers.
///
/// The lock lives in its own heap allocation because a pthread lock must never move in
/// memory, which a stored property of a Swift class does not promise. Writer preference
/// matters: the engine takes the lock shared for every operation and exclusive only in
/// rare places (``RocksDBStorageEngine/close()`` and open-ended range deletes); with
/// glibc's default reader preference a steady stream of readers could starve those
/// forever. The price is that nobody may take the shared lock twice on one thread (a
/// waiting writer would deadlock it), so no engine operation calls another one while
/// holding it.
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        let status = pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
        precondition(status == 0, "pthread_rwlock_init failed with \(status)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    /// Runs `body` holding the lock shared.
    func withSharedLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure)
        -> Result
    {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` holding the lock exclusively.
    func withExclusiveLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure)
        -> Result
    {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// The `char* errptr` convention of the RocksDB C API: a call that fails stores a
/// `malloc`ed message there, which the caller must free.
enum RocksDBError {
    /// Throws when `error` holds a message, freeing it either way.
    ///
    /// The kind comes from the message's status prefix when RocksDB names one we can
    /// map (`Corruption:`), so callers can tell a damaged store from a failing disk. The
    /// context is built only for a failure: every read passes one.
    static func check(
        _ error: UnsafeMutablePointer<CChar>?, _ kind: StorageError.Kind, _ context: @autoclosure () -> String
    ) throws(StorageError) {
        guard let error else { return }
        let message = String(cString: error)
        rocksdb_free(error)
        let resolvedKind: StorageError.Kind = message.hasPrefix("Corruption") ? .corruption : kind
        throw StorageError(resolvedKind, "\(context()): \(message)")
    }
}

/// Byte helpers shared by the engine, its cursors and its snapshots.
enum Bytes {
    /// One byte that outlives everything: the C API is handed this instead of a null
    /// pointer for an empty array, because some RocksDB paths `memcpy` from the pointer
    /// even when the length is zero, which is undefined behaviour for null.
    nonisolated(unsafe) private static let emptyByte: UnsafeMutablePointer<CChar> = {
        let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
        pointer.initialize(to: 0)
        return pointer
    }()

    /// Runs `body` with a pointer to `bytes` (never null) and their count.
    static func with<Result>(
        _ bytes: [UInt8], _ body: (UnsafePointer<CChar>, Int) -> Result
    ) -> Result {
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, !buffer.isEmpty else {
                return body(UnsafePointer(emptyByte), 0)
            }
            return base.withMemoryRebound(to: CChar.self, capacity: buffer.count) { body($0, buffer.count) }
        }
    }

    /// Copies `count` bytes at `pointer` into a new array.
    static func copy(_ pointer: UnsafePointer<CChar>?, count: Int) -> [UInt8] {
        guard let pointer, count > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            memcpy(buffer.baseAddress!, pointer, count)
            initialized = count
        }
    }

    /// Compares `count` bytes at `pointer` with `bytes` in byte order (memcmp, then length),
    /// without copying the C bytes into an array first.
    static func compare(_ pointer: UnsafePointer<CChar>, count: Int, with bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBufferPointer { buffer in
            let common = min(count, buffer.count)
            if common > 0 {
                let order = memcmp(pointer, buffer.baseAddress!, common)
                if order != 0 { return order }
            }
            return count == buffer.count ? 0 : (count < buffer.count ? -1 : 1)
        }
    }
}

/// A copy of some bytes at a fixed address.
///
/// `rocksdb_readoptions_set_iterate_upper_bound` and its lower-bound twin keep a pointer
/// to the caller's bytes instead of copying them, so the bytes must stay put for as long
/// as the read options (and any iterator made from them) live. A Swift array gives no
/// such promise outside `withUnsafeBufferPointer`, hence this owner, which its cursor
/// holds.
final class PinnedBytes {
    /// The first byte (never null, even when empty).
    let pointer: UnsafeMutablePointer<CChar>
    /// The number of bytes.
    let count: Int

    init(_ bytes: [UInt8]) {
        count = bytes.count
        pointer = .allocate(capacity: max(1, bytes.count))
        bytes.withUnsafeBufferPointer { buffer in
            if let base = buffer.baseAddress, !buffer.isEmpty {
                memcpy(pointer, base, buffer.count)
            }
        }
    }

    deinit {
        pointer.deallocate()
    }
}
