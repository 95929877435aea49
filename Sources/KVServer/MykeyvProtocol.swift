import FoundationEssentials
import KVCore
import KVFunctions
import NIOCore
import Synchronization

/// Mykeyv's framing (the Sisyphus "Trivial" protocol): a version byte (0), the payload's
/// length as 4 bytes little-endian, then the payload, one JSON object. A frame with
/// another version, or longer than the limit, ends the connection: there is no way to
/// find the next frame after it.
struct MykeyvFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = [UInt8]
    let maximumPayloadBytes: Int

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes >= 5,
            let version = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, endianness: .little, as: UInt32.self)
        else { return .needMoreData }
        guard version == 0 else { throw MykeyvFrameError.version(version) }
        guard Int(length) <= maximumPayloadBytes else {
            throw MykeyvFrameError.tooLong(Int(length), maximumPayloadBytes)
        }
        guard buffer.readableBytes >= 5 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 5)
        context.fireChannelRead(wrapInboundOut(buffer.readBytes(length: Int(length)) ?? []))
        return .continue
    }

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        try decode(context: context, buffer: &buffer)
    }
}

/// Why a connection's bytes are not Mykeyv frames.
enum MykeyvFrameError: Error, CustomStringConvertible {
    case version(UInt8)
    case tooLong(Int, Int)

    var description: String {
        switch self {
        case .version(let version): "frame version \(version) is not 0"
        case .tooLong(let length, let limit): "a frame of \(length) bytes is over the limit of \(limit)"
        }
    }
}

/// Any JSON value, for Mykeyv's records (`data`), which are whatever the client sends.
/// Integers keep their 64 bits; other numbers are doubles.
indirect enum MykeyvJSON: Codable, Hashable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([MykeyvJSON])
    case object([String: MykeyvJSON])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([MykeyvJSON].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: MykeyvJSON].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// Mykeyv's commands over the cluster, in the table `mykeyv/records` (one string key
/// part, last-writer-wins, created on first use). See docs/mykeyv.md.
public struct MykeyvFrontEnd: Sendable {
    static let table = try! TableName(namespace: "mykeyv", table: "records")
    /// The most keys `list` answers.
    static let maximumListedKeys = 100_000

    let service: any KeyValueService
    /// Runs `evaluate` and `apply`.
    let functions: UpdateFunctions
    /// Checks a token (`auth`) when access control is on; `nil` when it is off.
    let authenticate: (@Sendable (String) throws(KVError) -> AccessGrants)?
    /// The largest frame payload taken.
    public let maximumPayloadBytes: Int

    /// Creates the front end over `service`.
    public init(
        service: any KeyValueService, maximumPayloadBytes: Int,
        authenticate: (@Sendable (String) throws(KVError) -> AccessGrants)?,
        functions sandbox: FunctionSandbox = .shared
    ) {
        self.service = service
        self.maximumPayloadBytes = maximumPayloadBytes
        self.authenticate = authenticate
        functions = UpdateFunctions(service: service, sandbox: sandbox)
    }

    struct Request: Decodable {
        var command: String?
        var key: String?
        var data: MykeyvJSON?
        var requestID: MykeyvJSON?
        var code: String?
        var token: String?
        /// `evaluate`/`apply`: a registered function's name...
        var function: String?
        /// ...or a module, in the text format or as base64 of the binary.
        var module: String?
        /// `evaluate`/`apply`: the function's arguments, passed as their JSON text.
        var args: MykeyvJSON?

        enum CodingKeys: String, CodingKey {
            case command, key, data, code, token, function, module, args
            case requestID = "request_id"
        }
    }

    struct Answer: Encodable {
        var command: String
        var key: String?
        var data: MykeyvJSON?
        var includesData = false
        var error: String?
        var code: String?
        var requestID: MykeyvJSON?

        enum CodingKeys: String, CodingKey {
            case command, key, data, error, code
            case requestID = "request_id"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(command, forKey: .command)
            try container.encodeIfPresent(key, forKey: .key)
            if includesData { try container.encode(data ?? .null, forKey: .data) }
            try container.encodeIfPresent(error, forKey: .error)
            try container.encodeIfPresent(code, forKey: .code)
            try container.encode(requestID ?? .null, forKey: .requestID)
        }
    }

    /// A connection's state: who it proved to be.
    public final class Session: Sendable {
        let grants: Mutex<AccessGrants?>

        init(grants: AccessGrants?) { self.grants = Mutex(grants) }

