import KVCluster
import KVCore

/// What travels on a node-to-node connection.
public enum WireFrame: Hashable, Sendable {
    /// The first frame a connecting node sends: who is speaking, in which cluster, where
    /// it listens for peers (`host:port`, empty if it does not say), and its wall clock
    /// when it sent the frame. A peer of another cluster, or whose clock is too far from
    /// the accepting node's, is disconnected.
    case hello(node: NodeID, cluster: String, listenAddress: String, clockMilliseconds: Int64)
    /// The accepting node's answer to `hello`: a fresh nonce the connecting node must
    /// prove it holds the cluster's secret against (see ``PeerHandshake``).
    case challenge(nonce: [UInt8])
    /// The connecting node's proof: its own fresh nonce and a MAC, under the cluster's
    /// key, of both nonces and its hello.
    case proof(nonce: [UInt8], mac: [UInt8])
    /// The accepting node's proof in turn; only now does either side send messages.
    case accepted(mac: [UInt8])
    /// A replica message (requests and replies are matched by their ids).
    case message(ReplicaMessage)
}

/// The binary node-to-node protocol, version 1.
///
/// A frame is a 4-byte big-endian length, then that many bytes: the protocol version
/// (`1`), a frame kind, and the kind's fields. Integers are LEB128 (zigzag for signed),
/// byte strings and text are length-prefixed, a stored object is embedded in its
/// storage format (``StoredObjectCodec``). `docs/wire-protocol.md` lists every field.
///
/// Decoding checks every length, count, tag and UTF-8 string and throws
/// ``WireProtocolError``; it never trusts a peer's bytes. A frame longer than the receiver's
/// limit is refused before it is buffered.
public enum WireCodec {
    /// The protocol version written and accepted.
    public static let version: UInt8 = 1
    /// Bytes of the length prefix.
    public static let lengthPrefixBytes = 4
    /// The largest frame accepted by default: a 16 MiB value with room for siblings.
    public static let defaultMaximumFrameBytes = 64 << 20

    /// Frame kinds. Their raw values are part of the protocol.
    enum Kind: UInt8 {
        case hello = 1
        case store = 2
        case stored = 3
        case fetch = 4
        case fetched = 5
        case replicaFailed = 6
        case repair = 7
        case coordinateWrite = 8
        case coordinateRead = 9
        case coordinated = 10
        case metadata = 11
        case metadataMerged = 12
        case scan = 13
        case scanned = 14
        case membership = 15
        case storeHint = 16
        case handoff = 17
        case handedOff = 18
        case treeRequest = 19
        case treeHashes = 20
        case keyHashesRequest = 21
        case keyHashes = 22
        case reconcile = 23
        case reconciled = 24
        case reapQuery = 25
        case reapAnswer = 26
        case reap = 27
        case transferPull = 28
        case transferRows = 29
        case transfersRequest = 30
        case transfersReport = 31
        case challenge = 32
        case proof = 33
        case accepted = 34
    }

    /// The most member states one membership message carries.
    static let maximumMemberUpdates = 64
    /// The most hashes or indexes one anti-entropy message carries.
    static let maximumTreeEntries = 1 << 16

    /// Encodes `frame` with its length prefix.
    public static func encode(_ frame: WireFrame) -> [UInt8] {
        var body = BinaryWriter(capacity: lengthPrefixBytes + estimatedBodyBytes(frame))
        // The length, filled in once the body is written: a frame is built in one buffer.
        body.writeRaw(repeatElement(0, count: lengthPrefixBytes))
        body.write(version)
        switch frame {
        case .hello(let node, let cluster, let listenAddress, let clock):
            body.write(Kind.hello.rawValue)
            body.writeFixed(node.rawValue)
            body.writeLengthPrefixed(Array(cluster.utf8))
            body.writeLengthPrefixed(Array(listenAddress.utf8))
            body.writeSignedVarint(clock)
        case .challenge(let nonce):
            body.write(Kind.challenge.rawValue)
            body.writeLengthPrefixed(nonce)
        case .proof(let nonce, let mac):
            body.write(Kind.proof.rawValue)
            body.writeLengthPrefixed(nonce)
            body.writeLengthPrefixed(mac)
        case .accepted(let mac):
            body.write(Kind.accepted.rawValue)
            body.writeLengthPrefixed(mac)
        case .message(let message):
            encode(message, into: &body)
        }
        body.overwriteFixed32(UInt32(body.bytes.count - lengthPrefixBytes), at: 0)
        return body.bytes
    }

