/// Counters of a ``RocksDBStorageEngine`` since it was opened, read from RocksDB's own
/// statistics object.
///
/// They mainly show group commit at work: RocksDB's write thread makes one writer the
/// leader of every group of concurrent writers; the leader appends the whole group to the
/// WAL and syncs it once. So ``writeGroups`` (= ``writesDoneBySelf``) counts groups,
/// ``writesDoneByOther`` counts writes that rode along in another writer's group, and with
/// concurrent synced writers ``walSyncs`` stays well below the number of writes.
public struct RocksDBStatistics: Sendable, Hashable {
    /// WAL fsyncs (`rocksdb.wal.synced`): one per group that held a synced write.
    public var walSyncs: UInt64
    /// Writes whose own thread led their group (`rocksdb.write.self`).
    public var writesDoneBySelf: UInt64
    /// Writes carried out by another thread's group (`rocksdb.write.other`).
    public var writesDoneByOther: UInt64
    /// Writes that went through the WAL (`rocksdb.write.wal`).
    public var walWrites: UInt64
    /// Bytes appended to the WAL (`rocksdb.wal.bytes`).
    public var walBytes: UInt64
    /// Every ticker RocksDB reported, by its RocksDB name (for example
    /// `rocksdb.block.cache.miss`), for diagnostics beyond the named fields.
    public var tickers: [String: UInt64]

    /// Creates statistics from RocksDB's tickers; a missing ticker counts as zero.
    public init(tickers: [String: UInt64]) {
        self.tickers = tickers
        walSyncs = tickers["rocksdb.wal.synced", default: 0]
        writesDoneBySelf = tickers["rocksdb.write.self", default: 0]
        writesDoneByOther = tickers["rocksdb.write.other", default: 0]
        walWrites = tickers["rocksdb.write.wal", default: 0]
        walBytes = tickers["rocksdb.wal.bytes", default: 0]
    }

    /// The number of write groups: every group has exactly one leader, which counts its
    /// own write as done by self.
    public var writeGroups: UInt64 { writesDoneBySelf }

    /// The number of writes, whether they led their group or not.
    public var writes: UInt64 { writesDoneBySelf + writesDoneByOther }

    /// Parses the text of `rocksdb_options_statistics_get_string`.
    ///
    /// Tickers are lines of exactly `name COUNT : value`; histogram lines
    /// (`name P50 : … COUNT : n SUM : s`) have more fields and are skipped.
    static func parse(_ text: String) -> RocksDBStatistics {
        var tickers: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 4, fields[1] == "COUNT", fields[2] == ":", let value = UInt64(fields[3])
            else {
                continue
            }
            tickers[String(fields[0])] = value
        }
        return RocksDBStatistics(tickers: tickers)
    }
}
