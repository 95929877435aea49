import FoundationEssentials
import KVCore

/// A key's value as a Redis client sees it.
struct RESPString {
    /// The stored value that writes this string back unchanged: the merged counter for a
    /// counter (so a rewrite such as `EXPIRE` keeps every concurrent increment), the
    /// value itself otherwise (a value kept in chunks included).
    var storedValue: RowValue
    /// When it expires (wall clock, milliseconds), if it does.
    var expiresAt: Int64?
    /// The value's length in bytes as a client reads it, wherever the bytes are kept.
    var length: Int64

    /// The bytes: a counter reads as its decimal value. A value kept in chunks (written
    /// over HTTP, past the inline size) is not read into a reply.
    func bytes() throws -> [UInt8] {
        guard storedValue.largeValue == nil else {
            throw RESPCommandError(
                "ERR the value of this key is kept in chunks (written over HTTP); read it over HTTP")
        }
        if storedValue.contentType == CounterState.contentType,
            let counter = try? CounterState(decoding: storedValue.bytes)
        {
            return Array(String(counter.value).utf8)
        }
        return storedValue.bytes
    }
}

/// A key's current state: its value (if any), the context that supersedes it and the
/// ETag that names it.
struct RESPCurrent {
    var value: RESPString?
    var context: String
    var etag: String
}

/// What a read-modify-write makes of a key (see ``RESPSession/update(_:_:)``).
enum RESPUpdate {
    /// Write this value, with this expiry, and answer `reply`.
    case write(RowValue, expiresAt: Int64?, reply: RESPValue)
    /// Delete the key and answer `reply`.
    case delete(reply: RESPValue)
    /// Change nothing and answer `reply`.
    case keep(reply: RESPValue)
}

extension RESPSession {
    static func nowMilliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    func rowKey(_ key: [UInt8]) async throws -> RowKey {
        RowKey(table: try await frontEnd.table(ofDatabase: database), parts: [.bytes(key)])
    }

    /// What a read of the row returns, as a Redis string.
    static func string(of result: ReadResult) throws -> RESPString? {
        let siblings = result.siblings
        guard !siblings.isEmpty else { return nil }
        let expiry = siblings.compactMap(\.expiresAtMilliseconds).max()
        if siblings.allSatisfy({ $0.value?.contentType == CounterState.contentType }),
            let counter = try CounterState.merged(siblings)
        {
            return RESPString(
                storedValue: RowValue(bytes: counter.encoded(), contentType: CounterState.contentType),
                expiresAt: expiry, length: Int64(String(counter.value).utf8.count))
        }
        let latest = siblings.max { $0.timestampMilliseconds < $1.timestampMilliseconds } ?? siblings[0]
        guard let value = latest.value else { return nil }
        return RESPString(storedValue: value, expiresAt: latest.expiresAtMilliseconds, length: value.length)
    }

    func current(_ key: [UInt8]) async throws -> RESPCurrent {
        let result = try await frontEnd.service.get(try await rowKey(key))
        return RESPCurrent(value: try Self.string(of: result), context: result.context, etag: result.etag)
    }

    @discardableResult
    func write(
        _ key: [UInt8], _ value: RowValue, expiresAt: Int64?, context: String?,
        condition: WriteCondition = .none
    ) async throws -> WriteResult {
        guard value.bytes.count <= frontEnd.limits.maximumBulkBytes else { throw RESPCommandError.tooLarge }
        return try await frontEnd.service.put(
            try await rowKey(key), value: value,
            options: WriteOptions(context: context, condition: condition, expiresAtMilliseconds: expiresAt))
    }

    /// A read-modify-write of one key: reads it, asks `change` what to do, and does it
    /// on condition that the row is still the version read (`If-Match`). When another
    /// client changed the key in between, it starts over, so an update computed from the
    /// value before a concurrent `DEL` or `SET` never undoes it.
    func update(_ key: [UInt8], _ change: (RESPString?) throws -> RESPUpdate) async throws -> RESPValue {
        for attempt in 0..<Self.updateAttempts {
            let now = try await current(key)
            do {
                switch try change(now.value) {
                case .keep(let reply):
                    return reply
                case .write(let value, let expiresAt, let reply):
                    try await write(
                        key, value, expiresAt: expiresAt, context: now.context, condition: .ifMatch(now.etag))
                    return reply
                case .delete(let reply):
                    _ = try await frontEnd.service.delete(
                        try await rowKey(key),
                        options: WriteOptions(context: now.context, condition: .ifMatch(now.etag)))
                    return reply
                }
            } catch let error as KVError where error.code == .preconditionFailed {
                // Changed since the read (or its coordinating replica had not caught up
                // with the read yet): read again.
                try await Task.sleep(for: .milliseconds(attempt))
            }
        }
        throw RESPCommandError(
            "ERR the key changed \(Self.updateAttempts) times while this command ran; try again")
    }

    /// How often ``update(_:_:)`` starts over before it gives up.
    static let updateAttempts = 16

    // MARK: - Dispatch of data commands

