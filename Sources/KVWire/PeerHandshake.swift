import Crypto
import KVCore

/// The secret every member of a cluster holds; peers prove they hold it before they may
/// say anything else (see ``PeerHandshake``).
///
/// Only a key derived from it is kept, and neither the secret nor the key is ever
/// printed: `description` is redacted.
public struct ClusterSecret: Sendable, Hashable, CustomStringConvertible {
    /// The shortest secret accepted, in bytes: shorter ones could be guessed.
    public static let minimumBytes = 16
    /// The longest secret accepted, in bytes.
    public static let maximumBytes = 4096

    /// The handshake key: HKDF-SHA256 of the secret, so the secret itself never keys a MAC.
    let keyBytes: [UInt8]

    /// Derives the handshake key from a secret's text (a file's trailing line break is
    /// not part of it); refuses one shorter than ``minimumBytes`` or longer than
    /// ``maximumBytes``.
    public init(_ text: String) throws(KVError) {
        var secret = Array(text.utf8)
        while let last = secret.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") {
            secret.removeLast()
        }
        guard secret.count >= Self.minimumBytes else {
            throw KVError(
                .invalidRequest,
                "the cluster secret has \(secret.count) bytes; it needs at least \(Self.minimumBytes)")
        }
        guard secret.count <= Self.maximumBytes else {
            throw KVError(.invalidRequest, "the cluster secret is longer than \(Self.maximumBytes) bytes")
        }
        let key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: secret), salt: Array("kv cluster secret".utf8),
            info: Array("peer handshake v1".utf8), outputByteCount: 32)
        keyBytes = key.withUnsafeBytes { Array($0) }
    }

    /// A new random secret: 32 bytes from the system's generator, base64url-encoded.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return Base64URL.encode((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    public var description: String { "ClusterSecret(redacted)" }

    /// The MAC of `parts`, each length-prefixed so no two inputs run together.
    func mac(_ parts: [[UInt8]]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Self.joined(parts), using: SymmetricKey(data: keyBytes)))
    }

    /// Whether `mac` is the MAC of `parts`, compared in constant time.
    func verifies(_ mac: [UInt8], of parts: [[UInt8]]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(
            mac, authenticating: Self.joined(parts), using: SymmetricKey(data: keyBytes))
    }

    private static func joined(_ parts: [[UInt8]]) -> [UInt8] {
        var writer = BinaryWriter(capacity: 256)
        for part in parts { writer.writeLengthPrefixed(part) }
        return writer.bytes
    }
}

/// The mutual challenge-response that opens every node-to-node connection.
///
/// ```
/// connecting node                        accepting node
///   hello(node, cluster, listen)   ──▶
///                                  ◀──   challenge(Na)
///   proof(Nc, MAC(connector ‖ Na ‖ Nc ‖ hello))   ──▶
///                                  ◀──   accepted(MAC(acceptor ‖ Na ‖ Nc ‖ hello))
///   messages…                      ──▶
/// ```
///
/// Each side draws a fresh nonce per connection, so a recorded proof is worthless on
/// another connection, and the two roles MAC different labels, so neither proof can be
/// reflected back as the other. The accepting node delivers nothing, and records no
/// address, before the proof checks out; the connecting node sends nothing but its
/// hello and proof before the accepting node's proof checks out, so a stranger that
/// took over a member's address learns no row either. The handshake authenticates the
/// connection's start, not every byte: against someone who can rewrite traffic on the
/// network, TLS between nodes is what protects the rest.
///
/// Pure: nonces come in from the caller, and each step returns what to do.
public enum PeerHandshake {
    /// Bytes of a nonce and of a MAC.
    public static let tokenBytes = 32
    /// The largest frame a peer may send before it has proven itself: a hello with the
    /// longest cluster name and address fits many times over.
    public static let maximumUnauthenticatedFrameBytes = 4 << 10

    /// What the connection should do after a handshake step.
    public enum Step: Equatable, Sendable {
        /// Send this frame and wait for the next.
        case send(WireFrame)
        /// The peer proved itself: send `reply` if there is one, then carry messages.
        case authenticated(reply: WireFrame?)
        /// Close the connection; the reason is for the log.
        case refuse(String)
    }

    /// The accepting side of one connection.
    public struct Acceptor: Sendable {
        private enum State: Sendable {
            case awaitingHello
            case awaitingProof(hello: [UInt8], node: NodeID, listenAddress: String)
            case authenticated
            case refused
        }
        private let secret: ClusterSecret
        private let cluster: String
        private let nonce: [UInt8]
        private let maximumClockSkewMilliseconds: Int64?
        private var state = State.awaitingHello

        /// The peer that proved itself, and the address it announced; `nil` until then.
        public private(set) var peer: (node: NodeID, listenAddress: String)?