        /// Whether the connection may do anything yet.
        var isAuthenticated: Bool { grants.withLock { $0 != nil } }
    }

    /// A new connection's session: allowed everything while access control is off.
    public func openSession() -> Session { Session(grants: authenticate == nil ? .everything : nil) }

    /// Answers one frame's payload with one frame's payload.
    func answer(_ payload: [UInt8], session: Session) async -> [UInt8] {
        let request: Request
        do {
            request = try JSONDecoder().decode(Request.self, from: Data(payload))
        } catch {
            // Answers come in any order, so even a malformed request's answer names its
            // request id when the payload has one.
            let fields = try? JSONDecoder().decode([String: MykeyvJSON].self, from: Data(payload))
            var command = "error"
            if case .string(let name)? = fields?["command"], !name.isEmpty { command = name + "_error" }
            return Self.encode(
                Answer(
                    command: command,
                    error: fields == nil
                        ? "the frame is not a JSON object" : "a field of the request has the wrong type",
                    code: "request.invalid", requestID: fields?["request_id"]))
        }
        let command = request.command ?? ""
        do {
            return Self.encode(try await run(command, request, session: session))
        } catch {
            return Self.encode(
                Answer(
                    command: command.isEmpty ? "error" : command + "_error", key: request.key,
                    error: error.message,
                    code: error.code.rawValue, requestID: request.requestID))
        }
    }