    func runData(_ name: String, _ args: [[UInt8]]) async throws -> RESPValue {
        switch name {
        case "get": return try await current(args[0]).value.map { .bulk(try $0.bytes()) } ?? .null
        case "set": return try await set(args)
        case "setnx":
            return .integer(try await set([args[0], args[1], Array("NX".utf8)]) == .ok ? 1 : 0)
        case "getset": return try await set([args[0], args[1], Array("GET".utf8)])
        case "getdel":
            return try await update(args[0]) { value in
                guard let value else { return .keep(reply: .null) }
                return .delete(reply: .bulk(try value.bytes()))
            }
        case "mget":
            return .array(
                try await readMany(args).map { try $0.value.map { .bulk(try $0.bytes()) } ?? .null })
        case "mset", "msetnx": return try await setMany(args, onlyIfNoneExist: name == "msetnx")
        case "append":
            let limit = frontEnd.limits.maximumBulkBytes
            return try await update(args[0]) { value in
                let bytes = try (value?.bytes() ?? []) + args[1]
                guard bytes.count <= limit else { throw RESPCommandError.tooLarge }
                return .write(
                    RowValue(bytes: bytes), expiresAt: value?.expiresAt, reply: .integer(Int64(bytes.count)))
            }
        case "strlen": return .integer(try await current(args[0]).value?.length ?? 0)
        case "getrange": return try await getRange(args)
        case "setrange": return try await setRange(args)
        case "incr": return try await increment(args[0], by: 1)
        case "decr": return try await increment(args[0], by: -1)
        case "incrby":
            guard let delta = RESPNumbers.integer(args[1]) else { throw RESPCommandError.notInteger }
            return try await increment(args[0], by: delta)
        case "decrby":
            guard let delta = RESPNumbers.integer(args[1]) else { throw RESPCommandError.notInteger }
            guard delta != Int64.min else { throw RESPCommandError("ERR decrement would overflow") }
            return try await increment(args[0], by: -delta)
        case "incrbyfloat": return try await incrementFloat(args)
        default: return try await runKeys(name, args)
        }
    }

    // MARK: - SET

    /// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
    private func set(_ args: [[UInt8]]) async throws -> RESPValue {
        var onlyIfAbsent = false
        var onlyIfPresent = false
        var returnOld = false
        var keepTTL = false
        var expiry: Int64?
        var index = 2
        while index < args.count {
            let option = String(decoding: args[index], as: UTF8.self).uppercased()
            switch option {
            case "NX" where !onlyIfPresent: onlyIfAbsent = true
            case "XX" where !onlyIfAbsent: onlyIfPresent = true
            case "GET": returnOld = true
            case "KEEPTTL" where expiry == nil: keepTTL = true
            case let unit where ["EX", "PX", "EXAT", "PXAT"].contains(unit):
                guard expiry == nil, !keepTTL, index + 1 < args.count else { throw RESPCommandError.syntax }
                index += 1
                expiry = try Self.expiry(option, args[index], command: "set")
            default: throw RESPCommandError.syntax
            }
            index += 1
        }
        let key = args[0]
        let value = RowValue(bytes: args[1])
        if onlyIfAbsent && !returnOld {
            do {
                try await write(key, value, expiresAt: expiry, context: nil, condition: .ifAbsent)
                return .ok
            } catch let error as KVError where error.code == .preconditionFailed {
                return .null
            }
        }
        if !returnOld && !onlyIfPresent && !keepTTL {
            try await write(key, value, expiresAt: expiry, context: nil)
            return .ok
        }
        return try await update(key) { current in
            let old: RESPValue = returnOld ? try (current.map { .bulk(try $0.bytes()) } ?? .null) : .ok
            if onlyIfPresent && current == nil { return .keep(reply: returnOld ? old : .null) }
            if onlyIfAbsent && current != nil { return .keep(reply: old) }
            return .write(value, expiresAt: keepTTL ? current?.expiresAt : expiry, reply: old)
        }
    }

    /// The absolute expiry an `EX`/`PX`/`EXAT`/`PXAT` argument names; Redis's error for
    /// a number that is not positive or overflows.
    static func expiry(_ unit: String, _ argument: [UInt8], command: String) throws -> Int64 {
        guard let number = RESPNumbers.integer(argument) else { throw RESPCommandError.notInteger }
        let invalid = RESPCommandError("ERR invalid expire time in '\(command)' command")
        guard number > 0 else { throw invalid }
        let milliseconds: Int64
        if unit == "EX" || unit == "EXAT" {
            let (product, overflow) = number.multipliedReportingOverflow(by: 1000)
            guard !overflow else { throw invalid }
            milliseconds = product
        } else {
            milliseconds = number
        }
        if unit == "EXAT" || unit == "PXAT" { return milliseconds }
        let (sum, overflow) = milliseconds.addingReportingOverflow(nowMilliseconds())
        guard !overflow else { throw invalid }
        return sum
    }

    // MARK: - Several keys

