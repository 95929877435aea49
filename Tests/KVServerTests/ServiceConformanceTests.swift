import Foundation
import KVCore
import KVNode
import Testing

/// What every ``KeyValueService`` must do, run against the in-process node and against
/// the real HTTP server through the Swift client.
@Suite("Key-value service conformance")
struct ServiceConformanceTests {
    @Test(arguments: ServiceKind.allCases)
    func tableLifecycle(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let users = table("app", "users")
            let schema = try KeySchema([.string, .int64], partitionKeyLength: 1)
            let created = try await service.createTable(TableDescriptor(name: users, schema: schema))
            #expect(created.schema == schema)
            _ = try await service.createTable(
                TableDescriptor(name: table("app", "events"), schema: try KeySchema([.uuid])))
            _ = try await service.createTable(
                TableDescriptor(name: table("other", "t"), schema: try KeySchema([.bytes])))
            #expect(try await service.namespaces() == ["app", "other"])
            #expect(try await service.tables(in: "app").map(\.name.table) == ["events", "users"])
            #expect(try await service.table(users).schema == schema)

            // Re-running setup keeps data; a different schema is refused.
            let key = RowKey(table: users, parts: [.string("ann"), .int64(1)])
            _ = try await service.put(key, value: text("v"), options: WriteOptions())
            _ = try await service.createTable(TableDescriptor(name: users, schema: schema))
            #expect(try await service.get(key).siblings.count == 1)
            let conflict = await errorCode {
                _ = try await service.createTable(
                    TableDescriptor(name: users, schema: try KeySchema([.string])))
            }
            #expect(conflict == .tableExists)

            // Clearing empties one table only and keeps its definition.
            let other = RowKey(table: table("other", "t"), parts: [.bytes([1])])
            _ = try await service.put(other, value: text("o"), options: WriteOptions())
            try await service.clearTable(users)
            #expect(try await service.get(key).isAbsent)
            #expect(try await service.get(other).siblings.count == 1)
            #expect(try await service.table(users).schema == schema)

            // Dropping a namespace drops its tables, and only those.
            try await service.dropNamespace("app")
            #expect(await errorCode { _ = try await service.table(users) } == .tableNotFound)
            #expect(try await service.tables(in: "app").isEmpty)
            #expect(try await service.get(other).siblings.count == 1)
            try await service.dropTable(table("other", "t"))
            #expect(await errorCode { _ = try await service.get(other) } == .tableNotFound)
            #expect(await errorCode { try await service.dropTable(table("other", "t")) } == .tableNotFound)
            #expect(try await service.namespaces().isEmpty)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func putGetDelete(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            #expect(try await service.get(key).isAbsent)
            let written = try await service.put(
                key, value: text("one", type: "text/plain"), options: WriteOptions())
            let read = try await service.get(key)
            #expect(read.siblings.map(\.value) == [text("one")])
            #expect(read.context == written.context)
            #expect(read.etag == written.etag)
            // Overwrite with the context: one value.
            _ = try await service.put(key, value: text("two"), options: WriteOptions(context: read.context))
            #expect(try await service.get(key).siblings.map(\.value) == [text("two")])
            // Delete without context removes what is there; deleting again is a no-op.
            _ = try await service.delete(key, options: WriteOptions())
            #expect(try await service.get(key).isAbsent)
            _ = try await service.delete(key, options: WriteOptions())
            _ = try await service.delete(
                RowKey(table: kv, parts: [.string("never")]), options: WriteOptions())
            #expect(try await service.get(key).isAbsent)
            // Binary values and content types survive.
            let binary = RowValue(
                bytes: (0...255).map { UInt8($0) }, contentType: "application/x-test; charset=none")
            _ = try await service.put(key, value: binary, options: WriteOptions())
            #expect(try await service.get(key).siblings.map(\.value) == [binary])
            let empty = RowValue(bytes: [], contentType: "text/plain")
            let emptyKey = RowKey(table: kv, parts: [.string("empty")])
            _ = try await service.put(emptyKey, value: empty, options: WriteOptions())
            #expect(try await service.get(emptyKey).siblings.map(\.value) == [empty])
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func concurrentWritesBecomeSiblingsAndAContextResolvesThem(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            _ = try await service.put(key, value: text("from-a"), options: WriteOptions())
            _ = try await service.put(key, value: text("from-b"), options: WriteOptions())
            let read = try await service.get(key)
            #expect(Set(read.siblings.compactMap(\.value)) == [text("from-a"), text("from-b")])
            _ = try await service.put(
                key, value: text("merged"), options: WriteOptions(context: read.context))
            #expect(try await service.get(key).siblings.map(\.value) == [text("merged")])
            // A stale context keeps the version it did not see.
            _ = try await service.put(key, value: text("late"), options: WriteOptions(context: read.context))
            #expect(
                Set(try await service.get(key).siblings.compactMap(\.value)) == [
                    text("merged"), text("late"),
                ])
            // A delete with a read's context removes exactly what was read.
            let before = try await service.get(key)
            _ = try await service.delete(key, options: WriteOptions(context: before.context))
            #expect(try await service.get(key).isAbsent)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func lastWriterWinsTablesReadOneValue(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let name = table("ns", "lww")
            let created = try await service.createTable(
                TableDescriptor(name: name, schema: try KeySchema([.string]), conflictPolicy: .lastWriterWins)
            )
            #expect(created.conflictPolicy == .lastWriterWins)
            #expect(try await service.table(name).conflictPolicy == .lastWriterWins)
            // Creating it again with the other policy is refused; with the same, it is kept.
            let error = await #expect(throws: KVError.self) {
                _ = try await service.createTable(
                    TableDescriptor(name: name, schema: try KeySchema([.string])))
            }
            #expect(error?.code == .tableExists)
            let key = RowKey(table: name, parts: [.string("k")])
            _ = try await service.put(key, value: text("first"), options: WriteOptions())
            _ = try await service.put(key, value: text("second"), options: WriteOptions())
            #expect(try await service.get(key).siblings.map(\.value) == [text("second")])
            #expect(try await service.increment(RowKey(table: name, parts: [.string("n")]), by: 2) == 2)
            _ = try await service.delete(key, options: WriteOptions())
            #expect(try await service.get(key).isAbsent)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func expiredRowsReadAsAbsent(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let name = table("ns", "ttl")
            _ = try await service.createTable(TableDescriptor(name: name, schema: try KeySchema([.string])))
            let key = RowKey(table: name, parts: [.string("k")])
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            _ = try await service.put(
                key, value: text("brief"), options: WriteOptions(expiresAtMilliseconds: now + 1500))
            let read = try await service.get(key)
            #expect(read.siblings.map(\.value) == [text("brief")])
            // HTTP carries a time to live in whole seconds, rounded up.
            let expiry = try #require(read.siblings.first?.expiresAtMilliseconds)
            #expect(expiry >= now + 1500 && expiry <= now + 3000)
            let scanned = try await service.scan(ScanRequest(table: name))
            #expect(scanned.rows.count == 1)
            try await Task.sleep(
                for: .milliseconds(Int(expiry - Int64(Date().timeIntervalSince1970 * 1000)) + 100))
            #expect(try await service.get(key).isAbsent)
            #expect(try await service.scan(ScanRequest(table: name)).rows.isEmpty)
            // A write after expiry starts afresh, and If-None-Match: * sees the row absent.
            _ = try await service.put(key, value: text("again"), options: WriteOptions(condition: .ifAbsent))
            #expect(try await service.get(key).siblings.map(\.value) == [text("again")])
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func siblingsAreLimited(kind: ServiceKind) async throws {
        try await withService(kind, settings: NodeSettings(partitionCount: 16, maximumSiblings: 3)) {
            service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            for index in 1...3 {
                _ = try await service.put(key, value: text("blind \(index)"), options: WriteOptions())
            }
            // A fourth blind write is refused and changes nothing.
            let refused = await errorCode {
                _ = try await service.put(key, value: text("blind 4"), options: WriteOptions())
            }
            #expect(refused == .tooManySiblings)
            let read = try await service.get(key)
            #expect(read.siblings.count == 3)
            // Resolving with the context is always possible.
            _ = try await service.put(
                key, value: text("resolved"), options: WriteOptions(context: read.context))
            #expect(try await service.get(key).siblings.map(\.value) == [text("resolved")])
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func conditionalWrites(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            let created = try await service.put(
                key, value: text("1"), options: WriteOptions(condition: .ifAbsent))
            #expect(
                await errorCode {
                    _ = try await service.put(
                        key, value: text("2"), options: WriteOptions(condition: .ifAbsent))
                }
                    == .preconditionFailed)
            // If-Match with the current ETag or context succeeds; a stale one fails.
            let second = try await service.put(
                key, value: text("2"),
                options: WriteOptions(context: created.context, condition: .ifMatch(created.etag)))
            #expect(
                await errorCode {
                    _ = try await service.put(
                        key, value: text("3"), options: WriteOptions(condition: .ifMatch(created.etag)))
                }
                    == .preconditionFailed)
            #expect(
                await errorCode {
                    _ = try await service.put(
                        key, value: text("3"), options: WriteOptions(condition: .ifMatch(created.context)))
                }
                    == .preconditionFailed)
            _ = try await service.put(
                key, value: text("3"),
                options: WriteOptions(context: second.context, condition: .ifMatch(second.context)))
            #expect(try await service.get(key).siblings.map(\.value) == [text("3")])
            // After a delete, the row counts as absent again.
            _ = try await service.delete(key, options: WriteOptions())
            _ = try await service.put(key, value: text("4"), options: WriteOptions(condition: .ifAbsent))
            #expect(try await service.get(key).siblings.map(\.value) == [text("4")])
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func forgedAndTransplantedContextsAreRejected(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            let other = RowKey(table: kv, parts: [.string("other")])
            let written = try await service.put(key, value: text("1"), options: WriteOptions())
            var tampered = Array(written.context)
            tampered[tampered.count / 2] = tampered[tampered.count / 2] == "A" ? "B" : "A"
            #expect(
                await errorCode {
                    _ = try await service.put(
                        key, value: text("x"), options: WriteOptions(context: String(tampered)))
                }
                    == .invalidContext)
            #expect(
                await errorCode {
                    _ = try await service.put(
                        other, value: text("x"), options: WriteOptions(context: written.context))
                }
                    == .invalidContext)
            #expect(
                await errorCode {
                    _ = try await service.delete(key, options: WriteOptions(context: "garbage!"))
                } == .invalidContext)
            // Nothing was written by the refused requests.
            #expect(try await service.get(key).siblings.map(\.value) == [text("1")])
            #expect(try await service.get(other).isAbsent)
        }
    }

    /// Clearing (or recreating) a table starts every row's causal history over, so a
    /// context from before must not supersede a write made after: it is refused.
    @Test(arguments: ServiceKind.allCases)
    func contextsFromBeforeAClearAreRefused(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            var context: String? = nil
            for value in ["1", "2", "3"] {
                context = try await service.put(
                    key, value: text(value), options: WriteOptions(context: context)
                ).context
            }
            let oldETag = try await service.get(key).etag
            try await service.clearTable(kv)
            _ = try await service.put(key, value: text("after clear"), options: WriteOptions())
            #expect(
                await errorCode {
                    _ = try await service.put(
                        key, value: text("stale"), options: WriteOptions(context: context))
                } == .invalidContext)
            #expect(
                await errorCode {
                    _ = try await service.put(
                        key, value: text("stale"), options: WriteOptions(condition: .ifMatch(oldETag)))
                }
                    == .preconditionFailed)
            #expect(try await service.get(key).siblings.map(\.value) == [text("after clear")])
            // Dropping and recreating the table does the same.
            let recent = try await service.get(key).context
            try await service.dropTable(kv)
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            _ = try await service.put(key, value: text("new table"), options: WriteOptions())
            #expect(
                await errorCode { _ = try await service.delete(key, options: WriteOptions(context: recent)) }
                    == .invalidContext)
            #expect(try await service.get(key).siblings.map(\.value) == [text("new table")])
        }
    }

    /// No small request can make the node build a huge answer, and no row can grow past
    /// its byte limit.
    @Test(arguments: ServiceKind.allCases)
    func answersAndRowsAreBounded(kind: ServiceKind) async throws {
        let settings = NodeSettings(
            partitionCount: 16, maximumValueBytes: 4096, maximumRowBytes: 8192, maximumResponseBytes: 10_000)
        try await withService(kind, settings: settings) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.int64])))
            let big = RowValue(bytes: [UInt8](repeating: 7, count: 4000))
            for index in 0..<6 {
                _ = try await service.put(
                    RowKey(table: kv, parts: [.int64(Int64(index))]), value: big, options: WriteOptions())
            }
            // A batch of gets stops gathering values at the budget.
            let results = try await service.batch(
                (0..<6).map { .get(RowKey(table: kv, parts: [.int64(Int64($0))])) })
            let refused = results.filter {
                if case .failed(let error) = $0 { error.code == .responseTooLarge } else { false }
            }
            #expect(results.count == 6 && refused.count == 3)
            // A scan page ends early but the continuation reaches every row.
            let page = try await service.scan(ScanRequest(table: kv, limit: 100))
            #expect(page.rows.count == 3 && page.continuation != nil)
            let rest = try await service.scan(
                ScanRequest(table: kv, limit: 100, continuation: page.continuation))
            #expect(rest.rows.count == 3 && rest.continuation == nil)
            // A third concurrent 4000-byte sibling would make the row 12000 bytes.
            let key = RowKey(table: kv, parts: [.int64(0)])
            _ = try await service.put(key, value: big, options: WriteOptions())
            #expect(
                await errorCode { _ = try await service.put(key, value: big, options: WriteOptions()) }
                    == .rowTooLarge)
            #expect(try await service.get(key).siblings.count == 2)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func contentTypesMustBeSafeHeaderValues(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            let key = RowKey(table: kv, parts: [.string("k")])
            let results = try await service.batch([
                .put(key, RowValue(bytes: [1], contentType: "text/plain\r\nx-injected: 1"), WriteOptions())
            ])
            guard case .failed(let error) = results.first else {
                Issue.record("a content type with CR LF was accepted")
                return
            }
            #expect(error.code == .invalidRequest)
            #expect(try await service.get(key).isAbsent)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func keysAreCheckedAgainstTheSchema(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let t = table("ns", "t")
            _ = try await service.createTable(
                TableDescriptor(name: t, schema: try KeySchema([.string, .int64])))
            #expect(
                await errorCode { _ = try await service.get(RowKey(table: t, parts: [.string("a")])) }
                    == .keyArity)
            #expect(
                await errorCode {
                    _ = try await service.get(RowKey(table: t, parts: [.string("a"), .string("b")]))
                } == .keyPartType)
            #expect(
                await errorCode {
                    _ = try await service.get(
                        RowKey(table: t, parts: [.string(String(repeating: "x", count: 5000)), .int64(1)]))
                }
                    == .keyTooLarge)
            #expect(
                await errorCode {
                    _ = try await service.get(RowKey(table: table("ns", "missing"), parts: [.string("a")]))
                } == .tableNotFound)
            let invalidSchema = await errorCode {
                _ = try await service.createTable(
                    TableDescriptor(
                        name: table("ns", "bad"), schema: try KeySchema([.string]),
                        defaults: ReplicationDefaults(n: 1, r: 2)))
            }
            #expect(invalidSchema == .invalidQuorum)
        }
    }

    @Test(arguments: ServiceKind.allCases)
    func batchesAnswerEveryItemInOrder(kind: ServiceKind) async throws {
        try await withService(kind) { service in
            let kv = table("ns", "kv")
            _ = try await service.createTable(TableDescriptor(name: kv, schema: try KeySchema([.string])))
            func key(_ name: String) -> RowKey { RowKey(table: kv, parts: [.string(name)]) }
            #expect(try await service.batch([]).isEmpty)
            let results = try await service.batch([
                .put(key("a"), text("1"), WriteOptions()),
                .put(key("b"), text("2"), WriteOptions()),
                .get(key("a")),
                .get(key("missing")),
                .get(key("b")),
                .delete(key("missing"), WriteOptions()),
                .put(key("a"), text("x"), WriteOptions(condition: .ifAbsent)),
                .delete(key("b"), WriteOptions()),
                .get(key("b")),
            ])
            #expect(results.count == 9)
            func values(_ result: BatchItemResult) -> [RowValue]? {
                if case .read(let read) = result { return read.siblings.compactMap(\.value) }
                return nil
            }
            #expect(values(results[2]) == [text("1")])
            #expect(values(results[3]) == [])
            #expect(values(results[4]) == [text("2")])
            if case .failed(let error) = results[6] {
                #expect(error.code == .preconditionFailed)
            } else {
                Issue.record("item 7 should fail")
            }
            #expect(values(results[8]) == [])
        }
    }
}
