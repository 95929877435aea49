import Crypto
import KVCluster
import KVCore
import KVReplica

/// Large values (``LargeValue``): a streamed write is cut into chunks as it arrives, each
/// written as a row of the chunk table with the row's own `n`, `w` and `dw` (a few in
/// flight at once, so memory stays bounded whatever the value's size), and only then the
/// row that names them, with the caller's context and condition. A read fetches the
/// chunks of a range in order, a few ahead, each from one replica first and from every
/// replica when that one lacks it or holds a damaged copy (which the read then repairs).
///
/// Chunks are rows, so hinted handoff, anti-entropy, rebalancing and tombstone reaping
/// move, repair and reclaim them with every other row.
extension ClusterNode {

    public func putStreamed(
        _ key: RowKey, contentType: String, length: Int64?, body: any ValueBody, options: WriteOptions
    ) async throws(KVError) -> WriteResult {
        try options.validateRequestID()
        try NodeStorage.validate(RowValue(bytes: [], contentType: contentType), maximumBytes: 0)
        let settings = local.settings
        if let length, length > Int64(settings.maximumValueBytes) {
            throw KVError(
                .valueTooLarge,
                "the value has \(length) bytes; the limit is \(settings.maximumValueBytes)")
        }
        let (_, _, quorum) = try resolve(key, options.quorum)
        if options.condition == .ifAbsent {
            // Refused before a byte is read: the condition is checked again when the row
            // is written, but an upload that is bound to fail should not cost its chunks.
            let current = try await get(key, options: ReadOptions(quorum: QuorumOverrides(n: quorum.n)))
            if !current.isAbsent { throw KVError(.preconditionFailed, "the row exists (If-None-Match: *)") }
        }
        var head: [UInt8] = []
        while head.count <= settings.effectiveInlineThreshold {
            guard let piece = try await body.next() else {
                if let length, Int64(head.count) != length {
                    throw KVError(
                        .incompleteBody, "the body has \(head.count) of the \(length) bytes declared")
                }
                return try await put(
                    key, value: RowValue(bytes: head, contentType: contentType), options: options)
            }
            head += piece
        }
        let settingsGraceMilliseconds = self.settings.largeValueGraceMilliseconds
        let upload = UploadRecord(
            table: key.table, encodedKey: KeyEncoding.encode(key.parts),
            startedMilliseconds: NodeStorage.wallClockMilliseconds(), replicas: quorum.n)
        let value = try await storeChunks(
            startingWith: head, rest: body, declaredLength: length, quorum: quorum, upload: upload)
        // Past half the grace, a collector could take the chunks before the row names
        // them (ChunkCollection): the upload gives up instead.
        let elapsed = NodeStorage.wallClockMilliseconds() - upload.startedMilliseconds
        guard elapsed < settingsGraceMilliseconds / 2 else {
            throw KVError(
                .requestTimeout,
                "the upload took \(elapsed / 1000) s; uploads must finish within half the large value grace (\(settingsGraceMilliseconds / 2000) s)"
            )
        }
        return try await writeRow(
            key,
            Sibling(
                value: RowValue(largeValue: value, contentType: contentType),
                timestampMilliseconds: NodeStorage.wallClockMilliseconds()),
            options, increment: nil)
    }

    public func readLargeValue(_ value: LargeValue, range: Range<Int64>, into sink: ValueSink)
        async throws(KVError)
    {
        guard !range.isEmpty else { return }
        guard range.lowerBound >= 0, range.upperBound <= value.length else {
            throw KVError(.rangeNotSatisfiable, "the value has \(value.length) bytes")
        }
        let chunkBytes = Int64(value.chunkBytes)
        let first = Int(range.lowerBound / chunkBytes)
        let last = Int((range.upperBound - 1) / chunkBytes)
        let window = local.settings.chunksInFlight
        var reads: [Int: Task<[UInt8], any Error>] = [:]
        defer { for read in reads.values { read.cancel() } }
        var nextToStart = first
        let header = ChunkRecord.headerBytes
        for index in first...last {
            while nextToStart <= last && nextToStart < index + window {
                let chunk = nextToStart
                reads[chunk] = Task { try await self.readChunk(of: value, index: chunk) }
                nextToStart += 1
            }
            let record: [UInt8]
            do {
                record = try await reads.removeValue(forKey: index)!.value
            } catch let error as KVError {
                throw error
            } catch {
                throw KVError(.internalError, "reading a chunk failed", underlying: error)
            }
            let chunkRange = value.chunkRange(index)
            let lower = Int(max(range.lowerBound, chunkRange.lowerBound) - chunkRange.lowerBound)
            let upper = Int(min(range.upperBound, chunkRange.upperBound) - chunkRange.lowerBound)
            try await sink(record[(header + lower)..<(header + upper)])
        }
    }

    // MARK: - Writing chunks