    /// About the size of `frame`'s body, so that the buffer of a frame carrying rows
    /// (a transfer's batch, a large value's chunk) is allocated once rather than grown
    /// by doubling, each step a copy. Small frames take the default.
    static func estimatedBodyBytes(_ frame: WireFrame) -> Int {
        let small = 128
        guard case .message(let message) = frame else { return small }
        switch message {
        case .quorum(.store(_, let key, let object)), .quorum(.repair(let key, let object)),
            .quorum(.storeHint(_, let key, let object, _)), .hints(.handoff(_, let key, let object)),
            .antiEntropy(.reconcile(_, let key, let object)):
            return small + key.bytes.count + StoredObjectCodec.encodedCount(object)
        case .quorum(.fetched(_, let object)):
            return small + StoredObjectCodec.encodedCount(object)
        case .quorum(.coordinateWrite(_, let key, let write, _)):
            return small + key.bytes.count + (write.sibling.value?.bytes.count ?? 0)
        case .scans(.scanned(_, let page)), .transfers(.transferRows(_, let page, _)):
            return page.rows.reduce(small) {
                $0 + $1.key.count + StoredObjectCodec.encodedCount($1.object) + 8
            }
        case .metadata(.push(_, let encoded)), .transfers(.transfersReport(_, let encoded)):
            return small + encoded.count
        default:
            return small
        }
    }

    /// Decodes one frame's body (what follows the length prefix).
    public static func decode(body: [UInt8]) throws(WireProtocolError) -> WireFrame {
        do {
            var reader = BinaryReader(body)
            let version = try reader.readByte()
            guard version == Self.version else { throw WireProtocolError.unsupportedVersion(version) }
            let tag = try reader.readByte()
            guard let kind = Kind(rawValue: tag) else {
                throw WireProtocolError.malformed("unknown frame kind \(tag)")
            }
            let frame = try decode(kind, from: &reader)
            guard reader.isAtEnd else {
                throw WireProtocolError.malformed("\(reader.remainingCount) bytes after the frame")
            }
            return frame
        } catch let error as WireProtocolError {
            throw error
        } catch let error as KVError {
            throw WireProtocolError.malformed("\(error.code): \(error.message)")
        } catch {
            throw WireProtocolError.malformed("truncated or malformed: \(error)")
        }
    }

    // MARK: - Messages

