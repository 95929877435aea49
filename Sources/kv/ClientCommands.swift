import ArgumentParser
import Foundation
import KVClient
import KVCore

/// Options shared by every client command.
struct ClientOptions: ParsableArguments {
    @Option(help: "Server URL (default http://127.0.0.1:7700, or $KV_URL).") var url: String?
    @Option(help: "Bearer token for a node with access control on (default $KV_TOKEN).") var token: String?
    @Flag(help: "Print machine-readable JSON.") var json = false

    var resolvedURL: String {
        url ?? ProcessInfo.processInfo.environment["KV_URL"] ?? "http://127.0.0.1:7700"
    }

    /// The token and TLS settings: flags first, then the environment.
    var clientOptions: HTTPClientOptions {
        var options = HTTPClientOptions.environment(ProcessInfo.processInfo.environment)
        if let token { options.token = token }
        return options
    }
}

/// Per-request quorum overrides, shared by the commands that read or write rows.
struct QuorumFlags: ParsableArguments {
    @Option(name: .customLong("n"), help: "Replicas of the key to use (default: the table's n).") var n: Int?
    @Option(name: .customLong("r"), help: "Replies a read waits for (default: the table's r).") var r: Int?
    @Option(name: .customLong("w"), help: "Acknowledgements a write waits for (default: the table's w).")
    var w: Int?
    @Option(name: .customLong("dw"), help: "Durable acknowledgements a write waits for.") var dw: Int?
    @Option(name: .customLong("pr"), help: "Read replies that must come from primaries.") var pr: Int?
    @Option(name: .customLong("pw"), help: "Write acknowledgements that must come from primaries.") var pw:
        Int?

    var overrides: QuorumOverrides { QuorumOverrides(n: n, r: r, w: w, dw: dw, pr: pr, pw: pw) }
}

/// A failure already reported to the user: exit with status 1.
struct ReportedFailure: Error {}

