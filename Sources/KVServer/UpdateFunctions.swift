import Crypto
import KVCore
import KVFunctions
import Synchronization

/// A registered update function, as listed.
public struct FunctionRecord: Hashable, Sendable, Codable {
    /// The name it is applied by.
    public var name: String
    /// The size of its binary module.
    public var bytes: Int
    /// The SHA-256 of its binary module, in hexadecimal.
    public var sha256: String

    init(name: String, binary: [UInt8]) {
        self.name = name
        bytes = binary.count
        sha256 = Hexadecimal.lowercase(SHA256.hash(data: binary))
    }
}

/// What applying an update function did to its row.
public enum AppliedUpdate: Sendable {
    /// The function wrote these bytes; the write's context and ETag.
    case written(RowValue, WriteResult)
    /// The function kept the row (which may be absent) as it was read.
    case kept(ReadResult)
    /// The function deleted the row.
    case deleted(WriteResult)
}

/// Registers update functions with the cluster and applies them at this node, the
/// coordinator of the request: read the row with its context, run the function in the
/// sandbox, write its answer back conditionally on the version read, and on a conflict
/// read and run again. No concurrent update is lost, as with the client's `update`.
public final class UpdateFunctions: Sendable {
    /// How long a compiled module is used before its row is read again: a function
    /// registered again under the same name is in force on every node within this.
    static let moduleFreshness: Duration = .seconds(1)
    /// How many tries one apply makes unless the request says otherwise.
    public static let defaultAttempts = 8
    /// The most tries a request may ask for.
    public static let maximumAttempts = 64

    let service: any KeyValueService
    /// Runs the modules.
    public let sandbox: FunctionSandbox
    /// How many modules sent with requests stay compiled.
    static let inlineModulesKept = 16
    private let inline = Mutex<[(digest: [UInt8], module: FunctionModule)]>([])
    private let compiled = Mutex<
        [String: (etag: String, module: FunctionModule, checkedAt: ContinuousClock.Instant)]
    >([:])

    /// Creates the registry over `service`.
    public init(service: any KeyValueService, sandbox: FunctionSandbox = .shared) {
        self.service = service
        self.sandbox = sandbox
    }

    /// Checks `source` (binary or text format) and stores it as the function `name`,
    /// replacing any function of that name.
    public func register(name: String, source: [UInt8]) async throws(KVError) -> FunctionRecord {
        try TableName.validate(name, what: "function")
        let module = try await sandbox.compile(source)
        let result = try await service.put(
            UpdateFunctionTable.key(name),
            value: RowValue(bytes: module.binary, contentType: "application/wasm"),
            options: WriteOptions())
        compiled.withLock { $0[name] = (result.etag, module, .now) }
        return FunctionRecord(name: name, binary: module.binary)
    }

    /// Removes the function `name`; throws `function.not_found` when there is none.
    public func remove(name: String) async throws(KVError) {
        try TableName.validate(name, what: "function")
        let read = try await service.get(UpdateFunctionTable.key(name), options: ReadOptions())
        guard !read.isAbsent else { throw KVError(.functionNotFound, "no function is named '\(name)'") }
        _ = try await service.delete(
            UpdateFunctionTable.key(name), options: WriteOptions(context: read.context))
        compiled.withLock { $0[name] = nil }
    }

    /// The registered functions, in name order.
    public func list() async throws(KVError) -> [FunctionRecord] {
        var request = ScanRequest(table: UpdateFunctionTable.descriptor.name, limit: ScanRequest.maximumLimit)
        var records: [FunctionRecord] = []
        while true {
            let page = try await service.scan(request)
            for row in page.rows {
                guard case .string(let name) = row.key.first, let value = row.siblings.first?.value else {
                    continue
                }
                records.append(FunctionRecord(name: name, binary: value.bytes))
            }
            guard let continuation = page.continuation else { return records }
            request.continuation = continuation
        }
    }

    /// The binary module of the function `name`.
    public func binary(name: String) async throws(KVError) -> [UInt8] {
        try await module(named: name).binary
    }

    /// The checked module of the function `name`, compiled once per registration.
    func module(named name: String) async throws(KVError) -> FunctionModule {
        try TableName.validate(name, what: "function")
        let now = ContinuousClock.now
        if let cached = compiled.withLock({ $0[name] }),
            cached.checkedAt.duration(to: now) < Self.moduleFreshness
        {
            return cached.module
        }
        let read = try await service.get(UpdateFunctionTable.key(name), options: ReadOptions())
        guard let value = read.siblings.first?.value else {
            compiled.withLock { $0[name] = nil }
            throw KVError(.functionNotFound, "no function is named '\(name)'")
        }
        if let cached = compiled.withLock({ $0[name] }), cached.etag == read.etag {
            compiled.withLock { $0[name]?.checkedAt = now }
            return cached.module
        }
        let module = try await sandbox.compile(value.bytes)
        compiled.withLock { $0[name] = (read.etag, module, now) }
        return module
    }