    static func encode(_ message: ReplicaMessage, into writer: inout BinaryWriter) {
        switch message {
        case .quorum(.store(let id, let key, let object)):
            writer.write(Kind.store.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            writeObject(object, into: &writer)
        case .quorum(.stored(let id, let durable)):
            writer.write(Kind.stored.rawValue)
            writer.writeVarint(id)
            writer.write(durable ? 1 : 0)
        case .quorum(.fetch(let id, let key)):
            writer.write(Kind.fetch.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
        case .quorum(.fetched(let id, let object)):
            writer.write(Kind.fetched.rawValue)
            writer.writeVarint(id)
            writeObject(object, into: &writer)
        case .quorum(.replicaFailed(let id, let error)):
            writer.write(Kind.replicaFailed.rawValue)
            writer.writeVarint(id)
            encode(error, into: &writer)
        case .quorum(.repair(let key, let object)):
            writer.write(Kind.repair.rawValue)
            encode(key, into: &writer)
            writeObject(object, into: &writer)
        case .quorum(.coordinateWrite(let id, let key, let write, let quorum)):
            writer.write(Kind.coordinateWrite.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            encode(write, into: &writer)
            encode(quorum, into: &writer)
        case .quorum(.coordinateRead(let id, let key, let quorum)):
            writer.write(Kind.coordinateRead.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            encode(quorum, into: &writer)
        case .quorum(.coordinated(let id, let outcome)):
            writer.write(Kind.coordinated.rawValue)
            writer.writeVarint(id)
            switch outcome {
            case .written(let object):
                writer.write(0)
                writeObject(object, into: &writer)
            case .read(let object):
                writer.write(1)
                writeObject(object, into: &writer)
            case .failed(let error):
                writer.write(2)
                encode(error, into: &writer)
            }
        case .metadata(.push(let id, let encoded)):
            writer.write(Kind.metadata.rawValue)
            if let id {
                writer.write(1)
                writer.writeVarint(id)
            } else {
                writer.write(0)
            }
            writer.writeLengthPrefixed(encoded)
        case .metadata(.merged(let id)):
            writer.write(Kind.metadataMerged.rawValue)
            writer.writeVarint(id)
        case .scans(.scan(let id, let request)):
            writer.write(Kind.scan.rawValue)
            writer.writeVarint(id)
            writer.writeLengthPrefixed(request.tablePrefix)
            writer.writeVarint(UInt64(request.partitions.count))
            for partition in request.partitions { writer.writeVarint(UInt64(partition.rawValue)) }
            writer.writeLengthPrefixed(request.lowerBound)
            if let upper = request.upperBound {
                writer.write(1)
                writer.writeLengthPrefixed(upper)
            } else {
                writer.write(0)
            }
            writer.writeVarint(UInt64(request.limit))
            writer.write((request.reverse ? 1 : 0) | (request.keysOnly ? 2 : 0))
        case .scans(.scanned(let id, let page)):
            writer.write(Kind.scanned.rawValue)
            writer.writeVarint(id)
            encode(page, into: &writer)
        case .membership(let message, let digest):
            writer.write(Kind.membership.rawValue)
            writer.writeFixed(digest)
            let updates: [MemberState]
            switch message {
            case .ping(let sequence, let states):
                writer.write(0)
                writer.writeVarint(sequence)
                updates = states
            case .ack(let sequence, let states):
                writer.write(1)
                writer.writeVarint(sequence)
                updates = states
            case .pingRequest(let sequence, let target, let states):
                writer.write(2)
                writer.writeVarint(sequence)
                writer.writeFixed(target.rawValue)
                updates = states
            }
            let sent = updates.prefix(maximumMemberUpdates)
            writer.writeVarint(UInt64(sent.count))
            for update in sent {
                writer.writeFixed(update.node.rawValue)
                writer.writeVarint(update.incarnation)
                writer.write(UInt8(update.status.rawValue))
            }
        case .quorum(.storeHint(let id, let key, let object, let target)):
            writer.write(Kind.storeHint.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            writeObject(object, into: &writer)
            writer.writeFixed(target.rawValue)
        case .hints(.handoff(let id, let key, let object)):
            writer.write(Kind.handoff.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            writeObject(object, into: &writer)
        case .hints(.handedOff(let id, let error)):
            writer.write(Kind.handedOff.rawValue)
            writer.writeVarint(id)
            if let error {
                writer.write(1)
                encode(error, into: &writer)
            } else {
                writer.write(0)
            }
        case .antiEntropy(.treeRequest(let id, let partition, let segments)):
            writer.write(Kind.treeRequest.rawValue)
            writer.writeVarint(id)
            writer.writeVarint(UInt64(partition.rawValue))
            writer.writeVarint(UInt64(segments.count))
            for segment in segments { writer.writeVarint(UInt64(segment)) }
        case .antiEntropy(.treeHashes(let id, let ready, let hashes)):
            writer.write(Kind.treeHashes.rawValue)
            writer.writeVarint(id)
            writer.write(ready ? 1 : 0)
            writer.writeVarint(UInt64(hashes.count))
            for hash in hashes { writer.writeFixed(hash) }
        case .antiEntropy(.keyHashesRequest(let id, let partition, let leaves, let after)):
            writer.write(Kind.keyHashesRequest.rawValue)
            writer.writeVarint(id)
            writer.writeVarint(UInt64(partition.rawValue))
            writer.writeVarint(UInt64(leaves.count))
            for leaf in leaves { writer.writeVarint(UInt64(leaf)) }
            if let after {
                writer.write(1)
                writer.writeLengthPrefixed(after)
            } else {
                writer.write(0)
            }
        case .antiEntropy(.keyHashes(let id, let entries, let truncated)):
            writer.write(Kind.keyHashes.rawValue)
            writer.writeVarint(id)
            writer.write(truncated ? 1 : 0)
            writer.writeVarint(UInt64(entries.count))
            for entry in entries {
                writer.writeLengthPrefixed(entry.key)
                writer.writeFixed(entry.hash)
            }
        case .antiEntropy(.reconcile(let id, let key, let object)):
            writer.write(Kind.reconcile.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            writeObject(object, into: &writer)
        case .antiEntropy(.reconciled(let id, let outcome)):
            writer.write(Kind.reconciled.rawValue)
            writer.writeVarint(id)
            switch outcome {
            case .object(let object):
                writer.write(0)
                writeObject(object, into: &writer)
            case .failed(let error):
                writer.write(1)
                encode(error, into: &writer)
            }
        case .reaping(.reapQuery(let id, let key, let hash, let layoutVersion)):
            writer.write(Kind.reapQuery.rawValue)
            writer.writeVarint(id)
            encode(key, into: &writer)
            writer.writeFixed(hash)
            writer.writeVarint(layoutVersion)
        case .reaping(.reapAnswer(let id, let agrees)):
            writer.write(Kind.reapAnswer.rawValue)
            writer.writeVarint(id)
            writer.write(agrees ? 1 : 0)
        case .reaping(.reap(let key, let hash)):
            writer.write(Kind.reap.rawValue)
            encode(key, into: &writer)
            writer.writeFixed(hash)
        case .transfers(.transferPull(let id, let partition, let layoutVersion, let after, let maximumBytes)):
            writer.write(Kind.transferPull.rawValue)
            writer.writeVarint(id)
            writer.writeVarint(UInt64(partition.rawValue))
            writer.writeVarint(layoutVersion)
            if let after {
                writer.write(1)
                writer.writeLengthPrefixed(after)
            } else {
                writer.write(0)
            }
            writer.writeVarint(UInt64(max(0, maximumBytes)))
        case .transfers(.transferRows(let id, let page, let estimatedRows)):
            writer.write(Kind.transferRows.rawValue)
            writer.writeVarint(id)
            writer.writeVarint(estimatedRows)
            encode(page, into: &writer)
        case .transfers(.transfersRequest(let id)):
            writer.write(Kind.transfersRequest.rawValue)
            writer.writeVarint(id)
        case .transfers(.transfersReport(let id, let encoded)):
            writer.write(Kind.transfersReport.rawValue)
            writer.writeVarint(id)
            writer.writeLengthPrefixed(encoded)
        }
    }

    static func decode(_ kind: Kind, from reader: inout BinaryReader) throws -> WireFrame {
        switch kind {
        case .hello:
            let node = NodeID(rawValue: try reader.readFixed())
            let cluster = try readText(&reader, maximumBytes: 256)
            let listenAddress = try readText(&reader, maximumBytes: 512)
            return .hello(
                node: node, cluster: cluster, listenAddress: listenAddress,
                clockMilliseconds: try reader.readSignedVarint())
        case .challenge:
            return .challenge(nonce: try readHandshakeBytes(&reader))
        case .proof:
            let nonce = try readHandshakeBytes(&reader)
            return .proof(nonce: nonce, mac: try readHandshakeBytes(&reader))
        case .accepted:
            return .accepted(mac: try readHandshakeBytes(&reader))
        case .store:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            return .message(.quorum(.store(id: id, key: key, object: try decodeObject(&reader))))
        case .stored:
            let id = try reader.readVarint()
            return .message(.quorum(.stored(id: id, durable: try readBool(&reader))))
        case .fetch:
            let id = try reader.readVarint()
            return .message(.quorum(.fetch(id: id, key: try decodeKey(&reader))))
        case .fetched:
            let id = try reader.readVarint()
            return .message(.quorum(.fetched(id: id, object: try decodeObject(&reader))))
        case .replicaFailed:
            let id = try reader.readVarint()
            return .message(.quorum(.replicaFailed(id: id, error: try decodeError(&reader))))
        case .repair:
            let key = try decodeKey(&reader)
            return .message(.quorum(.repair(key: key, object: try decodeObject(&reader))))
        case .coordinateWrite:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            let write = try decodeWrite(&reader)
            return .message(
                .quorum(.coordinateWrite(id: id, key: key, write: write, quorum: try decodeQuorum(&reader))))
        case .coordinateRead:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            return .message(.quorum(.coordinateRead(id: id, key: key, quorum: try decodeQuorum(&reader))))
        case .coordinated:
            let id = try reader.readVarint()
            let outcome: OperationOutcome
            switch try reader.readByte() {
            case 0: outcome = .written(try decodeObject(&reader))
            case 1: outcome = .read(try decodeObject(&reader))
            case 2: outcome = .failed(try decodeError(&reader))
            case let tag: throw WireProtocolError.malformed("unknown outcome \(tag)")
            }
            return .message(.quorum(.coordinated(id: id, outcome: outcome)))
        case .metadata:
            let id: UInt64? = try readBool(&reader) ? try reader.readVarint() : nil
            return .message(
                .metadata(.push(id: id, encoded: try reader.readLengthPrefixed(maximumLength: 16 << 20))))
        case .metadataMerged:
            return .message(.metadata(.merged(id: try reader.readVarint())))
        case .scan:
            let id = try reader.readVarint()
            let prefix = try reader.readLengthPrefixed(maximumLength: 1024)
            let count = try reader.readVarint()
            guard count <= 1 << 16 else { throw WireProtocolError.malformed("\(count) partitions") }
            var partitions: [PartitionID] = []
            for _ in 0..<count {
                let partition = try reader.readVarint()
                guard partition <= UInt64(UInt32.max) else {
                    throw WireProtocolError.malformed("partition \(partition)")
                }
                partitions.append(PartitionID(rawValue: UInt32(partition)))
            }
            let lower = try reader.readLengthPrefixed(maximumLength: 64 << 10)
            let upper: [UInt8]? =
                try readBool(&reader) ? try reader.readLengthPrefixed(maximumLength: 64 << 10) : nil
            let limit = try reader.readVarint()
            guard (1...100_000).contains(limit) else {
                throw WireProtocolError.malformed("scan limit \(limit)")
            }
            let flags = try reader.readByte()
            guard flags <= 3 else { throw WireProtocolError.malformed("scan flags \(flags)") }
            return .message(
                .scans(
                    .scan(
                        id: id,
                        request: PartitionScan(
                            tablePrefix: prefix, partitions: partitions, lowerBound: lower, upperBound: upper,
                            limit: Int(limit), reverse: flags & 1 != 0, keysOnly: flags & 2 != 0))))
        case .scanned:
            return .message(.scans(.scanned(id: try reader.readVarint(), page: try decodePage(&reader))))
        case .transferPull:
            let id = try reader.readVarint()
            let partition = try readPartition(&reader)
            let version = try reader.readVarint()
            let after: [UInt8]? =
                try readBool(&reader) ? try reader.readLengthPrefixed(maximumLength: 64 << 10) : nil
            let maximumBytes = try reader.readVarint()
            guard maximumBytes <= UInt64(1 << 40) else {
                throw WireProtocolError.malformed("\(maximumBytes) bytes")
            }
            return .message(
                .transfers(
                    .transferPull(
                        id: id, partition: partition, layoutVersion: version, after: after,
                        maximumBytes: Int(maximumBytes))))
        case .transferRows:
            let id = try reader.readVarint()
            let estimate = try reader.readVarint()
            return .message(
                .transfers(.transferRows(id: id, page: try decodePage(&reader), estimatedRows: estimate)))
        case .transfersRequest:
            return .message(.transfers(.transfersRequest(id: try reader.readVarint())))
        case .transfersReport:
            let id = try reader.readVarint()
            return .message(
                .transfers(
                    .transfersReport(id: id, encoded: try reader.readLengthPrefixed(maximumLength: 16 << 20)))
            )
        default:
            return try decodeRest(kind, from: &reader)
        }
    }

    static func decodeRest(_ kind: Kind, from reader: inout BinaryReader) throws -> WireFrame {
        switch kind {
        case .membership:
            let digest = try reader.readFixed()
            let tag = try reader.readByte()
            let sequence = try reader.readVarint()
            let target: NodeID? = tag == 2 ? NodeID(rawValue: try reader.readFixed()) : nil
            let count = try reader.readVarint()
            guard count <= UInt64(maximumMemberUpdates) else {
                throw WireProtocolError.malformed("\(count) member updates")
            }
            var updates: [MemberState] = []
            for _ in 0..<count {
                let node = NodeID(rawValue: try reader.readFixed())
                let incarnation = try reader.readVarint()
                guard let status = MemberState.Status(rawValue: Int(try reader.readByte())) else {
                    throw WireProtocolError.malformed("unknown member status")
                }
                updates.append(MemberState(node: node, incarnation: incarnation, status: status))
            }
            let message: MembershipMessage
            switch tag {
            case 0: message = .ping(sequence: sequence, updates: updates)
            case 1: message = .ack(sequence: sequence, updates: updates)
            case 2: message = .pingRequest(sequence: sequence, target: target!, updates: updates)
            default: throw WireProtocolError.malformed("unknown membership message \(tag)")
            }
            return .message(.membership(message, metadataDigest: digest))
        case .storeHint:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            let object = try decodeObject(&reader)
            return .message(
                .quorum(
                    .storeHint(
                        id: id, key: key, object: object, target: NodeID(rawValue: try reader.readFixed())))
            )
        case .handoff:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            return .message(.hints(.handoff(id: id, key: key, object: try decodeObject(&reader))))
        case .handedOff:
            let id = try reader.readVarint()
            let error: KVError? = try readBool(&reader) ? try decodeError(&reader) : nil
            return .message(.hints(.handedOff(id: id, error: error)))
        case .treeRequest:
            let id = try reader.readVarint()
            let partition = try readPartition(&reader)
            let segments = try readIndexes(&reader, below: MerkleTree.segmentCount)
            return .message(.antiEntropy(.treeRequest(id: id, partition: partition, segments: segments)))
        case .treeHashes:
            let id = try reader.readVarint()
            let ready = try readBool(&reader)
            let count = try reader.readVarint()
            guard count <= UInt64(min(maximumTreeEntries, reader.remainingCount / 8)) else {
                throw WireProtocolError.malformed("\(count) tree hashes")
            }
            var hashes: [UInt64] = []
            for _ in 0..<count { hashes.append(try reader.readFixed()) }
            return .message(.antiEntropy(.treeHashes(id: id, ready: ready, hashes: hashes)))
        case .keyHashesRequest:
            let id = try reader.readVarint()
            let partition = try readPartition(&reader)
            let leaves = try readIndexes(&reader, below: MerkleTree.leafCount)
            let after: [UInt8]? =
                try readBool(&reader) ? try reader.readLengthPrefixed(maximumLength: 64 << 10) : nil
            return .message(
                .antiEntropy(.keyHashesRequest(id: id, partition: partition, leaves: leaves, after: after)))
        case .keyHashes:
            let id = try reader.readVarint()
            let truncated = try readBool(&reader)
            let count = try reader.readVarint()
            guard count <= UInt64(reader.remainingCount / 9) else {
                throw WireProtocolError.malformed("\(count) key hashes")
            }
            var entries: [KeyHash] = []
            for _ in 0..<count {
                let key = try reader.readLengthPrefixed(maximumLength: 64 << 10)
                entries.append(KeyHash(key: key, hash: try reader.readFixed()))
            }
            return .message(.antiEntropy(.keyHashes(id: id, entries: entries, truncated: truncated)))
        case .reconcile:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            return .message(.antiEntropy(.reconcile(id: id, key: key, object: try decodeObject(&reader))))
        case .reconciled:
            let id = try reader.readVarint()
            let outcome: StorageOutcome
            switch try reader.readByte() {
            case 0: outcome = .object(try decodeObject(&reader))
            case 1: outcome = .failed(try decodeError(&reader))
            case let tag: throw WireProtocolError.malformed("unknown reconcile outcome \(tag)")
            }
            return .message(.antiEntropy(.reconciled(id: id, outcome: outcome)))
        case .reapQuery:
            let id = try reader.readVarint()
            let key = try decodeKey(&reader)
            let hash = try reader.readFixed()
            return .message(
                .reaping(
                    .reapQuery(id: id, key: key, objectHash: hash, layoutVersion: try reader.readVarint())))
        case .reapAnswer:
            let id = try reader.readVarint()
            return .message(.reaping(.reapAnswer(id: id, agrees: try readBool(&reader))))
        case .reap:
            let key = try decodeKey(&reader)
            return .message(.reaping(.reap(key: key, objectHash: try reader.readFixed())))
        default:
            throw WireProtocolError.malformed("frame kind \(kind.rawValue) is decoded elsewhere")
        }
    }

}

/// Why a peer's bytes were refused. The connection that sent them is closed.
public enum WireProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The frame's protocol version is not one this node speaks.
    case unsupportedVersion(UInt8)
    /// The frame is longer than the receiver accepts.
    case frameTooLarge(Int, limit: Int)
    /// The frame's contents are invalid.
    case malformed(String)
    /// Peers' unfinished frames already hold the receiver's whole buffer budget.
    case overBudget(Int, budget: Int)

    public var description: String {
        switch self {
        case .unsupportedVersion(let version): "unsupported wire protocol version \(version)"
        case .frameTooLarge(let length, let limit): "a \(length)-byte frame exceeds the \(limit)-byte limit"
        case .malformed(let detail): "malformed frame: \(detail)"
        case .overBudget(let length, let budget):
            "no room for a \(length)-byte frame: peers' unfinished frames hold the \(budget)-byte budget"
        }
    }
}
