import KVCluster
import KVCore
import NIOCore
import NIOEmbedded
import PropertyBased
import Testing

@testable import KVWire

/// Builds random frames from a seed, covering every kind and every optional field.
struct FrameFactory {
    var random: SeededRandom

    init(seed: Int) { random = SeededRandom(seed: UInt64(seed)) }

    mutating func bytes(upTo limit: Int) -> [UInt8] {
        (0..<Int.random(in: 0...limit, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    mutating func actor() -> ActorID {
        ActorID(
            node: NodeID(rawValue: UInt64.random(in: 1...4, using: &random) << 40),
            incarnation: UInt32.random(in: 1...3, using: &random))
    }

    mutating func sibling() -> Sibling {
        let timestamp = Int64.random(in: -1_000...Int64.max / 2, using: &random)
        let requestID =
            Bool.random(using: &random) ? "request-\(UInt32.random(in: 0...UInt32.max, using: &random))" : nil
        if Bool.random(using: &random) { return .tombstone(at: timestamp, requestID: requestID) }
        let contentType = [
            "application/octet-stream", "text/plain; charset=utf-8", "application/json", "ü/ñ",
        ]
        .randomElement(using: &random)!
        return Sibling(
            value: RowValue(bytes: bytes(upTo: 40), contentType: contentType),
            timestampMilliseconds: timestamp, requestID: requestID)
    }

    mutating func object() -> StoredObject {
        var object = StoredObject()
        for _ in 0..<Int.random(in: 0...6, using: &random) {
            let context = Bool.random(using: &random) ? object.context : VersionVector()
            object.recordWrite(sibling(), context: context, actor: actor())
        }
        return object
    }

    mutating func key() -> ReplicaKey {
        ReplicaKey(
            partition: PartitionID(rawValue: UInt32.random(in: 0...UInt32.max, using: &random)),
            bytes: bytes(upTo: 30), generation: id())
    }

    mutating func quorum() -> Quorum {
        Quorum(
            n: Int.random(in: 1...5, using: &random), r: Int.random(in: 0...5, using: &random),
            w: Int.random(in: 0...5, using: &random), dw: Int.random(in: 0...5, using: &random),
            pr: Int.random(in: 0...5, using: &random), pw: Int.random(in: 0...5, using: &random))
    }

    mutating func error() -> KVError {
        KVError(
            [KVError.Code.quorumUnavailable, .storageIO, .preconditionFailed].randomElement(using: &random)!,
            "failure \(UInt32.random(in: 0...UInt32.max, using: &random)) ✓")
    }

    mutating func id() -> UInt64 {
        UInt64.random(in: 0...UInt64.max, using: &random) >> UInt64.random(in: 0...63, using: &random)
    }

    mutating func frame() -> WireFrame {
        switch Int.random(in: 0...31, using: &random) {
        case 0:
            return .hello(
                node: NodeID(rawValue: id()), cluster: "cluster-\(id())",
                listenAddress: Bool.random(using: &random) ? "" : "127.0.0.1:\(id() % 65536)",
                clockMilliseconds: Int64(bitPattern: id()))
        case 1: return .message(.quorum(.store(id: id(), key: key(), object: object())))
        case 2: return .message(.quorum(.stored(id: id(), durable: Bool.random(using: &random))))
        case 3: return .message(.quorum(.fetch(id: id(), key: key())))
        case 4: return .message(.quorum(.fetched(id: id(), object: object())))
        case 5: return .message(.quorum(.replicaFailed(id: id(), error: error())))
        case 6: return .message(.quorum(.repair(key: key(), object: object())))
        case 7:
            let context = Bool.random(using: &random) ? object().context : nil
            let conditions: [WriteCondition] = [.none, .ifAbsent, .ifMatch("tag-\(id())")]
            let write = ProposedWrite(
                sibling: sibling(), context: context, condition: conditions.randomElement(using: &random)!,
                generation: id(), increment: Bool.random(using: &random) ? Int64(bitPattern: id()) : nil)
            return .message(.quorum(.coordinateWrite(id: id(), key: key(), write: write, quorum: quorum())))
        case 8: return .message(.quorum(.coordinateRead(id: id(), key: key(), quorum: quorum())))
        case 9:
            return .message(
                .quorum(
                    .coordinated(
                        id: id(), outcome: Bool.random(using: &random) ? .read(object()) : .written(object()))
                ))
        case 10:
            return .message(
                .metadata(
                    .push(
                        id: Bool.random(using: &random) ? id() : nil,
                        encoded: (0..<Int.random(in: 0...40, using: &random)).map { _ in
                            UInt8.random(in: 0...255, using: &random)
                        })))
        case 11: return .message(.metadata(.merged(id: id())))
        case 12:
            let partitions = (0..<Int.random(in: 0...5, using: &random)).map { _ in
                PartitionID(rawValue: UInt32.random(in: 0...255, using: &random))
            }
            return .message(
                .scans(
                    .scan(
                        id: id(),
                        request: PartitionScan(
                            tablePrefix: key().bytes, partitions: partitions, lowerBound: key().bytes,
                            upperBound: Bool.random(using: &random) ? key().bytes : nil,
                            limit: Int.random(in: 1...10_000, using: &random),
                            reverse: Bool.random(using: &random),
                            keysOnly: Bool.random(using: &random)))))
        case 13:
            let rows = (0..<Int.random(in: 0...3, using: &random)).map { _ in
                (key: key().bytes, object: object())
            }
            return .message(
                .scans(
                    .scanned(
                        id: id(),
                        page: PartitionScanPage(
                            rows: rows, truncated: Bool.random(using: &random),
                            error: Bool.random(using: &random) ? error() : nil))))
        case 14:
            let updates = (0..<Int.random(in: 0...4, using: &random)).map { _ in
                MemberState(
                    node: NodeID(rawValue: id()), incarnation: id(),
                    status: [.alive, .suspect, .dead].randomElement(using: &random)!)
            }
            let messages: [MembershipMessage] = [
                .ping(sequence: id(), updates: updates), .ack(sequence: id(), updates: updates),
                .pingRequest(sequence: id(), target: NodeID(rawValue: id()), updates: updates),
            ]
            return .message(.membership(messages.randomElement(using: &random)!, metadataDigest: id()))
        case 15:
            return .message(
                .quorum(.storeHint(id: id(), key: key(), object: object(), target: NodeID(rawValue: id()))))
        case 16: return .message(.hints(.handoff(id: id(), key: key(), object: object())))
        case 17:
            return .message(.hints(.handedOff(id: id(), error: Bool.random(using: &random) ? error() : nil)))
        case 18:
            return .message(
                .antiEntropy(
                    .treeRequest(
                        id: id(), partition: PartitionID(rawValue: UInt32(id() % 65536)),
                        segments: indexes(below: MerkleTree.segmentCount))))
        case 19:
            return .message(
                .antiEntropy(
                    .treeHashes(
                        id: id(), ready: Bool.random(using: &random),
                        hashes: (0..<Int.random(in: 0...40, using: &random)).map { _ in id() })))
        case 20:
            return .message(
                .antiEntropy(
                    .keyHashesRequest(
                        id: id(), partition: PartitionID(rawValue: UInt32(id() % 65536)),
                        leaves: indexes(below: MerkleTree.leafCount),
                        after: Bool.random(using: &random) ? key().bytes : nil)))
        case 21:
            return .message(
                .antiEntropy(
                    .keyHashes(
                        id: id(),
                        entries: (0..<Int.random(in: 0...5, using: &random)).map { _ in
                            KeyHash(key: key().bytes, hash: id())
                        }, truncated: Bool.random(using: &random))))
        case 22: return .message(.antiEntropy(.reconcile(id: id(), key: key(), object: object())))
        case 23:
            return .message(
                .antiEntropy(
                    .reconciled(
                        id: id(), outcome: Bool.random(using: &random) ? .object(object()) : .failed(error()))
                ))
        case 24:
            return .message(.reaping(.reapQuery(id: id(), key: key(), objectHash: id(), layoutVersion: id())))
        case 25: return .message(.reaping(.reapAnswer(id: id(), agrees: Bool.random(using: &random))))
        case 26: return .message(.reaping(.reap(key: key(), objectHash: id())))
        case 27:
            return .message(
                .transfers(
                    .transferPull(
                        id: id(),
                        partition: PartitionID(rawValue: UInt32.random(in: 0...255, using: &random)),
                        layoutVersion: id(), after: Bool.random(using: &random) ? key().bytes : nil,
                        maximumBytes: Int.random(in: 0...(1 << 24), using: &random))))
        case 28:
            let rows = (0..<Int.random(in: 0...3, using: &random)).map { _ in
                (key: key().bytes, object: object())
            }
            return .message(
                .transfers(
                    .transferRows(
                        id: id(),
                        page: PartitionScanPage(
                            rows: rows, truncated: Bool.random(using: &random),
                            error: Bool.random(using: &random) ? error() : nil), estimatedRows: id())))
        case 29: return .message(.transfers(.transfersRequest(id: id())))
        case 30:
            return .message(
                .transfers(
                    .transfersReport(
                        id: id(),
                        encoded: (0..<Int.random(in: 0...40, using: &random)).map { _ in
                            UInt8.random(in: 0...255, using: &random)
                        })))
        default: return .message(.quorum(.coordinated(id: id(), outcome: .failed(error()))))
        }
    }

    /// A frame of the handshake. Drawn apart from ``frame()`` so that the frames every
    /// other seed draws, and the hashes pinned from them, stay as they were.
    mutating func handshakeFrame() -> WireFrame {
        func token() -> [UInt8] {
            (0..<PeerHandshake.tokenBytes).map { _ in UInt8.random(in: 0...255, using: &random) }
        }
        switch Int.random(in: 0...2, using: &random) {
        case 0: return .challenge(nonce: token())
        case 1: return .proof(nonce: token(), mac: token())
        default: return .accepted(mac: token())
        }
    }

    /// Distinct ascending indexes below `limit`.
    mutating func indexes(below limit: Int) -> [Int] {
        Array(
            Set(
                (0..<Int.random(in: 0...8, using: &random)).map { _ in
                    Int.random(in: 0..<limit, using: &random)
                })
        )
        .sorted()
    }
}

@Suite("Wire codec")
struct WireCodecTests {
    @Test("every frame round-trips through its encoding")
    func roundTrip() async {
        await propertyCheck(count: 2_000, input: Gen.int(in: 0...Int(Int32.max))) { seed in
            var factory = FrameFactory(seed: seed)
            for frame in [factory.frame(), factory.handshakeFrame()] {
                let encoded = WireCodec.encode(frame)
                let length = encoded.prefix(4).reduce(0) { $0 << 8 | Int($1) }
                #expect(length == encoded.count - 4)
                #expect((try? WireCodec.decode(body: Array(encoded.dropFirst(4)))) == frame)
            }
        }
    }

    @Test("the encoding of version 1 is pinned")
    func golden() throws {
        #expect(
            WireCodec.encode(.message(.quorum(.stored(id: 300, durable: true)))) == [
                0, 0, 0, 5, 1, 3, 0xAC, 0x02, 1,
            ])
        #expect(
            WireCodec.encode(
                .hello(
                    node: NodeID(rawValue: 0x0102), cluster: "kv", listenAddress: "a:1", clockMilliseconds: 5)
            )
                == [0, 0, 0, 18, 1, 1, 0, 0, 0, 0, 0, 0, 1, 2, 2, 0x6B, 0x76, 3, 0x61, 0x3A, 0x31, 10])
        #expect(
            WireCodec.encode(
                .message(
                    .quorum(
                        .fetch(
                            id: 1,
                            key: ReplicaKey(
                                partition: PartitionID(rawValue: 200), bytes: [9], generation: 300)))))
                == [0, 0, 0, 9, 1, 4, 1, 0xC8, 0x01, 1, 9, 0xAC, 0x02])
    }

