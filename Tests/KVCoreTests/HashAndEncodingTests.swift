import KVCore
import PropertyBased
import Testing

@Suite("SipHash, placement hash and base64url")
struct HashAndEncodingTests {
    /// The reference vectors of the SipHash paper: key 00..0f, message 00..(n-1).
    @Test(arguments: [
        (0, 0x726f_db47_dd0e_0e31 as UInt64), (1, 0x74f8_39c5_93dc_67fd), (7, 0xab02_00f5_8b01_d137),
        (8, 0x93f5_f579_9a93_2462), (15, 0xa129_ca61_49be_45e5), (63, 0x958a_324c_eb06_4572),
    ])
    func sipHashMatchesReferenceVectors(length: Int, expected: UInt64) {
        let key = (0..<16).map { UInt8($0) }
        var hasher = SipHash24(key: key)
        hasher.combine(contentsOf: (0..<length).map { UInt8($0) })
        #expect(hasher.finalize() == expected)
    }

    /// Contiguous bytes are hashed a word at a time: in any split, and from sequences
    /// that are not contiguous, the tag is the one of feeding each byte alone.
    @Test func sipHashAnySplitEqualsByteByByte() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...100), Gen.int(in: 0...100), Gen.int(in: 0...100))
        {
            bytes, first, second in
            var byByte = SipHash24(key0: 0x0706_0504_0302_0100, key1: 0x0f0e_0d0c_0b0a_0908)
            for byte in bytes { byByte.combine(byte) }
            let expected = byByte.finalize()
            let cuts = [min(first, second), max(first, second)].map { min($0, bytes.count) }
            var split = SipHash24(key0: 0x0706_0504_0302_0100, key1: 0x0f0e_0d0c_0b0a_0908)
            split.combine(contentsOf: bytes[..<cuts[0]])
            split.combine(contentsOf: bytes[cuts[0]..<cuts[1]])
            split.combine(contentsOf: bytes[cuts[1]...])
            #expect(split.finalize() == expected)
            #expect(
                SipHash24.hash(
                    bytes.lazy.map { $0 }, key0: 0x0706_0504_0302_0100, key1: 0x0f0e_0d0c_0b0a_0908)
                    == expected)
        }
    }

    /// Golden vectors of the placement hash. If these change, every key moves.
    @Test func stableHashGoldenVectors() {
        #expect(StableHash.hash([UInt8]()) == 0x1e92_4b9d_7377_00d7)
        #expect(StableHash.hash(Array("a".utf8)) == 0x96c2_0860_cd93_a249)
        #expect(StableHash.hash(Array("hello world".utf8)) == 0x56f8_a94b_58ab_8b0a)
        #expect(StableHash.hash((0..<32).map { UInt8($0) }) == 0xab63_1e00_0630_06f5)
    }

    @Test func partitionGoldenVectors() {
        func partition(_ namespace: String, _ table: String, _ key: [KeyPart], count: Int) -> UInt32 {
            PartitionID.of(
                namespace: namespace, table: table, encodedPartitionKey: KeyEncoding.encode(key),
                partitionCount: count
            ).rawValue
        }
        #expect(partition("app", "users", [.string("alice")], count: 256) == 32)
        #expect(partition("app", "users", [.string("bob")], count: 256) == 233)
        #expect(partition("app", "users", [.string("bob")], count: 1024) == 934)
        #expect(partition("", "t", [], count: 256) == 128)
        #expect(partition("", "t", [], count: 1) == 0)
    }

    @Test func partitionsSpreadEvenly() {
        var counts = [Int](repeating: 0, count: 64)
        for index in 0..<64_000 {
            let partition = PartitionID.of(
                namespace: "ns", table: "t", encodedPartitionKey: KeyEncoding.encode([.int64(Int64(index))]),
                partitionCount: 64)
            counts[Int(partition.rawValue)] += 1
        }
        // 1000 expected per partition; a fair hash stays well within ±20 %.
        #expect(counts.allSatisfy { (800...1200).contains($0) }, "\(counts)")
    }

    @Test func base64URLRoundTripsArbitraryBytes() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...64)) { bytes in
            let text = Base64URL.encode(bytes)
            #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
            #expect(Base64URL.decode(text) == bytes)
        }
    }

    @Test func base64URLRejectsInvalidText() {
        #expect(Base64URL.decode("a") == nil)
        #expect(Base64URL.decode("ab+c") == nil)
        #expect(Base64URL.decode("ab=c") == nil)
        #expect(Base64URL.decode("ab c") == nil)
        // "AB" would leave non-zero padding bits; the canonical encoding of [0x00] is "AA".
        #expect(Base64URL.decode("AB") == nil)
        #expect(Base64URL.decode("AA") == [0])
        #expect(Base64URL.decode("") == [])
    }

    @Test func binaryReaderNeverCrashesOnArbitraryBytes() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...40)) { bytes in
            var reader = BinaryReader(bytes)
            while !reader.isAtEnd {
                guard (try? reader.readVarint()) != nil,
                    (try? reader.readLengthPrefixed(maximumLength: 8)) != nil
                else { break }
            }
        }
    }

    @Test func varintsRoundTrip() async {
        await propertyCheck(input: Gen.uint64(), Gen.int64()) { unsigned, signed in
            var writer = BinaryWriter()
            writer.writeVarint(unsigned)
            writer.writeSignedVarint(signed)
            writer.writeFixed(unsigned)
            var reader = BinaryReader(writer.bytes)
            let decoded = (try reader.readVarint(), try reader.readSignedVarint(), try reader.readFixed())
            #expect(decoded == (unsigned, signed, unsigned))
            #expect(reader.isAtEnd)
        }
    }

    @Test func varintOverflowIsRejected() {
        var reader = BinaryReader([UInt8](repeating: 0xFF, count: 10) + [0x01])
        #expect(throws: BinaryReader.Failure.varintOverflow) { try reader.readVarint() }
    }

    @Test func hexadecimalMatchesTheStandardLibrary() async {
        #expect(Hexadecimal.lowercase(UInt64(0)) == "0000000000000000")
        #expect(Hexadecimal.lowercase(UInt64.max) == "ffffffffffffffff")
        #expect(Hexadecimal.lowercase([0x00, 0x0F, 0xA0, 0xFF]) == "000fa0ff")
        #expect(Hexadecimal.lowercase([UInt8]()) == "")
        await propertyCheck(input: Gen.uint64(), Gen.uint8().array(of: 0...40)) { value, bytes in
            let digits = String(value, radix: 16)
            #expect(Hexadecimal.lowercase(value) == String(repeating: "0", count: 16 - digits.count) + digits)
            let perByte = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            #expect(Hexadecimal.lowercase(bytes) == perByte)
        }
    }
}