    /// A module sent with a request (Mykeyv's `evaluate` and `apply`), checked and
    /// compiled once: the last few are kept by their bytes' digest.
    public func module(source: [UInt8]) async throws(KVError) -> FunctionModule {
        let digest = Array(SHA256.hash(data: source))
        if let cached = inline.withLock({ $0.first { $0.digest == digest } }) { return cached.module }
        let module = try await sandbox.compile(source)
        inline.withLock { entries in
            entries.removeAll { $0.digest == digest }
            entries.append((digest, module))
            if entries.count > Self.inlineModulesKept { entries.removeFirst() }
        }
        return module
    }

    /// Runs `module` on the row `key` without writing anything (Mykeyv's `evaluate`):
    /// what it decided, and the value it was given.
    public func evaluate(_ module: FunctionModule, on key: RowKey, arguments: [UInt8]) async throws(KVError)
        -> (outcome: FunctionOutcome, current: RowValue?)
    {
        let read = try await service.get(key, options: ReadOptions())
        let current = try Self.singleValue(read)
        return (try await sandbox.run(module, value: current?.bytes, arguments: arguments), current)
    }

    /// The one value a function sees of `read`, refusing siblings and chunked values.
    static func singleValue(_ read: ReadResult) throws(KVError) -> RowValue? {
        guard read.siblings.count <= 1 else {
            throw KVError(
                .functionSiblings,
                "the row has \(read.siblings.count) siblings and a function sees one value: resolve them with a write that carries the row's context, then apply"
            )
        }
        let current = read.siblings.first?.value
        if let large = current?.largeValue {
            throw KVError(
                .functionLimitExceeded,
                "the row holds a value of \(large.length) bytes in chunks; a function takes values up to \(RowValue.maximumInlineBytes) bytes held inline"
            )
        }
        return current
    }

    /// Applies the function `name` to the row `key` with `arguments`, trying up to
    /// `attempts` times while concurrent writes change the row between its read and the
    /// write back.
    public func apply(
        _ name: String, to key: RowKey, arguments: [UInt8], attempts: Int = defaultAttempts,
        quorum: QuorumOverrides = QuorumOverrides(), requestID: String? = nil
    ) async throws(KVError) -> (update: AppliedUpdate, attempts: Int) {
        try await apply(
            try await module(named: name), to: key, arguments: arguments, attempts: attempts, quorum: quorum,
            requestID: requestID)
    }

    /// Applies `module` to the row `key`: see ``apply(_:to:arguments:attempts:quorum:requestID:)``.
    /// A row the function creates gets `newRowContentType`; an existing row keeps its own.
    public func apply(
        _ module: FunctionModule, to key: RowKey, arguments: [UInt8], attempts: Int = defaultAttempts,
        quorum: QuorumOverrides = QuorumOverrides(), requestID: String? = nil,
        newRowContentType: String = RowValue.defaultContentType
    ) async throws(KVError) -> (update: AppliedUpdate, attempts: Int) {
        guard (1...Self.maximumAttempts).contains(attempts) else {
            throw KVError(.invalidRequest, "attempts is 1 to \(Self.maximumAttempts), not \(attempts)")
        }
        var attempt = 0
        while true {
            attempt += 1
            do {
                return (
                    try await applyOnce(
                        module, to: key, arguments: arguments, quorum: quorum, requestID: requestID,
                        newRowContentType: newRowContentType), attempt
                )
            } catch  where error.code == .preconditionFailed && attempt < attempts {
                // Another write landed between the read and the write back: back off a
                // little, at random so that contending coordinators spread out, and redo.
                let ceiling = min(100, 2 << min(attempt, 6))
                try? await Task.sleep(for: .milliseconds(Int.random(in: 1...ceiling)))
            } catch  where error.code == .preconditionFailed {
                throw KVError(
                    .preconditionFailed,
                    "the row changed under each of \(attempts) attempts to apply the function; try again")
            }
        }
    }

    private func applyOnce(
        _ module: FunctionModule, to key: RowKey, arguments: [UInt8], quorum: QuorumOverrides,
        requestID: String?, newRowContentType: String
    ) async throws(KVError) -> AppliedUpdate {
        let read = try await service.get(key, options: ReadOptions(quorum: quorum))
        let value = try Self.singleValue(read)
        let current = read.siblings.first
        let outcome = try await sandbox.run(module, value: value?.bytes, arguments: arguments)
        var options = WriteOptions(
            context: read.context, condition: read.isAbsent ? .ifAbsent : .ifMatch(read.etag), quorum: quorum,
            requestID: requestID)
        switch outcome {
        case .write(let bytes):
            guard bytes.count <= RowValue.maximumInlineBytes else {
                throw KVError(
                    .functionLimitExceeded,
                    "the function answered \(bytes.count) bytes; a value written by a function is at most \(RowValue.maximumInlineBytes)"
                )
            }
            // The new version keeps the row's content type and time to live.
            options.expiresAtMilliseconds = current?.expiresAtMilliseconds
            let written = RowValue(bytes: bytes, contentType: value?.contentType ?? newRowContentType)
            return .written(written, try await service.put(key, value: written, options: options))
        case .keep:
            return .kept(read)
        case .delete:
            guard !read.isAbsent else { return .kept(read) }
            return .deleted(try await service.delete(key, options: options))
        case .refuse(let reason):
            throw KVError(.functionRefused, reason.isEmpty ? "the function refused the update" : reason)
        }
    }
}
