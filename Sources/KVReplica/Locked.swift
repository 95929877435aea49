import Synchronization

/// A value behind a mutex: the little state that the node's storage threads and its
/// event loop share (the table catalog, the context sealer, the anti-entropy trees, the
/// hint counts). No I/O is ever done while holding one.
package final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    /// Wraps `value`.
    package init(_ value: Value) {
        mutex = Mutex(value)
    }

    /// Runs `body` with exclusive access to the value.
    package func withLockedValue<Result: Sendable, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try mutex.withLock { (value: inout sending Value) throws(Failure) -> sending Result in
            try body(&value)
        }
    }
}
