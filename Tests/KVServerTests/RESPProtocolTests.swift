import KVCore
import NIOCore
import PropertyBased
import Testing

@testable import KVRESP

/// The RESP codec on its own: framing, limits, replies in both protocol versions, and
/// the small languages inside commands (numbers, glob patterns).
@Suite("RESP protocol")
struct RESPProtocolTests {
    static func buffer(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    static func commands(_ bytes: [UInt8], limits: RESPLimits = RESPLimits()) throws(RESPProtocolError)
        -> [[[UInt8]]]
    {
        var buffer = ByteBuffer(bytes: bytes)
        var result: [[[UInt8]]] = []
        var parser = RESPParser(limits: limits)
        while let command = try parser.next(&buffer) { result.append(command) }
        return result
    }

    static func words(_ command: [[UInt8]]) -> [String] {
        command.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func framedAndInlineCommandsParse() throws {
        let pipelined =
            "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\nPING\r\nset \"x y\" 'z'\n"
        let parsed = try Self.commands(Array(pipelined.utf8))
        #expect(parsed.count == 4)
        #expect(Self.words(parsed[0]) == ["GET", "k"])
        #expect(parsed[1][2] == Array("a\r\nb".utf8))
        #expect(Self.words(parsed[2]) == ["PING"])
        #expect(Self.words(parsed[3]) == ["set", "x y", "z"])
        // A closing quote followed by another quote: Redis refuses it.
        #expect(throws: RESPProtocolError.self) { try Self.commands(Array("set 'a''b'\n".utf8)) }
        let escaped = try Self.commands(Array("set \"a\\x00\\n\" b\r\n".utf8))
        #expect(escaped[0][1] == [UInt8(ascii: "a"), 0, 0x0A])
        #expect(try Self.commands(Array("\r\n".utf8)) == [[]])
    }

    /// A command cut anywhere, its first part parsed before the rest arrives, parses to
    /// the same words, and nothing is left over.
    @Test func aCommandCutAnywhereParsesTheSame() throws {
        let bytes = Array("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n".utf8)
        for length in 0..<bytes.count {
            var parser = RESPParser()
            var buffer = ByteBuffer(bytes: bytes.prefix(length))
            #expect(try parser.next(&buffer) == nil)
            buffer.writeBytes(bytes.dropFirst(length))
            let command = try parser.next(&buffer)
            #expect(command.map(Self.words) == ["SET", "key", "va\r\nl"], "cut at \(length)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test func limitsAreEnforcedBeforeTheBytesArrive() {
        let limits = RESPLimits(
            maximumBulkBytes: 100, maximumArguments: 4, maximumCommandBytes: 150, maximumInlineBytes: 32)
        func refusal(_ text: String) -> String? {
            do {
                _ = try Self.commands(Array(text.utf8), limits: limits)
                return nil
            } catch {
                return error.message
            }
        }
        #expect(refusal("*5\r\n") == "ERR Protocol error: invalid multibulk length")
        #expect(refusal("*1\r\n$101\r\n") == "ERR Protocol error: invalid bulk length")
        #expect(refusal("*1\r\n$-5\r\n") == "ERR Protocol error: invalid bulk length")
        #expect(refusal("*1\r\n+OK\r\n") == "ERR Protocol error: expected '$', got '+'")
        #expect(refusal("*x\r\n") == "ERR Protocol error: invalid multibulk length")
        #expect(
            refusal("*2\r\n$100\r\n" + String(repeating: "a", count: 100) + "\r\n$100\r\n")?.contains(
                "larger") == true)
        #expect(refusal(String(repeating: "a", count: 40)) == "ERR Protocol error: too big inline request")
        #expect(refusal("get \"open\n") == "ERR Protocol error: unbalanced quotes in request")
        #expect(refusal("*4\r\n$1\r\na\r\n") == nil)
        // Lengths of many digits are refused, never overflow.
        #expect(refusal("*9999999999999999999\r\n") == "ERR Protocol error: invalid multibulk length")
        #expect(refusal("*1\r\n$9999999999999999999\r\n") == "ERR Protocol error: invalid bulk length")
    }

    /// Arbitrary bytes never crash the parser, never make it consume what it did not
    /// parse, and never make it buffer past its limits.
    @Test func arbitraryInputNeverCrashesTheParser() async {
        let limits = RESPLimits(
            maximumBulkBytes: 64, maximumArguments: 8, maximumCommandBytes: 128, maximumInlineBytes: 64)
        let alphabet = Array("*$\r\n0123456789-+:abcSETget \"'\\x".utf8) + [0, 0xFF]
        await propertyCheck(count: 2000, input: Gen.int(in: 0..<alphabet.count).array(of: 0...120)) {
            indices in
            var buffer = ByteBuffer(bytes: indices.map { alphabet[$0] })
            var parser = RESPParser(limits: limits)
            do {
                while let command = try parser.next(&buffer) {
                    #expect(command.count <= limits.maximumArguments)
                    #expect(
                        command.allSatisfy {
                            $0.count <= max(limits.maximumBulkBytes, limits.maximumInlineBytes)
                        })
                }
            } catch {
                #expect((error as? RESPProtocolError)?.message.hasPrefix("ERR Protocol error: ") == true)
            }
        }
    }

    @Test func repliesEncodeForBothProtocolVersions() {
        func wire(_ value: RESPValue, _ version: Int) -> String {
            var buffer = ByteBuffer()
            value.write(to: &buffer, protocolVersion: version)
            return String(buffer: buffer)
        }
        #expect(wire(.ok, 2) == "+OK\r\n")
        #expect(wire(.error("ERR x"), 3) == "-ERR x\r\n")
        #expect(wire(.integer(-3), 2) == ":-3\r\n")
        #expect(wire(.bulk([0, 13, 10]), 2) == "$3\r\n\u{0}\r\n\r\n")
        #expect(wire(.null, 2) == "$-1\r\n" && wire(.null, 3) == "_\r\n")
        #expect(wire(.nullArray, 2) == "*-1\r\n")
        #expect(wire(.map([(.bulk("a"), .integer(1))]), 2) == "*2\r\n$1\r\na\r\n:1\r\n")
        #expect(wire(.map([(.bulk("a"), .integer(1))]), 3) == "%1\r\n$1\r\na\r\n:1\r\n")
        #expect(wire(.double(1.5), 3) == ",1.5\r\n" && wire(.double(1.5), 2) == "$3\r\n1.5\r\n")
        #expect(wire(.boolean(true), 3) == "#t\r\n" && wire(.boolean(true), 2) == ":1\r\n")
        #expect(wire(.verbatim("hi"), 3) == "=6\r\ntxt:hi\r\n" && wire(.verbatim("hi"), 2) == "$2\r\nhi\r\n")
    }

    @Test func numbersFollowRedis() {
        for (text, value) in [
            ("0", Int64(0)), ("-1", -1), ("9223372036854775807", .max), ("-9223372036854775808", .min),
        ] {
            #expect(RESPNumbers.integer(Array(text.utf8)) == value)
        }
        for text in ["", "01", "+1", " 1", "1 ", "9223372036854775808", "1.0", "-", "-0"] {
            #expect(RESPNumbers.integer(Array(text.utf8)) == nil, "\(text)")
        }
        #expect(RESPNumbers.text(10.5 + 0.1) == "10.6")
        #expect(RESPNumbers.text(3) == "3")
        #expect(RESPNumbers.text(-0.25) == "-0.25")
        #expect(RESPNumbers.text(1e20) == "100000000000000000000")
        #expect(RESPNumbers.text(1.5e-7) == "0.00000015")
        #expect(RESPNumbers.double(Array("inf".utf8)) == nil)
        #expect(RESPNumbers.double(Array(" 1".utf8)) == nil)
    }

    @Test func globPatternsMatchAsInRedis() {
        func match(_ pattern: String, _ key: String) -> Bool {
            RESPGlob.matches(Array(pattern.utf8), Array(key.utf8))
        }
        #expect(match("*", "") && match("*", "anything"))
        #expect(match("h?llo", "hello") && !match("h?llo", "hllo"))
        #expect(match("h[ae]llo", "hallo") && !match("h[ae]llo", "hillo"))
        #expect(match("h[^e]llo", "hallo") && !match("h[^e]llo", "hello"))
        #expect(match("h[a-b]llo", "hbllo") && !match("h[a-b]llo", "hcllo"))
        #expect(match("user:*:name", "user:42:name") && !match("user:*:name", "user:42:mail"))
        #expect(match("a\\*", "a*") && !match("a\\*", "ab"))
        // A pattern of many stars against a long key ends quickly.
        #expect(!match(String(repeating: "*a", count: 30) + "b", String(repeating: "a", count: 200)))
    }
}
