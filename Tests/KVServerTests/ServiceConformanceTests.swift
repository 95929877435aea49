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
