import KVCore
import Testing

@Suite("Per-request quorum settings")
struct QuorumOverrideTests {
    @Test("overrides replace the table's defaults, and what they imply follows")
    func overridesApply() throws {
        let defaults = ReplicationDefaults()
        #expect(QuorumOverrides().applied(to: defaults, availableReplicas: 5) == defaults)
        let one = QuorumOverrides(w: 1).applied(to: defaults, availableReplicas: 5)
        #expect(one.w == 1 && one.dw == 1 && one.n == 3 && one.r == 2)
        let all = QuorumOverrides(r: 3, w: 3).applied(to: defaults, availableReplicas: 5)
        #expect(all.r == 3 && all.w == 3 && all.dw == 2)
        try all.validate()
        let fewer = QuorumOverrides(n: 1).applied(to: defaults, availableReplicas: 5)
        #expect(fewer == ReplicationDefaults(n: 1, r: 1, w: 1, dw: 1))
    }

    @Test("a table's defaults shrink to a smaller cluster, an explicit override does not")
    func smallClusters() {
        let shrunk = QuorumOverrides().applied(to: ReplicationDefaults(), availableReplicas: 1)
        #expect(shrunk == ReplicationDefaults(n: 1, r: 1, w: 1, dw: 1))
        let explicit = QuorumOverrides(n: 3).applied(to: ReplicationDefaults(), availableReplicas: 1)
        #expect(explicit.n == 3)
    }

    @Test("settings are parsed from named texts, and bad ones are refused with request.invalid_quorum")
    func parsing() throws {
        let given = ["r": "1", "pw": "0"]
        let parsed = try QuorumOverrides.parse { given[$0] }
        #expect(parsed == QuorumOverrides(r: 1, pw: 0))
        #expect(parsed.named.map(\.name) == ["r", "pw"])
        for bad in ["-1", "x", "17", ""] {
            #expect(throws: KVError.self) { _ = try QuorumOverrides.parse { $0 == "w" ? bad : nil } }
        }
        let invalid = QuorumOverrides(r: 3).applied(
            to: ReplicationDefaults(n: 2, r: 1, w: 1, dw: 1), availableReplicas: 5)
        #expect(throws: KVError.self) { try invalid.validate() }
    }

    @Test("request ids are 1 to 128 bytes of visible ASCII")
    func requestIDs() throws {
        try WriteOptions(requestID: "order-42").validateRequestID()
        for bad in ["", "has space", String(repeating: "x", count: 129), "naïve"] {
            #expect(throws: KVError.self) { try WriteOptions(requestID: bad).validateRequestID() }
        }
    }
}
