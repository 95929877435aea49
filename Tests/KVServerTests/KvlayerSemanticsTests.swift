import KVCore
import Testing

/// kvlayer's test cases, the semantic spec of tables and scans, against every service.
@Suite("kvlayer semantics")
struct KvlayerSemanticsTests {
    /// Writes rows in batches of up to 1,000 (the batch limit).
    static func load(_ service: any KeyValueService, _ rows: [(RowKey, RowValue)]) async throws {
        for start in stride(from: 0, to: rows.count, by: 1000) {
            let results = try await service.batch(
                rows[start..<min(start + 1000, rows.count)].map { .put($0.0, $0.1, WriteOptions()) })
            for result in results {
                if case .failed(let error) = result { throw error }
            }
        }
    }

    /// Follows continuation tokens to the end, returning every row's key.
    static func scanAll(_ service: any KeyValueService, _ request: ScanRequest) async throws -> [[KeyPart]] {
        var request = request
        var keys: [[KeyPart]] = []
        while true {
            let page = try await service.scan(request)
            keys += page.rows.map(\.key)
            guard let continuation = page.continuation else { return keys }
            request.continuation = continuation
        }
    }

    @Test(arguments: ServiceKind.allCases + ServiceKind.onDatabases)
    func multiGetReturnsEveryKeyInOrder(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("kvl", "t")
            _ = try await service.createTable(TableDescriptor(name: t, schema: try KeySchema([.string])))
            try await Self.load(
                service,
                [
                    (RowKey(table: t, parts: [.string("a")]), text("1")),
                    (RowKey(table: t, parts: [.string("c")]), text("3")),
                ])
            let results = try await service.batch(
                ["c", "b", "a", "b"].map { .get(RowKey(table: t, parts: [.string($0)])) })
            let values = results.map { result -> String? in
                guard case .read(let read) = result, let value = read.siblings.first?.value else {
                    return nil
                }
                return String(decoding: value.bytes, as: UTF8.self)
            }
            #expect(values == ["3", nil, "1", nil])
            // Deleting missing keys is a no-op; an empty batch does nothing.
            let deleted = try await service.batch([
                .delete(RowKey(table: t, parts: [.string("zz")]), WriteOptions())
            ])
            if case .failed(let error) = deleted.first {
                Issue.record("deleting a missing key failed: \(error)")
            }
            #expect(deleted.count == 1)
            #expect(try await service.batch([]).isEmpty)
        }
    }

    @Test(arguments: ServiceKind.allCases + ServiceKind.onDatabases)
    func scansAreOrderedInclusiveAndPrefixAware(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("kvl", "scan")
            _ = try await service.createTable(
                TableDescriptor(name: t, schema: try KeySchema([.string, .int64], partitionKeyLength: 1)))
            let keys: [[KeyPart]] = ["a", "ab", "b", "c"].flatMap { first in
                (1...3).map { [.string(first), .int64(Int64($0))] }
            }
            try await Self.load(service, keys.shuffled().map { (RowKey(table: t, parts: $0), text("v")) })
            func scan(_ range: KeyRange, reverse: Bool = false) async throws -> [[KeyPart]] {
                try await Self.scanAll(
                    service, ScanRequest(table: t, range: range, limit: 5, reverse: reverse))
            }
            #expect(try await scan(KeyRange()) == keys)
            #expect(try await scan(KeyRange(), reverse: true) == keys.reversed())
            // The prefix ("a",) covers ("a", …) but never ("ab", …).
            #expect(try await scan(.prefix([.string("a")])) == Array(keys[0..<3]))
            // Both ends inclusive, with prefix bounds: a..b covers all of a, ab and b.
            #expect(
                try await scan(KeyRange(start: [.string("a")], end: [.string("b")])) == Array(keys[0..<9]))
            #expect(
                try await scan(KeyRange(start: [.string("a"), .int64(2)], end: [.string("b"), .int64(1)]))
                    == Array(keys[1..<7]))
            // Open ends.
            #expect(try await scan(KeyRange(start: [.string("b")])) == Array(keys[6...]))
            #expect(try await scan(KeyRange(end: [.string("a")])) == Array(keys[0..<3]))
            #expect(
                try await scan(KeyRange(end: [.string("a")]), reverse: true) == Array(keys[0..<3].reversed()))
            // Within one partition key.
            #expect(
                try await scan(KeyRange(start: [.string("c"), .int64(2)], end: [.string("c"), .int64(3)]))
                    == Array(keys[10...]))
            // A scanned row's context is the row's context: writing with it supersedes the row.
            let first = try await service.scan(ScanRequest(table: t, limit: 1))
            let firstKey = RowKey(table: t, parts: first.rows[0].key)
            let pointContext = try await service.get(firstKey).context
            #expect(
                first.rows[0].context == pointContext, "scan \(first.rows[0].context) vs get \(pointContext)")
            // Keys only: no values.
            let page = try await service.scan(ScanRequest(table: t, limit: 3, keysOnly: true))
            #expect(page.rows.allSatisfy { $0.siblings.isEmpty })
            #expect(page.rows.map(\.key) == Array(keys[0..<3]))
        }
    }

    @Test(arguments: ServiceKind.allCases + ServiceKind.onDatabases)
    func binaryKeysAndValuesAreSafe(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("kvl", "binary")
            _ = try await service.createTable(TableDescriptor(name: t, schema: try KeySchema([.bytes])))
            let ordered: [[UInt8]] = [[0], [0, 0], [0, 1], [1], [1, 0], [2]]
            let everyByte = (0...255).map { UInt8($0) }
            try await Self.load(
                service,
                (ordered + [everyByte]).shuffled().map {
                    (RowKey(table: t, parts: [.bytes($0)]), RowValue(bytes: everyByte.reversed() + $0))
                })
            let scanned = try await Self.scanAll(service, ScanRequest(table: t))
            #expect(
                scanned
                    == ([[0], [0, 0], [0, 1], everyByte, [1], [1, 0], [2]] as [[UInt8]]).map {
                        [KeyPart.bytes($0)]
                    })
            let read = try await service.get(RowKey(table: t, parts: [.bytes(everyByte)]))
            #expect(read.siblings.first?.value?.bytes == everyByte.reversed() + everyByte)

            let strings = table("kvl", "strings")
            _ = try await service.createTable(
                TableDescriptor(name: strings, schema: try KeySchema([.string])))
            let lookalikes = ["a\u{0}b", "a%b", "a%00b", "a/b", "a b", "ä"]
            try await Self.load(
                service, lookalikes.map { (RowKey(table: strings, parts: [.string($0)]), text($0)) })
            for name in lookalikes {
                let value = try await service.get(RowKey(table: strings, parts: [.string(name)])).siblings
                    .first?.value
                #expect(value == text(name), "\(name)")
            }
        }
    }

    /// kvlayer's paging case: 9,042 rows; a full scan, a scan from row 3,000, and rows
    /// 3,000 to 8,437, each following continuation tokens transparently.
    @Test(arguments: ServiceKind.allCases + ServiceKind.onDatabases)
    func largeScansPageTransparently(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("kvl", "large")
            _ = try await service.createTable(TableDescriptor(name: t, schema: try KeySchema([.int64])))
            try await Self.load(
                service, (0..<9042).map { (RowKey(table: t, parts: [.int64(Int64($0))]), text("\($0)")) })
            #expect(try await Self.scanAll(service, ScanRequest(table: t, limit: 1000)).count == 9042)
            #expect(
                try await Self.scanAll(
                    service, ScanRequest(table: t, range: KeyRange(start: [.int64(3000)]), limit: 700)
                ).count == 6042)
            let middle = try await Self.scanAll(
                service,
                ScanRequest(table: t, range: KeyRange(start: [.int64(3000)], end: [.int64(8437)]), limit: 999)
            )
            #expect(middle.count == 5438)
            #expect(middle.first == [.int64(3000)] && middle.last == [.int64(8437)])
            // Two scans interleaved page by page stay independent; abandoning one is harmless.
            var first = ScanRequest(table: t, limit: 500)
            var second = ScanRequest(table: t, limit: 300, reverse: true)
            var firstKeys: [[KeyPart]] = []
            var secondKeys: [[KeyPart]] = []
            for _ in 0..<4 {
                let a = try await service.scan(first)
                let b = try await service.scan(second)
                firstKeys += a.rows.map(\.key)
                secondKeys += b.rows.map(\.key)
                first.continuation = a.continuation
                second.continuation = b.continuation
            }
            #expect(firstKeys == (0..<2000).map { [.int64(Int64($0))] })
            #expect(secondKeys == (0..<1200).map { [.int64(Int64(9041 - $0))] })
            // A token is bound to its direction.
            let wrongDirection = await errorCode {
                _ = try await service.scan(
                    ScanRequest(table: t, limit: 10, reverse: false, continuation: second.continuation))
            }
            #expect(wrongDirection == .invalidContinuation)
            #expect(
                await errorCode { _ = try await service.scan(ScanRequest(table: t, continuation: "!!")) }
                    == .invalidContinuation)
            #expect(
                await errorCode { _ = try await service.scan(ScanRequest(table: t, limit: 0)) }
                    == .invalidRequest)
        }
    }

    /// kvlayer's counters: a missing counter counts as 0, and a counter at 0 still exists.
    @Test(arguments: ServiceKind.allCases + ServiceKind.onDatabases)
    func counters(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("kvl", "counters")
            _ = try await service.createTable(TableDescriptor(name: t, schema: try KeySchema([.string])))
            let hits = RowKey(table: t, parts: [.string("hits")])
            #expect(try await service.counter(hits) == nil)
            #expect(try await service.increment(hits, by: 5) == 5)
            #expect(try await service.increment(hits, by: 1) == 6)
            #expect(try await service.increment(hits, by: -6) == 0)
            #expect(try await service.counter(hits) == 0)
            let page = try await service.scan(ScanRequest(table: t, keysOnly: true))
            #expect(page.rows.map(\.key) == [[.string("hits")]])
            // A row holding something else is not a counter, and stays as it was.
            let plain = RowKey(table: t, parts: [.string("plain")])
            _ = try await service.put(plain, value: text("not a number"), options: WriteOptions())
            #expect(await errorCode { _ = try await service.increment(plain, by: 1) } == .notACounter)
            #expect(try await service.get(plain).siblings.map(\.value) == [text("not a number")])
            // Deleting a counter makes it missing again.
            _ = try await service.delete(hits, options: WriteOptions())
            #expect(try await service.counter(hits) == nil)
            #expect(try await service.increment(hits, by: 2) == 2)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func deletedRowsLeaveScans(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("kvl", "deletes")
            _ = try await service.createTable(TableDescriptor(name: t, schema: try KeySchema([.int64])))
            try await Self.load(
                service, (0..<10).map { (RowKey(table: t, parts: [.int64(Int64($0))]), text("\($0)")) })
            for index in [0, 3, 9] {
                _ = try await service.delete(
                    RowKey(table: t, parts: [.int64(Int64(index))]), options: WriteOptions())
            }
            let keys = try await Self.scanAll(service, ScanRequest(table: t, limit: 2))
            #expect(keys == [1, 2, 4, 5, 6, 7, 8].map { [.int64(Int64($0))] })
        }
    }
}