    /// Reads keys through the store's batch, at most its batch size at a time.
    func readMany(_ keys: [[UInt8]]) async throws -> [RESPCurrent] {
        var results: [RESPCurrent] = []
        for start in stride(from: 0, to: keys.count, by: 500) {
            var operations: [BatchOperation] = []
            for key in keys[start..<min(keys.count, start + 500)] {
                operations.append(.get(try await rowKey(key)))
            }
            for item in try await frontEnd.service.batch(operations) {
                switch item {
                case .read(let result):
                    results.append(
                        RESPCurrent(
                            value: try Self.string(of: result), context: result.context, etag: result.etag))
                case .written: throw RESPCommandError("ERR the store answered a read with a write")
                case .failed(let error): throw error
                }
            }
        }
        return results
    }

    private func setMany(_ args: [[UInt8]], onlyIfNoneExist: Bool) async throws -> RESPValue {
        let name = onlyIfNoneExist ? "msetnx" : "mset"
        guard args.count % 2 == 0 else {
            throw RESPCommandError("ERR wrong number of arguments for '\(name)' command")
        }
        let pairs = stride(from: 0, to: args.count, by: 2).map { (args[$0], args[$0 + 1]) }
        if onlyIfNoneExist {
            // Not atomic across keys: each key is written only if absent, after a check
            // that none exists (docs/resp.md).
            if try await readMany(pairs.map(\.0)).contains(where: { $0.value != nil }) { return .integer(0) }
        }
        for start in stride(from: 0, to: pairs.count, by: 500) {
            var operations: [BatchOperation] = []
            for (key, value) in pairs[start..<min(pairs.count, start + 500)] {
                guard value.count <= frontEnd.limits.maximumBulkBytes else { throw RESPCommandError.tooLarge }
                operations.append(
                    .put(
                        try await rowKey(key), RowValue(bytes: value),
                        WriteOptions(condition: onlyIfNoneExist ? .ifAbsent : .none)))
            }
            for item in try await frontEnd.service.batch(operations) {
                if case .failed(let error) = item { throw error }
            }
        }
        return onlyIfNoneExist ? .integer(1) : .ok
    }

    // MARK: - Ranges

    private func getRange(_ args: [[UInt8]]) async throws -> RESPValue {
        guard var start = RESPNumbers.integer(args[1]), var end = RESPNumbers.integer(args[2]) else {
            throw RESPCommandError.notInteger
        }
        let bytes = try await current(args[0]).value?.bytes() ?? []
        let length = Int64(bytes.count)
        if start < 0 && end < 0 && start > end { return .bulk([]) }
        if start < 0 { start += length }
        if end < 0 { end += length }
        start = max(0, start)
        end = max(0, end)
        if end >= length { end = length - 1 }
        guard start <= end, length > 0 else { return .bulk([]) }
        return .bulk(Array(bytes[Int(start)...Int(end)]))
    }

    private func setRange(_ args: [[UInt8]]) async throws -> RESPValue {
        guard let offset = RESPNumbers.integer(args[1]) else { throw RESPCommandError.notInteger }
        guard offset >= 0 else { throw RESPCommandError("ERR offset is out of range") }
        let piece = args[2]
        // Checked without overflow: an offset near Int64.max is refused, not a crash.
        guard offset <= Int64(frontEnd.limits.maximumBulkBytes) - Int64(piece.count) else {
            throw RESPCommandError.tooLarge
        }
        return try await update(args[0]) { value in
            var bytes = try value?.bytes() ?? []
            if piece.isEmpty { return .keep(reply: .integer(Int64(bytes.count))) }
            let end = Int(offset) + piece.count
            if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
            bytes.replaceSubrange(Int(offset)..<end, with: piece)
            return .write(
                RowValue(bytes: bytes), expiresAt: value?.expiresAt, reply: .integer(Int64(bytes.count)))
        }
    }

    // MARK: - Counters

    /// `INCRBY` and friends: the store's counter, so concurrent increments through
    /// different nodes merge. The current value is checked first, for Redis's overflow
    /// error.
    private func increment(_ key: [UInt8], by delta: Int64) async throws -> RESPValue {
        if let bytes = try await current(key).value?.bytes() {
            guard let value = RESPNumbers.integer(bytes) else { throw RESPCommandError.notInteger }
            let (_, overflow) = value.addingReportingOverflow(delta)
            guard !overflow else { throw RESPCommandError("ERR increment or decrement would overflow") }
        }
        return .integer(try await frontEnd.service.increment(try await rowKey(key), by: delta))
    }

    /// `INCRBYFLOAT`: a read-modify-write of the text (``update(_:_:)``); concurrent
    /// float increments of one key through different nodes may resolve by last writer.
    private func incrementFloat(_ args: [[UInt8]]) async throws -> RESPValue {
        guard let increment = RESPNumbers.double(args[1]) else { throw RESPCommandError.notFloat }
        return try await update(args[0]) { value in
            var base = 0.0
            if let bytes = try value?.bytes() {
                guard let number = RESPNumbers.double(bytes) else { throw RESPCommandError.notFloat }
                base = number
            }
            let result = base + increment
            guard result.isFinite else {
                throw RESPCommandError("ERR increment would produce NaN or Infinity")
            }
            let text = Array(RESPNumbers.text(result).utf8)
            return .write(RowValue(bytes: text), expiresAt: value?.expiresAt, reply: .bulk(text))
        }
    }
}
