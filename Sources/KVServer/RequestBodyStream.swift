import KVCore
import NIOConcurrencyHelpers

/// A request body handed to the service while it is still arriving (a large value's
/// upload), with backpressure: once more than ``highWatermark`` bytes wait unread, the
/// connection stops reading from the socket until the service has taken the buffer down
/// to ``lowWatermark``, so a fast client cannot grow the server's memory.
///
/// The connection's event loop feeds it (``append(_:)``, ``finish()``, ``fail(_:)``); the
/// service's task takes pieces with ``next()``.
final class RequestBodyStream: ValueBody, Sendable {
    /// Bytes buffered before the connection stops reading.
    static let highWatermark = 4 << 20
    /// Bytes buffered below which a paused connection reads again.
    static let lowWatermark = 1 << 20

    private struct State {
        var pieces: [[UInt8]] = []
        var buffered = 0
        var ended = false
        var failure: KVError?
        var paused = false
        var waiter: CheckedContinuation<Result<[UInt8]?, KVError>, Never>?
    }

    private let state = NIOLockedValueBox(State())
    /// Asks the connection to read again (it hops to the event loop itself).
    private let resumeReading: @Sendable () -> Void

    init(resumeReading: @escaping @Sendable () -> Void) {
        self.resumeReading = resumeReading
    }

    /// Whether every byte of the body has arrived.
    var isComplete: Bool { state.withLockedValue { $0.ended } }

    /// Adds a piece that arrived; returns `true` when the connection should stop reading.
    func append(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty else { return false }
        let (waiter, pause) = state.withLockedValue {
            state -> (CheckedContinuation<Result<[UInt8]?, KVError>, Never>?, Bool) in
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, false)
            }
            state.pieces.append(bytes)
            state.buffered += bytes.count
            if state.buffered > Self.highWatermark { state.paused = true }
            return (nil, state.paused)
        }
        waiter?.resume(returning: .success(bytes))
        return pause
    }

    /// The body ended.
    func finish() {
        let waiter = state.withLockedValue { state in
            state.ended = true
            defer { state.waiter = nil }
            return state.pieces.isEmpty ? state.waiter : nil
        }
        waiter?.resume(returning: .success(nil))
    }

    /// The body will not end (the connection closed, the upload stalled).
    func fail(_ error: KVError) {
        let waiter = state.withLockedValue { state in
            guard !state.ended, state.failure == nil else {
                return nil as CheckedContinuation<Result<[UInt8]?, KVError>, Never>?
            }
            state.failure = error
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: .failure(error))
    }

    func next() async throws(KVError) -> [UInt8]? {
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<[UInt8]?, KVError>, Never>) in
            let (ready, resume) = state.withLockedValue { state -> (Result<[UInt8]?, KVError>?, Bool) in
                if !state.pieces.isEmpty {
                    let piece = state.pieces.removeFirst()
                    state.buffered -= piece.count
                    var resume = false
                    if state.paused && state.buffered <= Self.lowWatermark {
                        state.paused = false
                        resume = true
                    }
                    return (.success(piece), resume)
                }
                if let failure = state.failure { return (.failure(failure), false) }
                if state.ended { return (.success(nil), false) }
                state.waiter = continuation
                return (nil, false)
            }
            if resume { resumeReading() }
            if let ready { continuation.resume(returning: ready) }
        }
        return try result.get()
    }
}
