// StorageCrashWriter <db-path> <threads> <writes-per-thread> [large]
//
// A test helper for RocksDBCrashTests: writes through the RocksDB engine from several
// threads and reports every write that the engine acknowledged, so the test can kill -9
// this process at a random moment and check that every reported write survived.
//
// Thread t writes keys "t<t>-<seq>" for seq = 0, 1, … in order, each as its own
// single-put batch with `.synced` durability, and prints `committed <key>` only after
// `write` returned. The value of a key is `crashWriterValue(for:)`; the test computes
// the same function, so keep the two in step.
//
// With `large`, each value is `crashWriterLargeValue(for:)`, over the engine's unlogged
// batch size, so every write skips the WAL and is made durable by a flush instead; and
// each batch also puts the key into the anti-entropy keyspace, so the test can check that
// a flushed batch is all-or-nothing across keyspaces.

import Foundation
import KVStorage
import KVStorageRocksDB

/// The value written for `key`: the key, a separator, and the key again reversed, so a
/// value that belongs to another key (or a truncated one) never matches.
func crashWriterValue(for key: String) -> [UInt8] {
    Array("value-of-\(key)|\(String(key.reversed()))".utf8)
}

/// The `large` mode's value of `key`: `crashWriterValue(for:)` repeated to 600 KiB.
func crashWriterLargeValue(for key: String) -> [UInt8] {
    let base = crashWriterValue(for: key)
    var value: [UInt8] = []
    value.reserveCapacity((600 << 10) + base.count)
    while value.count < 600 << 10 { value.append(contentsOf: base) }
    return value
}

/// Writes lines to standard output with write(2), one whole line per call, under a lock.
///
/// Not `print`: stdio buffering could hold acknowledged lines in this process's memory
/// when it is killed, and the test would then miss them. With one write(2) per line the
/// kernel has each line (in the pipe) before the next write starts, and the lock keeps
/// lines of different threads from interleaving.
final class LineWriter: Sendable {
    private let lock = NSLock()

    func writeLine(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        lock.lock()
        defer { lock.unlock() }
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                // The reader is gone (EPIPE): nobody will check this run anyway.
                exit(3)
            }
            offset += written
        }
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("StorageCrashWriter: \(message)\n".utf8))
    exit(1)
}

let arguments = CommandLine.arguments
guard arguments.count == 4 || (arguments.count == 5 && arguments[4] == "large"),
    let threadCount = Int(arguments[2]), threadCount > 0,
    let writesPerThread = Int(arguments[3]), writesPerThread >= 0
else {
    fail("usage: StorageCrashWriter <db-path> <threads> <writes-per-thread> [large]")
}
let large = arguments.count == 5

// A closed reader must not kill us with SIGPIPE before we can exit cleanly.
signal(SIGPIPE, SIG_IGN)

let engine: RocksDBStorageEngine
do {
    engine = try RocksDBStorageEngine(path: arguments[1])
} catch {
    fail("cannot open \(arguments[1]): \(error)")
}

let output = LineWriter()
let finished = DispatchGroup()
// Real threads, not a Dispatch pool: the pool is sized to the cores (2 here), and the
// point is several writers blocked in fsync at the same time.
for thread in 0..<threadCount {
    finished.enter()
    let worker = Thread {
        for sequence in 0..<writesPerThread {
            let key = "t\(thread)-\(sequence)"
            var batch = WriteBatch()
            if large {
                batch.put(Array(key.utf8), crashWriterLargeValue(for: key))
                batch.put(Array(key.utf8), [1], in: .antiEntropy)
            } else {
                batch.put(Array(key.utf8), crashWriterValue(for: key))
            }
            do {
                try engine.write(batch, durability: .synced)
            } catch {
                fail("writing \(key): \(error)")
            }
            output.writeLine("committed \(key)")
        }
        finished.leave()
    }
    worker.start()
}
finished.wait()

do {
    try engine.close()
} catch {
    fail("closing: \(error)")
}
output.writeLine("done")
exit(0)