extension ClientOptions {
    /// Connects, runs `body`, closes; a ``KVError`` is printed as `error: CODE: message`
    /// on standard error and becomes exit status 1.
    func withService(_ body: (HTTPKeyValueService) async throws -> Void) async throws {
        do {
            let service = try await HTTPKeyValueService(url: resolvedURL, options: clientOptions)
            do {
                try await body(service)
            } catch {
                await service.close()
                throw error
            }
            await service.close()
        } catch let error as KVError {
            FileHandle.standardError.write(Data("error: \(error.code.rawValue): \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }

    func printJSON<Value: Encodable>(_ value: Value) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self))
    }
}

/// Parses `NAMESPACE/TABLE`.
func parseTable(_ text: String) throws -> TableName {
    let pieces = text.split(separator: "/", omittingEmptySubsequences: false)
    guard pieces.count == 2 else { throw ValidationError("'\(text)' is not NAMESPACE/TABLE") }
    do {
        return try TableName(namespace: String(pieces[0]), table: String(pieces[1]))
    } catch {
        throw ValidationError(error.message)
    }
}

/// Parses key part arguments against the table's schema.
func parseKey(_ texts: [String], table: TableName, service: HTTPKeyValueService, prefix: Bool = false)
    async throws
    -> [KeyPart]
{
    let schema = try await service.table(table).schema
    if !prefix && texts.count != schema.parts.count {
        throw KVError(
            .keyArity, "the key has \(texts.count) parts; table \(table) has \(schema.parts.count): \(schema)"
        )
    }
    if texts.count > schema.parts.count {
        throw KVError(.keyArity, "the key has \(texts.count) parts; table \(table) has \(schema.parts.count)")
    }
    var parts: [KeyPart] = []
    for (index, text) in texts.enumerated() { parts.append(try KeyPart.parse(text, as: schema.parts[index])) }
    return parts
}

func describe(_ value: RowValue) -> String {
    String(validating: value.bytes, as: UTF8.self) ?? "<\(value.bytes.count) bytes of \(value.contentType)>"
}

func keyText(_ parts: [KeyPart]) -> String {
    parts.map { part in
        if case .bytes(let data) = part { return "0x" + data.map { String(format: "%02x", $0) }.joined() }
        return String(decoding: part.textBytes, as: UTF8.self)
    }.joined(separator: "/")
}

struct PutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put", abstract: "Write a row's value.",
        discussion: """
            Without --context the write is concurrent with whatever the row holds, which \
            then stays as siblings; pass the context of your last read to replace it.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "NAMESPACE/TABLE") var table: String
    @Argument(help: "Key parts, in schema order.") var key: [String]
    @Option(name: [.short, .long], help: "The value (text).") var value: String?
    @Option(
        help:
            "Stream the value from this file ('-' for standard input), of any size up to the server's value limit, with a progress bar on a terminal."
    )
    var file: String?
    @Option(help: "Content type (default application/octet-stream, or text/plain with --value).")
    var contentType: String?
    @Option(help: "Causal context of your last read of this row.") var context: String?
    @Flag(help: "Only create: fail with request.precondition_failed if the row exists.") var ifAbsent = false
    @Option(help: "Only write if the row's ETag (or context) is still this.") var ifMatch: String?
    @Option(help: "Your id for this write: a retry with the same id is not applied twice.") var requestID:
        String?
    @OptionGroup var quorum: QuorumFlags

    func run() async throws {
        let name = try parseTable(table)
        guard (value == nil) != (file == nil) else {
            throw ValidationError("give exactly one of --value and --file")
        }
        let type = contentType ?? (value != nil ? "text/plain" : RowValue.defaultContentType)
        try await options.withService { service in
            let parts = try await parseKey(key, table: name, service: service)
            var writeOptions = WriteOptions(context: context, quorum: quorum.overrides, requestID: requestID)
            if ifAbsent {
                writeOptions.condition = .ifAbsent
            } else if let ifMatch {
                writeOptions.condition = .ifMatch(ifMatch)
            }
            let rowKey = RowKey(table: name, parts: parts)
            let result: WriteResult
            if let file {
                let progress = TransferProgress()
                let length = FileBody.size(of: file)
                progress.expect(length)
                result = try await service.putStreamed(
                    rowKey, contentType: type, length: length,
                    body: try FileBody(path: file, progress: progress),
                    options: writeOptions)
                progress.finish()
            } else {
                result = try await service.put(
                    rowKey, value: RowValue(bytes: Array((value ?? "").utf8), contentType: type),
                    options: writeOptions)
            }
            if options.json {
                options.printJSON(["context": result.context, "etag": result.etag])
            } else {
                print("ok  context: \(result.context)")
            }
        }
    }
}

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Read a row.",
        discussion: """
            Prints the value. When concurrent writes left siblings, prints each of them and \
            the context that resolves them (pass it to `kv put --context`). A missing row \
            exits with status 1 and row.not_found.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "NAMESPACE/TABLE") var table: String
    @Argument(help: "Key parts, in schema order.") var key: [String]
    @Flag(name: .customLong("context"), help: "Print only the row's causal context (for kv put --context).")
    var printContext = false
    @Option(
        name: [.short, .long],
        help: "Stream the value into this file instead of printing it, with a progress bar on a terminal.")
    var output: String?
    @OptionGroup var quorum: QuorumFlags

    func run() async throws {
        let name = try parseTable(table)
        try await options.withService { service in
            let parts = try await parseKey(key, table: name, service: service)
            if let output {
                let progress = TransferProgress()
                progress.expect(
                    try await service.valueLength(
                        RowKey(table: name, parts: parts), options: ReadOptions(quorum: quorum.overrides)))
                let sink = try FileSink(path: output, progress: progress)
                let response = try await service.download(
                    RowKey(table: name, parts: parts), options: ReadOptions(quorum: quorum.overrides)
                ) { sink.write($0) }
                try sink.finish()
                progress.finish()
                let length = response.headers.first(name: "content-length") ?? "?"
                if options.json {
                    options.printJSON([
                        "context": response.headers.first(name: "x-kv-context") ?? "", "bytes": length,
                    ])
                } else {
                    print(
                        "ok  \(length) bytes to \(output)  context: \(response.headers.first(name: "x-kv-context") ?? "")"
                    )
                }
                return
            }
            let result = try await service.get(
                RowKey(table: name, parts: parts), options: ReadOptions(quorum: quorum.overrides))
            if printContext {
                print(result.context)
                return
            }
            if options.json {
                options.printJSON(
                    WireSiblings(
                        siblings: result.siblings.map(WireSibling.init), context: result.context,
                        etag: result.etag))
                if result.isAbsent { throw ExitCode(1) }
                return
            }
            switch result.siblings.count {
            case 0:
                throw KVError(.rowNotFound, "\(name)/\(keyText(parts)) has no value")
            case 1:
                print(describe(result.siblings[0].value!))
            default:
                print(
                    "\(result.siblings.count) siblings (concurrent writes); resolve with: kv put --context CONTEXT ..."
                )
                for (index, sibling) in result.siblings.enumerated() {
                    print("  [\(index + 1)] \(sibling.value!.contentType): \(describe(sibling.value!))")
                }
                print("context: \(result.context)")
            }
        }
    }
}

