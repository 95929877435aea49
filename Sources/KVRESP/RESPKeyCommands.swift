import KVCore

extension RESPSession {
    func runKeys(_ name: String, _ args: [[UInt8]]) async throws -> RESPValue {
        switch name {
        case "del", "unlink": return .integer(try await deleteKeys(args))
        case "exists": return .integer(Int64(try await readMany(args).filter { $0.value != nil }.count))
        case "type": return .simple(try await current(args[0]).value == nil ? "none" : "string")
        case "expire", "pexpire", "expireat", "pexpireat": return try await expire(name, args)
        case "ttl", "pttl", "expiretime", "pexpiretime":
            guard let value = try await current(args[0]).value else { return .integer(-2) }
            guard let expiry = value.expiresAt else { return .integer(-1) }
            let remaining = max(0, expiry - Self.nowMilliseconds())
            switch name {
            case "ttl": return .integer((remaining + 500) / 1000)
            case "pttl": return .integer(remaining)
            case "expiretime": return .integer(expiry / 1000)
            default: return .integer(expiry)
            }
        case "persist":
            return try await update(args[0]) { value in
                guard let value, value.expiresAt != nil else { return .keep(reply: .integer(0)) }
                return .write(value.storedValue, expiresAt: nil, reply: .integer(1))
            }
        case "scan": return try await scan(args)
        case "keys":
            var keys: [RESPValue] = []
            try await forEachKey(pageSize: 1000) { key in
                guard RESPGlob.matches(args[0], key) else { return }
                guard keys.count < Self.maximumKeysReply else {
                    throw RESPCommandError(
                        "ERR KEYS would return more than \(Self.maximumKeysReply) keys; use SCAN")
                }
                keys.append(.bulk(key))
            }
            return .array(keys)
        case "dbsize":
            var count: Int64 = 0
            try await forEachKey(pageSize: 1000) { _ in count += 1 }
            return .integer(count)
        case "flushdb", "flushall":
            guard args.count <= 1 else { throw RESPCommandError.syntax }
            if let mode = args.first.map({ String(decoding: $0, as: UTF8.self).uppercased() }) {
                guard mode == "ASYNC" || mode == "SYNC" else { throw RESPCommandError.syntax }
            }
            let databases = name == "flushdb" ? [database] : Array(0..<frontEnd.databaseCount)
            for index in databases {
                // A database never used has no table: nothing to clear, none to create.
                let table = try TableName(namespace: frontEnd.namespace, table: "db\(index)")
                do {
                    try await frontEnd.service.clearTable(table)
                } catch {
                    guard error.code == .tableNotFound else { throw error }
                    frontEnd.forgetTable(ofDatabase: index)
                }
            }
            return .ok
        default:
            throw RESPCommandError("ERR command '\(name)' has no handler")
        }
    }

    /// The most keys one `KEYS` reply holds.
    static let maximumKeysReply = 1_000_000

    /// Deletes each key that exists, with the context of its read, and counts them.
    private func deleteKeys(_ keys: [[UInt8]]) async throws -> Int64 {
        var seen = Set<[UInt8]>()
        let unique = keys.filter { seen.insert($0).inserted }
        let reads = try await readMany(unique)
        var deleted: Int64 = 0
        var operations: [BatchOperation] = []
        for (key, read) in zip(unique, reads) where read.value != nil {
            operations.append(.delete(try await rowKey(key), WriteOptions(context: read.context)))
        }
        for start in stride(from: 0, to: operations.count, by: 500) {
            for item in try await frontEnd.service.batch(
                Array(operations[start..<min(operations.count, start + 500)]))
            {
                if case .failed(let error) = item { throw error }
                deleted += 1
            }
        }
        return deleted
    }