    /// Reads the rest of the body into chunks, writes each to its replicas with a few in
    /// flight, and returns the record of the value once every chunk is durable.
    private func storeChunks(
        startingWith head: [UInt8], rest body: any ValueBody, declaredLength: Int64?, quorum: Quorum,
        upload: UploadRecord
    ) async throws(KVError) -> LargeValue {
        let settings = local.settings
        var random = SystemRandomNumberGenerator()
        let id = UUIDValue(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) })!
        let started = upload.startedMilliseconds
        let chunkOptions = WriteOptions(quorum: QuorumOverrides(n: quorum.n, w: quorum.w, dw: quorum.dw))
        _ = try await writeRow(
            RowKey(
                table: LargeValue.chunkTable.name,
                parts: [.uuid(id), .int64(Int64(LargeValue.uploadRecordIndex))]),
            Sibling(value: RowValue(bytes: upload.encoded), timestampMilliseconds: started), chunkOptions,
            increment: nil)
        let chunkBytes = settings.effectiveChunkBytes
        let limit = Int64(settings.maximumValueBytes)
        let window = settings.chunksInFlight
        do {
            let (length, md5) = try await withThrowingTaskGroup(of: Void.self) { group in
                // The MD5 of the whole value runs beside the upload, one chunk after the
                // other, at most `window` chunks behind.
                var digests: [Task<Insecure.MD5, Never>] = []
                let header = ChunkRecord.headerBytes
                var carry = head[...]
                var total = Int64(head.count)
                var inFlight = 0
                var index = 0
                var ended = false
                while !ended {
                    // The record is built in place: the chunk's bytes are copied once.
                    var chunk = ChunkRecord.startEncoding(
                        uploadStartedMilliseconds: started, dataCapacity: chunkBytes)
                    while chunk.count - header < chunkBytes {
                        if carry.isEmpty {
                            guard let piece = try await body.next() else {
                                ended = true
                                break
                            }
                            total += Int64(piece.count)
                            guard total <= limit else {
                                throw KVError(
                                    .valueTooLarge, "the value is larger than the limit of \(limit) bytes")
                            }
                            carry = piece[...]
                        }
                        let taken = min(chunkBytes - (chunk.count - header), carry.count)
                        chunk += carry.prefix(taken)
                        carry = carry.dropFirst(taken)
                    }
                    if chunk.count == header { break }
                    ChunkRecord.seal(&chunk, checksum: ChunkChecks.checksum(chunk[header...]))
                    let sealed = chunk
                    let previous = digests.last
                    digests.append(
                        Task {
                            var digest = await previous?.value ?? Insecure.MD5()
                            digest.update(data: sealed[header...])
                            return digest
                        })
                    if digests.count > window {
                        _ = await digests[digests.count - 1 - window].value
                        digests.removeFirst(digests.count - 1 - window)
                    }
                    if inFlight == window {
                        try await group.next()
                        inFlight -= 1
                    }
                    let chunkIndex = index
                    group.addTask {
                        try await self.writeChunk(
                            id: id, index: chunkIndex, record: sealed, started: started, options: chunkOptions
                        )
                    }
                    inFlight += 1
                    index += 1
                }
                try await group.waitForAll()
                let digest = await digests.last?.value ?? Insecure.MD5()
                return (total, Array(digest.finalize()))
            }
            if let declaredLength, declaredLength != length {
                throw KVError(
                    .incompleteBody, "the body has \(length) of the \(declaredLength) bytes declared")
            }
            return LargeValue(id: id, length: length, chunkBytes: chunkBytes, md5: md5, replicas: quorum.n)
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.internalError, "storing a large value failed", underlying: error)
        }
    }

    /// Writes one chunk's encoded, sealed ``ChunkRecord``.
    private func writeChunk(id: UUIDValue, index: Int, record: [UInt8], started: Int64, options: WriteOptions)
        async throws(KVError)
    {
        let key = RowKey(table: LargeValue.chunkTable.name, parts: [.uuid(id), .int64(Int64(index))])
        _ = try await writeRow(
            key, Sibling(value: RowValue(bytes: record), timestampMilliseconds: started), options,
            increment: nil)
    }

    // MARK: - Reading chunks

    /// Chunk `index` of `value` (its encoded ``ChunkRecord``): from its first replica, and when that one has no sound
    /// copy (missing, damaged, down), from all of them (the read repairs the others),
    /// then from as many as answer.
    private func readChunk(of value: LargeValue, index: Int) async throws(KVError) -> [UInt8] {
        let key = RowKey(table: LargeValue.chunkTable.name, parts: value.chunkKeyParts(index))
        let expected = value.chunkRange(index).count
        let n = value.replicas
        var attempts = [(n: 1, r: 1), (n: n, r: n)]
        attempts += (1..<max(n, 1)).reversed().map { (n: n, r: $0) }
        var lastError = KVError(.corruptChunk, "chunk \(index) of large value \(value.id) was not found")
        var tried: [(Int, Int)] = []
        for attempt in attempts where !tried.contains(where: { $0 == attempt }) {
            tried.append(attempt)
            do {
                let result = try await get(
                    key, options: ReadOptions(quorum: QuorumOverrides(n: attempt.n, r: attempt.r, pr: 0)))
                // Replicas read damaged copies as absent (ChunkChecks); the length is
                // checked here against what the row's version recorded.
                for sibling in result.siblings {
                    let bytes = sibling.value?.bytes ?? []
                    if ChunkRecord.header(of: bytes) != nil, bytes.count - ChunkRecord.headerBytes == expected
                    {
                        return bytes
                    }
                }
                lastError = KVError(
                    .corruptChunk, "no replica asked holds a sound chunk \(index) of large value \(value.id)")
            } catch {
                lastError = error
            }
        }
        throw lastError
    }
}
