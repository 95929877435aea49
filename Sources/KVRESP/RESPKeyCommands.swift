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
            let now = try await current(args[0])
            guard let value = now.value, value.expiresAt != nil else { return .integer(0) }
            try await write(args[0], value.storedValue, expiresAt: nil, context: now.context)
            return .integer(1)
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
                do {
                    try await frontEnd.service.clearTable(try await frontEnd.table(ofDatabase: index))
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
            case let other: throw RESPCommandError("ERR Unsupported option \(other)")
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
        let now = try await current(args[0])
        guard let value = now.value else { return .integer(0) }
        // No expiry counts as an infinite one, as in Redis.
        let existing = value.expiresAt ?? Int64.max
        if onlyWithout && value.expiresAt != nil { return .integer(0) }
        if onlyWith && value.expiresAt == nil { return .integer(0) }
        if onlyLater && !(when > existing) { return .integer(0) }
        if onlyEarlier && !(when < existing) { return .integer(0) }
        if when <= Self.nowMilliseconds() {
            try await delete(args[0], context: now.context)
        } else {
            try await write(args[0], value.storedValue, expiresAt: when, context: now.context)
        }
        return .integer(1)
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
/// apply them to binary keys.
enum RESPGlob {
    static func matches(_ pattern: [UInt8], _ string: [UInt8]) -> Bool {
        matches(pattern[...], string[...], depth: 0)
    }

    /// Redis bounds the recursion of `*`, so a hostile pattern cannot take unbounded time.
    private static func matches(_ pattern: ArraySlice<UInt8>, _ string: ArraySlice<UInt8>, depth: Int) -> Bool
    {
        guard depth < 1000 else { return false }
        var pattern = pattern
        var string = string
        while let token = pattern.first {
            switch token {
            case UInt8(ascii: "*"):
                while pattern.first == UInt8(ascii: "*") { pattern = pattern.dropFirst() }
                if pattern.isEmpty { return true }
                var rest = string
                while true {
                    if matches(pattern, rest, depth: depth + 1) { return true }
                    guard !rest.isEmpty else { return false }
                    rest = rest.dropFirst()
                }
            case UInt8(ascii: "?"):
                guard !string.isEmpty else { return false }
                string = string.dropFirst()
                pattern = pattern.dropFirst()
            case UInt8(ascii: "["):
                guard let byte = string.first else { return false }
                pattern = pattern.dropFirst()
                let negate = pattern.first == UInt8(ascii: "^")
                if negate { pattern = pattern.dropFirst() }
                var matched = false
                while let item = pattern.first, item != UInt8(ascii: "]") {
                    if item == UInt8(ascii: "\\"), pattern.count >= 2 {
                        pattern = pattern.dropFirst()
                        if pattern.first == byte { matched = true }
                        pattern = pattern.dropFirst()
                    } else if pattern.count >= 3, pattern[pattern.startIndex + 1] == UInt8(ascii: "-") {
                        var low = item
                        var high = pattern[pattern.startIndex + 2]
                        if low > high { swap(&low, &high) }
                        if (low...high).contains(byte) { matched = true }
                        pattern = pattern.dropFirst(3)
                    } else {
                        if item == byte { matched = true }
                        pattern = pattern.dropFirst()
                    }
                }
                // An unterminated class ends at the pattern's end, as in Redis.
                if !pattern.isEmpty { pattern = pattern.dropFirst() }
                guard matched != negate else { return false }
                string = string.dropFirst()
            case UInt8(ascii: "\\") where pattern.count >= 2:
                pattern = pattern.dropFirst()
                guard string.first == pattern.first else { return false }
                string = string.dropFirst()
                pattern = pattern.dropFirst()
            default:
                guard string.first == token else { return false }
                string = string.dropFirst()
                pattern = pattern.dropFirst()
            }
        }
        return string.isEmpty
    }
}