        /// Starts a handshake that challenges with `nonce` (``tokenBytes`` fresh random
        /// bytes). With `maximumClockSkewMilliseconds`, a peer whose hello carries a wall
        /// clock further than that from this node's is refused: expiry and last-writer-wins
        /// timestamps compare clocks of different nodes, so members keep them close.
        public init(
            secret: ClusterSecret, cluster: String, nonce: [UInt8], maximumClockSkewMilliseconds: Int64? = nil
        ) {
            precondition(
                nonce.count == PeerHandshake.tokenBytes, "a nonce has \(PeerHandshake.tokenBytes) bytes")
            self.secret = secret
            self.cluster = cluster
            self.nonce = nonce
            self.maximumClockSkewMilliseconds = maximumClockSkewMilliseconds
        }

        /// Whether the peer has proven itself.
        public var isAuthenticated: Bool {
            if case .authenticated = state { return true }
            return false
        }

        /// Takes the next frame the connecting node sent during the handshake;
        /// `nowMilliseconds` is this node's wall clock.
        public mutating func received(_ frame: WireFrame, nowMilliseconds: Int64 = 0) -> Step {
            switch (state, frame) {
            case (.awaitingHello, .hello(let node, let cluster, let listenAddress, let clock)):
                guard cluster == self.cluster else {
                    state = .refused
                    return .refuse("node \(node) belongs to cluster '\(cluster)', not '\(self.cluster)'")
                }
                // The hello was sent before it arrived, so a peer's clock may look behind by
                // the transit time; a refused peer retries, and passes once clocks agree.
                if let limit = maximumClockSkewMilliseconds {
                    let skew = nowMilliseconds &- clock
                    guard skew.magnitude <= UInt64(limit) else {
                        state = .refused
                        return .refuse(
                            "node \(node)'s clock is \(skew > 0 ? "behind" : "ahead of") this node's by \(skew.magnitude) ms, more than the \(limit) ms members may differ (synchronize the clocks, e.g. with NTP)"
                        )
                    }
                }
                state = .awaitingProof(
                    hello: WireCodec.encode(frame), node: node, listenAddress: listenAddress)
                return .send(.challenge(nonce: nonce))
            case (.awaitingProof(let hello, let node, let listenAddress), .proof(let theirs, let mac)):
                guard secret.verifies(mac, of: [Label.connector, nonce, theirs, hello]) else {
                    state = .refused
                    return .refuse("node \(node) does not prove it holds the cluster secret")
                }
                state = .authenticated
                peer = (node, listenAddress)
                return .authenticated(
                    reply: .accepted(mac: secret.mac([Label.acceptor, nonce, theirs, hello])))
            case (.authenticated, _):
                return .refuse("the handshake is over")
            default:
                state = .refused
                return .refuse("a \(frame.kindName) frame where the handshake expects another")
            }
        }
    }

    /// The connecting side of one connection.
    public struct Connector: Sendable {
        private enum State: Sendable {
            case awaitingChallenge
            case awaitingAcceptance(theirs: [UInt8], hello: [UInt8])
            case authenticated
            case refused
        }
        private let secret: ClusterSecret
        private let helloFrame: WireFrame
        private let nonce: [UInt8]
        private var state = State.awaitingChallenge

        /// Starts a handshake that opens with `hello` and proves itself with `nonce`
        /// (``tokenBytes`` fresh random bytes).
        public init(secret: ClusterSecret, hello: WireFrame, nonce: [UInt8]) {
            precondition(
                nonce.count == PeerHandshake.tokenBytes, "a nonce has \(PeerHandshake.tokenBytes) bytes")
            self.secret = secret
            self.helloFrame = hello
            self.nonce = nonce
        }

        /// The frame that opens the connection.
        public var hello: WireFrame { helloFrame }

        /// Whether the accepting node has proven itself.
        public var isAuthenticated: Bool {
            if case .authenticated = state { return true }
            return false
        }

        /// Takes the next frame the accepting node sent.
        public mutating func received(_ frame: WireFrame) -> Step {
            switch (state, frame) {
            case (.awaitingChallenge, .challenge(let theirs)):
                let hello = WireCodec.encode(helloFrame)
                state = .awaitingAcceptance(theirs: theirs, hello: hello)
                return .send(.proof(nonce: nonce, mac: secret.mac([Label.connector, theirs, nonce, hello])))
            case (.awaitingAcceptance(let theirs, let hello), .accepted(let mac)):
                guard secret.verifies(mac, of: [Label.acceptor, theirs, nonce, hello]) else {
                    state = .refused
                    return .refuse("the peer does not prove it holds the cluster secret")
                }
                state = .authenticated
                return .authenticated(reply: nil)
            case (.authenticated, _):
                return .refuse("a peer sent a \(frame.kindName) frame on this node's own connection")
            default:
                state = .refused
                return .refuse("a \(frame.kindName) frame where the handshake expects another")
            }
        }
    }

    /// The role labels that keep a connector's MAC from passing as an acceptor's.
    enum Label {
        static let connector = Array("kv peer handshake: connector".utf8)
        static let acceptor = Array("kv peer handshake: acceptor".utf8)
    }
}

extension WireFrame {
    /// The frame's kind, for logs.
    public var kindName: String {
        switch self {
        case .hello: "hello"
        case .challenge: "challenge"
        case .proof: "proof"
        case .accepted: "accepted"
        case .message: "message"
        }
    }
}
