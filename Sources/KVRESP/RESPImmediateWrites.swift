import KVCore

/// `SET`s started where they arrive: a plain `SET key value` (no options) is started by
/// the listener through ``KeyValueService/startPut(_:value:options:completion:)``,
/// without a task or a hop into the session's actor, and answered when the store has
/// acknowledged it (on a node of its own, straight from the write drain). Anything else
/// takes the ordinary path, which gives the same answer and Redis's error texts.
extension RESPSession {
    /// Whether `arguments` could be a `SET` that ``immediateWrite(_:completion:)``
    /// starts: a cheap test of its shape, before anything is looked up.
    public nonisolated static func mayWriteImmediately(_ arguments: [[UInt8]]) -> Bool {
        arguments.count == 3 && isSet(arguments[0])
    }

    /// Starts `arguments` if it is a plain `SET` the store can start at once, and then
    /// calls `completion` once, from any thread, with its reply: `OK`, or the error the
    /// ordinary path would answer. `false` (and no call) when the command must take the
    /// ordinary path.
    ///
    /// The caller must have waited for every earlier command of the connection to be
    /// answered or started here, and must hold every later one that is not also started
    /// here until `completion` is called. Writes started together may be applied in any
    /// order, so they must be of different keys.
    public nonisolated func immediateWrite(
        _ arguments: [[UInt8]], completion: @escaping @Sendable (Reply) -> Void
    ) -> Bool {
        guard Self.mayWriteImmediately(arguments), arguments[2].count <= frontEnd.limits.maximumBulkBytes
        else { return false }
        let state = published.withLock { $0 }
        guard let grants = state.grants, grants.allows(.write, on: frontEnd.namespace),
            let table = frontEnd.existingTable(ofDatabase: state.database)
        else { return false }
        let protocolVersion = state.protocolVersion
        // The ordinary path's plain SET: a blind write, no condition, no expiry. A table
        // missing when the key is resolved declines the put (the ordinary path then
        // makes it again); one dropped later fails it with `table.changed`, as it fails
        // the ordinary path's write.
        return frontEnd.service.startPut(
            RowKey(table: table, parts: [.bytes(arguments[1])]), value: RowValue(bytes: arguments[2]),
            options: WriteOptions(context: nil)
        ) { outcome in
            let value: RESPValue = outcome.failure.map { .error(Self.oneLine(Self.text(of: $0))) } ?? .ok
            completion(Reply(value: value, closesConnection: false, protocolVersion: protocolVersion))
        }
    }

    /// Whether a command's name is `SET`, in any case.
    private static func isSet(_ name: [UInt8]) -> Bool {
        name.count == 3 && name[0] | 0x20 == UInt8(ascii: "s") && name[1] | 0x20 == UInt8(ascii: "e")
            && name[2] | 0x20 == UInt8(ascii: "t")
    }
}