    /// The bytes of every message kind, pinned: frames drawn from fixed seeds, hashed per
    /// kind. A change of any field's encoding changes its kind's hash, so nodes of the
    /// previous version would no longer understand it; that needs a new protocol version
    /// (see docs/wire-protocol.md), never a silent change.
    static let pinnedKindHashes: [UInt8: UInt64] = [
        1: 0xc21c_56c2_a692_aa53,
        2: 0x4d14_c7b4_b991_e1dd,
        3: 0x64ea_3567_840a_b007,
        4: 0x23d2_14a5_73d8_d844,
        5: 0x1a62_68d5_43ca_e6e5,
        6: 0x206b_bc9a_32b0_8814,
        7: 0xa76f_e698_559e_c551,
        8: 0xe92_e61f_a243_ac00,
        9: 0x13e6_ee5a_fa5c_fdb5,
        10: 0xd316_0846_6ae1_facf,
        11: 0xc5ff_d23e_de9d_e6af,
        12: 0xf5b_1645_ba0e_5fa5,
        13: 0xc862_7d1d_1ab0_459c,
        14: 0x5791_c8ef_e424_5175,
        15: 0x8631_3a97_adda_98be,
        16: 0xc64f_74eb_f00f_dbc3,
        17: 0xf75a_7de1_ca52_8ea0,
        18: 0x1029_c5f1_f946_5a0e,
        19: 0x7d86_6cf3_69ed_f16c,
        20: 0xffa_b0a6_5f50_2d1a,
        21: 0x6e79_d8f1_4281_020c,
        22: 0x564e_99cd_dd36_22f6,
        23: 0x39c8_5051_a1e7_d6d3,
        24: 0xc000_53aa_b02a_adf5,
        25: 0x302c_c975_aab2_3632,
        26: 0x94e_66e1_f2c1_f11f,
        27: 0x29d0_afc6_405a_a1d9,
        28: 0xf6e0_20b2_d4c5_f60f,
        29: 0x48b8_0810_91d0_f8ad,
        30: 0x8067_20c8_e761_bb0f,
        31: 0x4ca6_0450_b274_d965,
        32: 0xbadf_0ecc_c598_a2de,
        33: 0x5720_6514_48b1_bed6,
        34: 0x99c0_792b_5fac_29bb,
    ]

