import KVCore

/// `GET`s answered where they arrive: when the store can answer a read at once from
/// this node's own replica (``KeyValueService/immediateGet(_:)``, which it does only
/// where its coordinator would read that replica alone), the listener replies without
/// a task, a hop into the session's actor or a round of the coordinator. Anything else
/// (an error, a table not made yet, access not granted, a read the store must
/// coordinate) takes the ordinary path, which gives the same answer and Redis's error
/// texts.
extension RESPSession {
    /// The reply to `arguments` if it is a `GET` that can be answered at once, else `nil`.
    ///
    /// The caller must have waited for every earlier command of the connection that
    /// touches the same key or runs alone (as ``RESPSession/keys(of:)`` says), exactly as
    /// it would before running the command through ``execute(_:)``.
    public nonisolated func immediateReply(to arguments: [[UInt8]]) -> Reply? {
        guard arguments.count == 2, Self.isGet(arguments[0]) else { return nil }
        let state = published.withLock { $0 }
        guard let grants = state.grants, grants.allows(.read, on: frontEnd.namespace),
            let table = frontEnd.existingTable(ofDatabase: state.database),
            let result = try? frontEnd.service.immediateGet(
                RowKey(table: table, parts: [.bytes(arguments[1])])),
            let value = try? Self.string(of: result).map({ RESPValue.bulk(try $0.bytes()) }) ?? .null
        else { return nil }
        return Reply(value: value, closesConnection: false, protocolVersion: state.protocolVersion)
    }

    /// Whether a command's name is `GET`, in any case.
    private static func isGet(_ name: [UInt8]) -> Bool {
        name.count == 3 && name[0] | 0x20 == UInt8(ascii: "g") && name[1] | 0x20 == UInt8(ascii: "e")
            && name[2] | 0x20 == UInt8(ascii: "t")
    }
}
