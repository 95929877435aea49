import NIOHTTP1
import PropertyBased
import Testing

@testable import KVServer

/// Request targets parsed in place against a plain reading of the rules: split the path
/// at every slash, drop what precedes the first, percent-decode each piece, and refuse
/// the target if any part of it (query included) is malformed.
@Suite("Request targets")
struct RequestTargetTests {
    static let alphabet: [String] = ["/", "%", "2", "F", "a", "?", "&", "=", "+", "z", "%2F", "%zz", "v1"]

    /// The reading the parser must agree with, written for clarity rather than speed.
    static func reference(_ uri: String) -> (segments: [[UInt8]], query: [(String, [UInt8])], path: [UInt8])?
    {
        let target = Array(uri.utf8)
        let queryStart = target.firstIndex(of: UInt8(ascii: "?"))
        let path = target[..<(queryStart ?? target.endIndex)]
        guard let decodedPath = HTTPRequest.percentDecode(path, plusIsSpace: false) else { return nil }
        var segments: [[UInt8]] = []
        for raw in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst() {
            guard let decoded = HTTPRequest.percentDecode(raw, plusIsSpace: false) else { return nil }
            segments.append(decoded)
        }
        if segments.count > 1, segments.last?.isEmpty == true { segments.removeLast() }
        var query: [(String, [UInt8])] = []
        if let queryStart {
            for pair in target[(queryStart + 1)...].split(separator: UInt8(ascii: "&")) {
                let parts = pair.split(
                    separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = HTTPRequest.percentDecode(parts[0], plusIsSpace: true),
                    let value = parts.count > 1 ? HTTPRequest.percentDecode(parts[1], plusIsSpace: true) : []
                else { return nil }
                query.append((String(decoding: name, as: UTF8.self), value))
            }
        }
        return (segments, query, decodedPath)
    }

    @Test func targetsParseAsTheReferenceReadsThem() async {
        #expect(
            HTTPRequest(method: .GET, uri: "/v1/a%2Fb/c/?x=1+2&y", headers: [:], body: [])?.pathSegments
                == [Array("v1".utf8), Array("a/b".utf8), Array("c".utf8)])
        #expect(HTTPRequest(method: .GET, uri: "%zz/v1", headers: [:], body: []) == nil)
        await propertyCheck(count: 2000, input: Gen.int(in: 0..<Self.alphabet.count).array(of: 0...14)) {
            pieces in
            let uri = pieces.map { Self.alphabet[$0] }.joined()
            let parsed = HTTPRequest(method: .GET, uri: uri, headers: [:], body: [])
            let expected = Self.reference(uri)
            #expect((parsed == nil) == (expected == nil), "\(uri)")
            if let parsed, let expected {
                #expect(parsed.pathSegments == expected.segments, "\(uri)")
                #expect(parsed.path == expected.path, "\(uri)")
                #expect(parsed.query.map(\.name) == expected.query.map(\.0), "\(uri)")
                #expect(parsed.query.map(\.value) == expected.query.map(\.1), "\(uri)")
            }
        }
    }
}