    /// The hash of each kind's encodings among the frames of seeds 0..<2048.
    static func kindHashes() -> [UInt8: UInt64] {
        var encodings: [UInt8: [UInt8]] = [:]
        for seed in 0..<2048 {
            var factory = FrameFactory(seed: seed)
            let encoded = WireCodec.encode(factory.frame())
            encodings[encoded[5], default: []] += encoded
        }
        for seed in 0..<64 {
            var factory = FrameFactory(seed: seed)
            let encoded = WireCodec.encode(factory.handshakeFrame())
            encodings[encoded[5], default: []] += encoded
        }
        return encodings.mapValues { StableHash.hash($0) }
    }

    @Test("the bytes of every message kind are pinned")
    func everyKindIsPinned() {
        let hashes = Self.kindHashes()
        #expect(hashes.count == 34, "the seeds cover \(hashes.count) kinds")
        for kind in hashes.keys.sorted() {
            #expect(
                hashes[kind] == Self.pinnedKindHashes[kind],
                "kind \(kind) encodes to hash 0x\(String(hashes[kind]!, radix: 16)), pinned 0x\(String(Self.pinnedKindHashes[kind] ?? 0, radix: 16))"
            )
        }
    }

    @Test("arbitrary bytes never crash the decoder")
    func arbitraryBytes() async {
        await propertyCheck(count: 3_000, input: Gen.int(in: 0...255).array(of: 0...200)) { numbers in
            let bytes = numbers.map { UInt8($0) }
            _ = try? WireCodec.decode(body: bytes)
            // With a valid version and kind in front, the decoder gets further in.
            for kind in UInt8(1)...34 {
                _ = try? WireCodec.decode(body: [1, kind] + bytes)
            }
        }
    }

    @Test("corrupted and truncated frames are refused or decoded, never crash")
    func mutatedFrames() async {
        await propertyCheck(
            count: 1_000, input: Gen.int(in: 0...Int(Int32.max)), Gen.int(in: 0...Int(Int32.max))
        ) {
            seed, mutation in
            var factory = FrameFactory(seed: seed)
            let body = Array(WireCodec.encode(factory.frame()).dropFirst(4))
            var random = SeededRandom(seed: UInt64(mutation))
            var corrupted = body
            for _ in 0...Int.random(in: 0...3, using: &random) {
                let index = Int.random(in: 0..<corrupted.count, using: &random)
                corrupted[index] = UInt8.random(in: 0...255, using: &random)
            }
            _ = try? WireCodec.decode(body: corrupted)
            let cut = Int.random(in: 0..<body.count, using: &random)
            #expect(throws: WireProtocolError.self) { try WireCodec.decode(body: Array(body.prefix(cut))) }
        }
    }

    @Test("unknown versions, kinds, flags and trailing bytes are named errors")
    func refusals() {
        #expect(throws: WireProtocolError.unsupportedVersion(2)) { try WireCodec.decode(body: [2, 3, 1, 1]) }
        #expect(throws: WireProtocolError.malformed("unknown frame kind 99")) {
            try WireCodec.decode(body: [1, 99])
        }
        #expect(throws: WireProtocolError.malformed("flag byte 7")) {
            try WireCodec.decode(body: [1, 3, 1, 7])
        }
        #expect(throws: WireProtocolError.malformed("1 bytes after the frame")) {
            try WireCodec.decode(body: [1, 3, 1, 1, 0])
        }
        #expect(throws: WireProtocolError.malformed("a handshake field of 31 bytes")) {
            try WireCodec.decode(body: [1, 32, 31] + [UInt8](repeating: 7, count: 31))
        }
        #expect(throws: WireProtocolError.self) {
            try WireCodec.decode(body: [1, 34, 33] + [UInt8](repeating: 7, count: 33))
        }
    }

    @Test("the channel decoder reassembles frames split anywhere")
    func streamDecoding() async {
        await propertyCheck(count: 100, input: Gen.int(in: 0...Int(Int32.max))) { seed in
            var factory = FrameFactory(seed: seed)
            let frames = (0..<5).map { _ in factory.frame() }
            let stream = frames.flatMap(WireCodec.encode)
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(WireFrameDecoder()))
            var offset = 0
            var random = SeededRandom(seed: UInt64(seed))
            var decoded: [WireFrame] = []
            do {
                while offset < stream.count {
                    let size = min(stream.count - offset, Int.random(in: 1...40, using: &random))
                    try channel.writeInbound(ByteBuffer(bytes: stream[offset..<(offset + size)]))
                    offset += size
                }
                while let frame = try channel.readInbound(as: WireFrame.self) { decoded.append(frame) }
                _ = try channel.finish()
            } catch {
                Issue.record("the decoder failed: \(error)")
            }
            #expect(decoded == frames)
        }
    }

    @Test("a frame over the limit is refused from its length prefix alone")
    func oversizeFrame() throws {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(WireFrameDecoder(maximumFrameBytes: 1_000)))
        #expect(throws: WireProtocolError.frameTooLarge(1_001, limit: 1_000)) {
            try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0x03, 0xE9, 1]))
        }
        _ = try? channel.finish()
    }
}
