import KVCore
import KVStorage

/// Runs storage work whose calls throw several error types, and reports every failure as
/// a ``KVError``: storage errors by their own codes, `KVError`s as they are, anything
/// else as `server.internal` naming `what` failed.
package func storageWork<Result>(_ what: String, _ body: () throws -> Result) throws(KVError) -> Result {
    do {
        return try body()
    } catch let error as StorageError {
        throw error.asKVError
    } catch let error as KVError {
        throw error
    } catch {
        throw KVError(.internalError, "\(what) failed", underlying: error)
    }
}