    /// `EXPIRE key seconds [NX|XX|GT|LT]` and its millisecond and absolute forms.
    private func expire(_ name: String, _ args: [[UInt8]]) async throws -> RESPValue {
        guard let number = RESPNumbers.integer(args[1]) else { throw RESPCommandError.notInteger }
        var onlyWithout = false
        var onlyWith = false
        var onlyLater = false
        var onlyEarlier = false
        for option in args.dropFirst(2) {
            switch String(decoding: option, as: UTF8.self).uppercased() {
            case "NX": onlyWithout = true
            case "XX": onlyWith = true
            case "GT": onlyLater = true
            case "LT": onlyEarlier = true
            default:
                throw RESPCommandError("ERR Unsupported option \(String(decoding: option, as: UTF8.self))")
            }
        }
        if onlyWithout && (onlyWith || onlyLater || onlyEarlier) {
            throw RESPCommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
        }
        if onlyLater && onlyEarlier {
            throw RESPCommandError("ERR GT and LT options at the same time are not compatible")
        }
        let invalid = RESPCommandError("ERR invalid expire time in '\(name)' command")
        let inSeconds = name == "expire" || name == "expireat"
        var milliseconds = number
        if inSeconds {
            let (product, overflow) = number.multipliedReportingOverflow(by: 1000)
            guard !overflow else { throw invalid }
            milliseconds = product
        }
        var when = milliseconds
        if name == "expire" || name == "pexpire" {
            let (sum, overflow) = milliseconds.addingReportingOverflow(Self.nowMilliseconds())
            guard !overflow else { throw invalid }
            when = sum
        }
        return try await update(args[0]) { value in
            guard let value else { return .keep(reply: .integer(0)) }
            // No expiry counts as an infinite one, as in Redis.
            let existing = value.expiresAt ?? Int64.max
            if onlyWithout && value.expiresAt != nil { return .keep(reply: .integer(0)) }
            if onlyWith && value.expiresAt == nil { return .keep(reply: .integer(0)) }
            if onlyLater && !(when > existing) { return .keep(reply: .integer(0)) }
            if onlyEarlier && !(when < existing) { return .keep(reply: .integer(0)) }
            if when <= Self.nowMilliseconds() { return .delete(reply: .integer(1)) }
            return .write(value.storedValue, expiresAt: when, reply: .integer(1))
        }
    }

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
    private func scan(_ args: [[UInt8]]) async throws -> RESPValue {
        guard let cursor = UInt64(String(decoding: args[0], as: UTF8.self)) else {
            throw RESPCommandError("ERR invalid cursor")
        }
        var pattern: [UInt8]?
        var count = 10
        var onlyStrings = true
        var index = 1
        while index < args.count {
            let option = String(decoding: args[index], as: UTF8.self).uppercased()
            guard index + 1 < args.count else { throw RESPCommandError.syntax }
            switch option {
            case "MATCH": pattern = args[index + 1]
            case "COUNT":
                guard let number = RESPNumbers.integer(args[index + 1]) else {
                    throw RESPCommandError.notInteger
                }
                guard number >= 1 else { throw RESPCommandError.syntax }
                count = Int(min(number, Int64(ScanRequest.maximumLimit)))
            case "TYPE":
                onlyStrings = String(decoding: args[index + 1], as: UTF8.self).lowercased() == "string"
            default: throw RESPCommandError.syntax
            }
            index += 2
        }
        var continuation: String?
        if cursor != 0 {
            guard let saved = frontEnd.cursor(cursor, database: database) else {
                throw RESPCommandError("ERR invalid cursor")
            }
            continuation = saved
        }
        let page = try await frontEnd.service.scan(
            ScanRequest(
                table: try await frontEnd.table(ofDatabase: database), limit: count, keysOnly: true,
                continuation: continuation))
        var keys: [RESPValue] = []
        for row in page.rows {
            guard onlyStrings, case .bytes(let key) = row.key.first else { continue }
            if let pattern, !RESPGlob.matches(pattern, key) { continue }
            keys.append(.bulk(key))
        }
        let next = page.continuation.map { frontEnd.saveCursor(database: database, continuation: $0) } ?? 0
        return .array([.bulk(String(next)), .array(keys)])
    }

    /// Calls `body` with every key of the selected database, in key order.
    private func forEachKey(pageSize: Int, _ body: ([UInt8]) throws -> Void) async throws {
        let table = try await frontEnd.table(ofDatabase: database)
        var continuation: String?
        repeat {
            let page = try await frontEnd.service.scan(
                ScanRequest(table: table, limit: pageSize, keysOnly: true, continuation: continuation))
            for row in page.rows {
                if case .bytes(let key) = row.key.first { try body(key) }
            }
            continuation = page.continuation
        } while continuation != nil
    }
}

/// Redis's glob patterns (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as `KEYS` and `SCAN MATCH`
/// apply them to binary keys. Matching backtracks only to the last `*`, so it takes time
/// proportional to the pattern times the key whatever the pattern (a pattern of many
/// stars cannot make it exponential).
enum RESPGlob {
    static func matches(_ pattern: [UInt8], _ string: [UInt8]) -> Bool {
        var p = 0
        var s = 0
        var star: (pattern: Int, string: Int)?
        while s < string.count {
            if p < pattern.count {
                if pattern[p] == UInt8(ascii: "*") {
                    while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
                    star = (p, s)
                    continue
                }
                if let next = matchOne(pattern, at: p, string[s]) {
                    p = next
                    s += 1
                    continue
                }
            }
            guard let last = star else { return false }
            // Let the last star take one more byte and try again from there.
            star = (last.pattern, last.string + 1)
            p = last.pattern
            s = last.string + 1
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }

    /// Whether the pattern element at `index` (not a star) matches `byte`; the index of
    /// the next element if it does.
    private static func matchOne(_ pattern: [UInt8], at index: Int, _ byte: UInt8) -> Int? {
        switch pattern[index] {
        case UInt8(ascii: "?"):
            return index + 1
        case UInt8(ascii: "\\") where index + 1 < pattern.count:
            return pattern[index + 1] == byte ? index + 2 : nil
        case UInt8(ascii: "["):
            var position = index + 1
            let negate = position < pattern.count && pattern[position] == UInt8(ascii: "^")
            if negate { position += 1 }
            var matched = false
            while position < pattern.count, pattern[position] != UInt8(ascii: "]") {
                if pattern[position] == UInt8(ascii: "\\"), position + 1 < pattern.count {
                    if pattern[position + 1] == byte { matched = true }
                    position += 2
                } else if position + 2 < pattern.count, pattern[position + 1] == UInt8(ascii: "-") {
                    let low = min(pattern[position], pattern[position + 2])
                    let high = max(pattern[position], pattern[position + 2])
                    if (low...high).contains(byte) { matched = true }
                    position += 3
                } else {
                    if pattern[position] == byte { matched = true }
                    position += 1
                }
            }
            // An unterminated class ends at the pattern's end, as in Redis.
            return matched != negate ? min(position + 1, pattern.count) : nil
        case let literal:
            return literal == byte ? index + 1 : nil
        }
    }
}
