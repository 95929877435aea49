import KVCore
import Testing

@testable import KVWire

/// Transcripts of the peer handshake: both sides' state machines fed each other's
/// frames, and an attacker's frames in their place.
@Suite("Peer handshake")
struct PeerHandshakeTests {
    static let secret = try! ClusterSecret("the cluster's shared secret")
    static let hello = WireFrame.hello(
        node: NodeID(rawValue: 7), cluster: "kv", listenAddress: "127.0.0.1:8700",
        clockMilliseconds: 1_000_000)

    static func nonce(_ byte: UInt8) -> [UInt8] { [UInt8](repeating: byte, count: PeerHandshake.tokenBytes) }

    static func acceptor(secret: ClusterSecret = Self.secret, nonce: UInt8 = 1) -> PeerHandshake.Acceptor {
        PeerHandshake.Acceptor(secret: secret, cluster: "kv", nonce: Self.nonce(nonce))
    }

    static func connector(
        secret: ClusterSecret = Self.secret, hello: WireFrame = Self.hello, nonce: UInt8 = 2
    ) -> PeerHandshake.Connector {
        PeerHandshake.Connector(secret: secret, hello: hello, nonce: Self.nonce(nonce))
    }

    /// The connector's proof in a handshake with `acceptor`.
    static func proof(
        _ connector: inout PeerHandshake.Connector, against acceptor: inout PeerHandshake.Acceptor
    )
        -> WireFrame?
    {
        guard case .send(let challenge) = acceptor.received(connector.hello),
            case .send(let proof) = connector.received(challenge)
        else { return nil }
        return proof
    }

    @Test("a peer whose clock is further off than the bound is refused; within it, it proceeds")
    func clockSkewIsBounded() {
        func step(now: Int64) -> PeerHandshake.Step {
            var acceptor = PeerHandshake.Acceptor(
                secret: Self.secret, cluster: "kv", nonce: Self.nonce(1), maximumClockSkewMilliseconds: 500)
            return acceptor.received(Self.connector().hello, nowMilliseconds: now)
        }
        for now: Int64 in [1_000_000, 1_000_500, 999_500] {
            guard case .send(.challenge) = step(now: now) else {
                Issue.record("a peer \(now - 1_000_000) ms off was refused")
                continue
            }
        }
        for now: Int64 in [1_000_501, 999_499, 0] {
            guard case .refuse(let reason) = step(now: now) else {
                Issue.record("a peer \(now - 1_000_000) ms off was not refused")
                continue
            }
            #expect(reason.contains("clock") && reason.contains("500 ms"), "\(reason)")
        }
    }

    @Test("two holders of the secret prove themselves to each other in four frames")
    func transcript() throws {
        var acceptor = Self.acceptor()
        var connector = Self.connector()
        #expect(acceptor.received(connector.hello) == .send(.challenge(nonce: Self.nonce(1))))
        #expect(!acceptor.isAuthenticated && acceptor.peer == nil)
        guard case .send(let proof) = connector.received(.challenge(nonce: Self.nonce(1))),
            case .proof(let theirNonce, _) = proof
        else {
            Issue.record("the connector did not answer the challenge with a proof")
            return
        }
        #expect(theirNonce == Self.nonce(2))
        guard case .authenticated(let reply?) = acceptor.received(proof) else {
            Issue.record("the acceptor refused a valid proof")
            return
        }
        #expect(acceptor.isAuthenticated)
        #expect(acceptor.peer?.node == NodeID(rawValue: 7))
        #expect(acceptor.peer?.listenAddress == "127.0.0.1:8700")
        #expect(!connector.isAuthenticated)
        #expect(connector.received(reply) == .authenticated(reply: nil))
        #expect(connector.isAuthenticated)
    }

    @Test("a proof made with another secret is refused, and the peer is not recorded")
    func wrongSecret() throws {
        var acceptor = Self.acceptor()
        var stranger = Self.connector(secret: try ClusterSecret("a guess at the cluster secret"))
        let proof = try #require(Self.proof(&stranger, against: &acceptor))
        guard case .refuse = acceptor.received(proof) else {
            Issue.record("a wrong secret's proof was accepted")
            return
        }
        #expect(!acceptor.isAuthenticated && acceptor.peer == nil)
        // Refused for good: even the right proof now is.
        var member = Self.connector()
        var fresh = Self.acceptor()
        let good = try #require(Self.proof(&member, against: &fresh))
        guard case .refuse = acceptor.received(good) else {
            Issue.record("a refused handshake went on")
            return
        }
    }