struct IncrementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "increment", abstract: "Add to a counter and print its new value.",
        discussion: """
            A missing counter counts as 0; --by 0 prints the current value. Concurrent \
            increments through different nodes are never lost (the counter is a CRDT).
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "NAMESPACE/TABLE") var table: String
    @Argument(help: "Key parts, in schema order.") var key: [String]
    @Option(help: "The amount to add (negative to subtract; default 1).") var by: Int64 = 1
    @Option(help: "Your id for this increment: a retry with the same id is not applied twice.")
    var requestID: String?
    @OptionGroup var quorum: QuorumFlags

    func run() async throws {
        let name = try parseTable(table)
        try await options.withService { service in
            let parts = try await parseKey(key, table: name, service: service)
            let value = try await service.increment(
                RowKey(table: name, parts: parts), by: by,
                options: WriteOptions(quorum: quorum.overrides, requestID: requestID))
            if options.json { options.printJSON(["value": value]) } else { print(value) }
        }
    }
}

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a row (a versioned tombstone).",
        discussion: "Without --context, deletes every version the node holds.")

    @OptionGroup var options: ClientOptions
    @Argument(help: "NAMESPACE/TABLE") var table: String
    @Argument(help: "Key parts, in schema order.") var key: [String]
    @Option(help: "Causal context of your last read of this row.") var context: String?
    @Option(help: "Your id for this delete: a retry with the same id is not applied twice.") var requestID:
        String?
    @OptionGroup var quorum: QuorumFlags

    func run() async throws {
        let name = try parseTable(table)
        try await options.withService { service in
            let parts = try await parseKey(key, table: name, service: service)
            let result = try await service.delete(
                RowKey(table: name, parts: parts),
                options: WriteOptions(context: context, quorum: quorum.overrides, requestID: requestID))
            if options.json {
                options.printJSON(["context": result.context, "etag": result.etag])
            } else {
                print("deleted")
            }
        }
    }
}

struct ScanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan", abstract: "List rows in key order.",
        discussion: """
            Bounds are inclusive and may be prefixes: --start a --end c lists every row whose \
            first part is a, b… or c. Key part arguments after the table restrict the scan to \
            that prefix. Pages are followed until --limit rows are printed.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "NAMESPACE/TABLE") var table: String
    @Argument(help: "Key prefix parts.") var prefix: [String] = []
    @Option(help: "Lower bound part (repeat for more parts).") var start: [String] = []
    @Option(help: "Upper bound part (repeat for more parts).") var end: [String] = []
    @Option(help: "Most rows to print (default 1000).") var limit = 1000
    @Flag(help: "Descending key order.") var reverse = false
    @Flag(help: "Print keys only.") var keysOnly = false
    @Option(name: .customLong("r"), help: "Replicas of each partition to read and merge (default 1).") var r:
        Int?

    func run() async throws {
        let name = try parseTable(table)
        try await options.withService { service in
            let prefixParts = try await parseKey(prefix, table: name, service: service, prefix: true)
            let startParts = try await parseKey(prefix + start, table: name, service: service, prefix: true)
            let endParts = try await parseKey(prefix + end, table: name, service: service, prefix: true)
            var request = ScanRequest(
                table: name,
                range: KeyRange(
                    start: startParts.isEmpty && prefixParts.isEmpty ? nil : startParts,
                    end: endParts.isEmpty && prefixParts.isEmpty ? nil : endParts),
                reverse: reverse, keysOnly: keysOnly, r: r)
            var remaining = limit
            var rows: [ScanRow] = []
            while remaining > 0 {
                request.limit = min(remaining, 1000)
                let page = try await service.scan(request)
                rows += page.rows
                remaining -= page.rows.count
                guard let continuation = page.continuation else { break }
                request.continuation = continuation
            }
            if options.json {
                options.printJSON(
                    WireScanPage(
                        rows: rows.map {
                            WireScanRow(
                                key: $0.key.map(WireKeyPart.init),
                                siblings: keysOnly ? nil : $0.siblings.map(WireSibling.init),
                                context: $0.context)
                        }))
                return
            }
            for row in rows {
                if keysOnly {
                    print(keyText(row.key))
                } else {
                    print(
                        "\(keyText(row.key))\t"
                            + row.siblings.map { describe($0.value!) }.joined(separator: " | "))
                }
            }
        }
    }
}

