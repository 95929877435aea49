import Foundation
import Glibc
import KVClient
import KVCore
import NIOConcurrencyHelpers

/// A file (or standard input) read as a value's body, a MiB at a time, reporting each
/// piece to a progress bar.
final class FileBody: ValueBody, Sendable {
    private let descriptor: Int32
    private let progress: TransferProgress

    /// Opens `path` (`-` for standard input).
    init(path: String, progress: TransferProgress) throws {
        descriptor = path == "-" ? STDIN_FILENO : open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw KVError(.invalidRequest, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        self.progress = progress
    }

    /// The size of a regular file, or `nil` (standard input, a pipe).
    static func size(of path: String) -> Int64? {
        guard path != "-", let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            (attributes[.type] as? FileAttributeType) == .typeRegular
        else { return nil }
        return (attributes[.size] as? NSNumber)?.int64Value
    }

    func next() async throws(KVError) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count >= 0 else {
            throw KVError(.invalidRequest, "reading the value failed: \(String(cString: strerror(errno)))")
        }
        guard count > 0 else { return nil }
        progress.add(count)
        return count == buffer.count ? buffer : Array(buffer[0..<count])
    }

    deinit { if descriptor != STDIN_FILENO { close(descriptor) } }
}

/// A file a downloaded value is written to as it arrives.
final class FileSink: Sendable {
    private let descriptor: Int32
    private let progress: TransferProgress
    private let failure = NIOLockedValueBox<String?>(nil)

    /// Creates (or truncates) `path`.
    init(path: String, progress: TransferProgress) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw KVError(.invalidRequest, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        self.progress = progress
    }

    /// Writes one piece (on the connection's event loop: the server waits meanwhile).
    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes {
                Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset)
            }
            guard written > 0 else {
                failure.withLockedValue { $0 = String(cString: strerror(errno)) }
                return
            }
            offset += written
        }
        progress.add(bytes.count)
    }

    /// Flushes the file; throws if any write failed.
    func finish() throws {
        if let message = failure.withLockedValue({ $0 }) {
            throw KVError(.invalidRequest, "writing the value failed: \(message)")
        }
        guard fsync(descriptor) == 0 || errno == EINVAL else {
            throw KVError(.invalidRequest, "writing the value failed: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }
}

/// A progress bar on standard error, drawn only when it is a terminal: bytes so far,
/// the share of the total when it is known, and the rate.
final class TransferProgress: Sendable {
    private struct State {
        var bytes: Int64 = 0
        var total: Int64?
        var lastDrawn: Double = 0
    }

    private let state = NIOLockedValueBox(State())
    private let started = Date()
    private let visible = isatty(STDERR_FILENO) == 1

    /// Sets the total once it is known.
    func expect(_ total: Int64?) { state.withLockedValue { $0.total = total } }

    /// Counts `count` more bytes, redrawing at most ten times a second.
    func add(_ count: Int) {
        guard visible else { return }
        let now = Date().timeIntervalSince(started)
        let line = state.withLockedValue { state -> String? in
            state.bytes += Int64(count)
            guard now - state.lastDrawn >= 0.1 else { return nil }
            state.lastDrawn = now
            return Self.line(bytes: state.bytes, total: state.total, seconds: now)
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    /// Draws the final state and ends the line.
    func finish() {
        guard visible else { return }
        let (bytes, total) = state.withLockedValue { ($0.bytes, $0.total) }
        let line = Self.line(bytes: bytes, total: total, seconds: Date().timeIntervalSince(started))
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func line(bytes: Int64, total: Int64?, seconds: Double) -> String {
        let mebibytes = Double(bytes) / 1_048_576
        let rate = seconds > 0 ? mebibytes / seconds : 0
        guard let total, total > 0 else {
            return String(format: "\r%.1f MiB  %.1f MiB/s   ", mebibytes, rate)
        }
        let share = min(1, Double(bytes) / Double(total))
        let filled = Int(share * 30)
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: 30 - filled)
        return String(
            format: "\r[%@] %3.0f%%  %.1f/%.1f MiB  %.1f MiB/s   ", bar, share * 100, mebibytes,
            Double(total) / 1_048_576, rate)
    }
}