    static func encode(_ answer: Answer) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return Array((try? encoder.encode(answer)) ?? Data("{\"command\":\"error\"}".utf8))
    }

    private func run(_ command: String, _ request: Request, session: Session) async throws(KVError) -> Answer
    {
        let id = request.requestID
        if command == "auth" {
            guard let authenticate else { return Answer(command: "auth_ok", requestID: id) }
            let grants = try authenticate(request.token ?? "")
            session.grants.withLock { $0 = grants }
            return Answer(command: "auth_ok", requestID: id)
        }
        guard let grants = session.grants.withLock({ $0 }) else {
            throw KVError(
                .tokenRequired, "send {\"command\": \"auth\", \"token\": …} first: access control is on")
        }
        let table = Self.table
        switch command {
        case "set", "get", "delete":
            guard let key = request.key, !key.isEmpty else {
                throw KVError(.invalidRequest, "\(command) needs a non-empty \"key\"")
            }
            let row = RowKey(table: table, parts: [.string(key)])
            switch command {
            case "set":
                try grants.require(.write, on: table.namespace)
                let bytes = Array((try? JSONEncoder().encode(request.data ?? .null)) ?? Data("null".utf8))
                try await writeCreatingTable { () async throws(KVError) in
                    _ = try await service.put(
                        row, value: RowValue(bytes: bytes, contentType: "application/json"),
                        options: WriteOptions())
                }
                return Answer(command: "set_ok", key: key, includesData: true, requestID: id)
            case "get":
                try grants.require(.read, on: table.namespace)
                let value: MykeyvJSON
                do {
                    value = Self.record(try await service.get(row, options: ReadOptions()))
                } catch  where error.code == .tableNotFound {
                    value = .null
                }
                return Answer(command: "get_ok", key: key, data: value, includesData: true, requestID: id)
            default:
                try grants.require(.write, on: table.namespace)
                do {
                    _ = try await service.delete(row, options: WriteOptions())
                } catch  where error.code == .tableNotFound {}
                return Answer(command: "delete_ok", key: key, includesData: true, requestID: id)
            }
        case "list":
            try grants.require(.read, on: table.namespace)
            return Answer(
                command: "list_ok", data: .array(try await keys().map(MykeyvJSON.string)), includesData: true,
                requestID: id)
        case "rehash":
            try grants.require(.admin, on: nil)
            // The cluster places rows and moves them on layout changes by itself.
            return Answer(command: "rehash_ok", requestID: id)
        case "evaluate", "apply":
            if request.code != nil {
                throw KVError(
                    .unsupported,
                    "\(command) runs no Perl, nor any source sent as \"code\": name a registered WebAssembly function in \"function\", or send a module in \"module\" (docs/functions.md)"
                )
            }
            guard let key = request.key, !key.isEmpty else {
                throw KVError(.invalidRequest, "\(command) needs a non-empty \"key\"")
            }
            try grants.require(command == "apply" ? .write : .read, on: table.namespace)
            let data = try await runFunction(
                command, request, row: RowKey(table: table, parts: [.string(key)]))
            return Answer(command: command + "_ok", key: key, data: data, includesData: true, requestID: id)
        default:
            throw KVError(.invalidRequest, "unknown command '\(command)'")
        }
    }

    /// Runs `evaluate` (the function's answer, nothing stored) or `apply` (stored, with
    /// the record's context, retried on conflicts) and answers the record it leaves.
    private func runFunction(_ command: String, _ request: Request, row: RowKey) async throws(KVError)
        -> MykeyvJSON
    {
        let module: FunctionModule
        switch (request.function, request.module) {
        case (let name?, nil):
            module = try await functions.module(named: name)
        case (nil, let source?):
            let bytes = Array(source.utf8)
            let binary = Data(base64Encoded: source).map { Array($0) }
            module = try await functions.module(
                source: binary.map { $0.starts(with: FunctionModule.binaryMagic) ? $0 : bytes } ?? bytes)
        default:
            throw KVError(
                .invalidRequest,
                "\(command) needs either \"function\" (a registered name) or \"module\", not both")
        }
        var arguments: [UInt8] = []
        if let args = request.args {
            guard let data = try? JSONEncoder().encode(args) else {
                throw KVError(.invalidRequest, "args do not encode as JSON")
            }
            arguments = Array(data)
        }
        if command == "evaluate" {
            let outcome: FunctionOutcome
            let current: RowValue?
            do {
                (outcome, current) = try await functions.evaluate(module, on: row, arguments: arguments)
            } catch  where error.code == .tableNotFound {
                (outcome, current) = (
                    try await functions.sandbox.run(module, value: nil, arguments: arguments), nil
                )
            }
            switch outcome {
            case .write(let bytes): return Self.record(bytes)
            case .keep: return current.map { Self.record($0.bytes) } ?? .null
            case .delete: return .null
            case .refuse(let reason): throw KVError(.functionRefused, reason)
            }
        }
        var applied: AppliedUpdate?
        try await writeCreatingTable { () async throws(KVError) in
            applied =
                try await functions.apply(
                    module, to: row, arguments: arguments, newRowContentType: "application/json"
                ).update
        }
        switch applied {
        case .written(let value, _)?: return Self.record(value.bytes)
        case .kept(let read)?: return Self.record(read)
        case .deleted?, nil: return .null
        }
    }

    /// The record a read found: the stored JSON, or its bytes as a string when they are
    /// not JSON (a row written through another API); `null` when absent.
    static func record(_ read: ReadResult) -> MykeyvJSON {
        guard let value = ClusterSiblings.newest(read.siblings)?.bytes else { return .null }
        return record(value)
    }

    /// Stored bytes as a record: their JSON, or a string of them when they are not JSON.
    static func record(_ value: [UInt8]) -> MykeyvJSON {
        (try? JSONDecoder().decode(MykeyvJSON.self, from: Data(value)))
            ?? .string(String(decoding: value, as: UTF8.self))
    }

    private func writeCreatingTable(_ write: () async throws(KVError) -> Void) async throws(KVError) {
        do {
            try await write()
        } catch  where error.code == .tableNotFound {
            do {
                _ = try await service.createTable(
                    TableDescriptor(
                        name: Self.table, schema: try KeySchema([.string]), conflictPolicy: .lastWriterWins))
            } catch  where error.code == .tableExists {}
            try await write()
        }
    }

    /// Every key of the table, in order (at most ``maximumListedKeys``).
    private func keys() async throws(KVError) -> [String] {
        var request = ScanRequest(table: Self.table, limit: ScanRequest.maximumLimit, keysOnly: true)
        var keys: [String] = []
        while true {
            let page: ScanPage
            do {
                page = try await service.scan(request)
            } catch  where error.code == .tableNotFound {
                return []
            }
            for row in page.rows {
                if case .string(let key) = row.key.first { keys.append(key) }
            }
            guard keys.count <= Self.maximumListedKeys else {
                throw KVError(
                    .responseTooLarge,
                    "the table has more than \(Self.maximumListedKeys) keys; list them with a scan")
            }
            guard let continuation = page.continuation else { return keys }
            request.continuation = continuation
        }
    }
}

/// Picks one value of a read for front ends that show one (a last-writer-wins table has
/// at most one; a table with siblings shows its newest).
enum ClusterSiblings {
    static func newest(_ siblings: [Sibling]) -> RowValue? {
        siblings.max { $0.timestampMilliseconds < $1.timestampMilliseconds }?.value
    }
}