struct BatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch", abstract: "Run a batch of gets, puts and deletes from a JSON file.",
        discussion: """
            The file holds {"operations": [{"op": "put", "namespace": …, "table": …, "key": […], \
            "value": "…"}, …]} as the HTTP API's POST /v1/_batch takes it ('-' reads standard \
            input). Prints one result per operation; exits 1 if any failed.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "JSON file of operations ('-' for standard input).") var file: String

    func run() async throws {
        let data =
            file == "-"
            ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
        guard let data else { throw ValidationError("cannot read \(file)") }
        let batch: WireBatch
        do {
            batch = try JSONDecoder().decode(WireBatch.self, from: data)
        } catch {
            FileHandle.standardError.write(
                Data("error: request.invalid: \(file) is not a batch: \(error)\n".utf8))
            throw ExitCode(1)
        }
        try await options.withService { service in
            let results = try await service.batch(batch)
            if options.json {
                options.printJSON(results)
            } else {
                for (index, result) in results.results.enumerated() {
                    let detail =
                        result.code.map { "\($0): \(result.message ?? "")" }
                        ?? result.siblings.map { $0.map { $0.value ?? "<binary>" }.joined(separator: " | ") }
                        ?? "ok"
                    print("[\(index + 1)] \(result.status) \(detail)")
                }
            }
            if results.results.contains(where: {
                $0.status >= 400 && $0.code != KVError.Code.rowNotFound.rawValue
            }) {
                throw ExitCode(1)
            }
        }
    }
}

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Show what a node says about itself.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.withService { service in
            let info = try await service.nodeInfo()
            if options.json {
                options.printJSON(
                    WireNodeInfo(
                        nodeID: info.nodeID.description, incarnation: info.incarnation, engine: info.engine,
                        partitions: info.partitionCount, version: info.version))
            } else {
                print(
                    "node \(info.nodeID) (incarnation \(info.incarnation)), engine \(info.engine), \(info.partitionCount) partitions, version \(info.version)"
                )
            }
        }
    }
}
