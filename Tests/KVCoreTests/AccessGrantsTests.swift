import KVCore
import Testing

@Suite("Access grants")
struct AccessGrantsTests {
    @Test("each level includes the ones below it, and * covers every namespace and the cluster")
    func levels() throws {
        let grants = try AccessGrants(parsing: "orders:write,audit:read")
        #expect(grants.allows(.read, on: "orders"))
        #expect(grants.allows(.write, on: "orders"))
        #expect(!grants.allows(.admin, on: "orders"))
        #expect(grants.allows(.read, on: "audit"))
        #expect(!grants.allows(.write, on: "audit"))
        #expect(!grants.allows(.read, on: "other"))
        #expect(!grants.allows(.read, on: nil))
        let cluster = try AccessGrants(parsing: "*:read,orders:admin")
        #expect(cluster.allows(.read, on: nil))
        #expect(cluster.allows(.read, on: "anything"))
        #expect(!cluster.allows(.write, on: "anything"))
        #expect(cluster.allows(.admin, on: "orders"))
        #expect(!cluster.allows(.admin, on: nil))
        #expect(AccessGrants.everything.allows(.admin, on: nil))
    }

    @Test("grants parse from SCOPE:LEVEL lists, the higher level winning, and print back")
    func parsing() throws {
        #expect(try AccessGrants(parsing: "b:read,a:write,b:admin").description == "a:write,b:admin")
        for bad in ["", "orders", "orders:owner", ":read", "or ders:read", "orders:read:x", "_x:read"] {
            #expect(throws: KVError.self, "\(bad)") { try AccessGrants(parsing: bad) }
        }
        let many = (0...AccessGrants.maximumScopes).map { "n\($0):read" }.joined(separator: ",")
        #expect(throws: KVError.self) { try AccessGrants(parsing: many) }
    }

    @Test("a token's id comes from its text only when the text has a token's shape")
    func tokenIDs() {
        let secret = String(repeating: "A", count: 43)
        #expect(AccessTokenRecord.id(ofToken: "kvt_0123456789abcdef_" + secret) == "0123456789abcdef")
        #expect(AccessTokenRecord.id(ofToken: "kvt_0123456789ABCDEF_" + secret) == nil)
        #expect(AccessTokenRecord.id(ofToken: "kvt_0123456789abcdef_" + secret.dropLast()) == nil)
        #expect(AccessTokenRecord.id(ofToken: "xyz_0123456789abcdef_" + secret) == nil)
        #expect(AccessTokenRecord.id(ofToken: "kvt_0123456789abcdef-" + secret) == nil)
        #expect(AccessTokenRecord.id(ofToken: "") == nil)
    }
}