    @Test("an acceptor without the secret cannot prove itself, so the connector sends nothing")
    func impostorAcceptor() throws {
        var impostor = Self.acceptor(secret: try ClusterSecret("an impostor's own secret!"))
        var connector = Self.connector()
        let proof = try #require(Self.proof(&connector, against: &impostor))
        // The impostor refuses the member's proof; answering anyway, it can only send a
        // MAC of its own making, or replay one from another connection.
        guard case .refuse = impostor.received(proof) else {
            Issue.record("the impostor took a proof made with another secret")
            return
        }
        guard case .refuse = connector.received(.accepted(mac: Self.nonce(9))) else {
            Issue.record("a made-up acceptance was believed")
            return
        }
        #expect(!connector.isAuthenticated)
    }

    @Test("a recorded proof is worthless against a new challenge")
    func replay() throws {
        var first = Self.acceptor(nonce: 1)
        var member = Self.connector()
        let recorded = try #require(Self.proof(&member, against: &first))
        guard case .authenticated = first.received(recorded) else {
            Issue.record("the original proof was refused")
            return
        }
        var second = Self.acceptor(nonce: 3)
        #expect(second.received(Self.hello) == .send(.challenge(nonce: Self.nonce(3))))
        guard case .refuse = second.received(recorded) else {
            Issue.record("a replayed proof was accepted")
            return
        }
        #expect(second.peer == nil)
    }

    @Test("an acceptor's MAC reflected back as a proof is refused")
    func reflection() throws {
        var acceptor = Self.acceptor(nonce: 1)
        var member = Self.connector(nonce: 2)
        let proof = try #require(Self.proof(&member, against: &acceptor))
        guard case .authenticated(.accepted(let acceptorMAC)?) = acceptor.received(proof) else {
            Issue.record("no acceptance")
            return
        }
        // Same nonces on a second connection (the worst case for the defender): the
        // acceptor's own MAC must not pass as the connector's.
        var again = Self.acceptor(nonce: 1)
        _ = again.received(Self.hello)
        guard case .refuse = again.received(.proof(nonce: Self.nonce(2), mac: acceptorMAC)) else {
            Issue.record("a reflected MAC was accepted")
            return
        }
    }

    @Test("the proof covers the hello: a stranger cannot put its own name or address on a member's proof")
    func helloIsBound() throws {
        var acceptor = Self.acceptor()
        var member = Self.connector()
        var elsewhere = Self.acceptor()
        let proof = try #require(Self.proof(&member, against: &elsewhere))
        let forged = WireFrame.hello(
            node: NodeID(rawValue: 7), cluster: "kv", listenAddress: "10.9.9.9:1",
            clockMilliseconds: 1_000_000)
        #expect(acceptor.received(forged) == .send(.challenge(nonce: Self.nonce(1))))
        guard case .refuse = acceptor.received(proof) else {
            Issue.record("a proof for another hello was accepted")
            return
        }
    }

    @Test("frames out of order, and other clusters, are refused")
    func outOfOrder() {
        let message = WireFrame.message(.quorum(.stored(id: 1, durable: true)))
        var acceptor = Self.acceptor()
        guard case .refuse = acceptor.received(message) else {
            Issue.record("a message before hello was taken")
            return
        }
        acceptor = Self.acceptor()
        _ = acceptor.received(Self.hello)
        guard case .refuse = acceptor.received(message) else {
            Issue.record("a message before the proof was taken")
            return
        }
        acceptor = Self.acceptor()
        guard case .refuse = acceptor.received(.proof(nonce: Self.nonce(2), mac: Self.nonce(3))) else {
            Issue.record("a proof before hello was taken")
            return
        }
        acceptor = Self.acceptor()
        guard
            case .refuse = acceptor.received(
                .hello(node: NodeID(rawValue: 1), cluster: "another", listenAddress: "", clockMilliseconds: 0)
            )
        else {
            Issue.record("another cluster's hello was answered")
            return
        }
        var connector = Self.connector()
        guard case .refuse = connector.received(message) else {
            Issue.record("the connector took a message before the challenge")
            return
        }
    }

    @Test("secrets: too short is refused, a file's line break is not part of it, and it never prints")
    func secrets() throws {
        #expect(throws: KVError.self) { try ClusterSecret("fifteen bytes!!") }
        #expect(throws: KVError.self) { try ClusterSecret(String(repeating: "x", count: 4097)) }
        #expect(try ClusterSecret("sixteen bytes!!!\n") == ClusterSecret("sixteen bytes!!!"))
        #expect(try ClusterSecret("sixteen bytes!!!") != ClusterSecret("sixteen bytes!!?"))
        let secret = try ClusterSecret("do not print this secret")
        #expect("\(secret)" == "ClusterSecret(redacted)")
        #expect(!String(reflecting: secret).contains("print this"))
        let generated = ClusterSecret.generate()
        #expect(generated.utf8.count >= ClusterSecret.minimumBytes)
        #expect(generated != ClusterSecret.generate())
    }
}
