import Foundation
import Glibc
import KVCore
import KVWire

/// A plain TCP connection to a node's peer port, speaking the wire protocol frame by
/// frame: for playing a member, a stranger or an old node in tests.
public final class PeerSocket: @unchecked Sendable {
    /// The socket.
    public let descriptor: Int32
    private var received: [UInt8] = []

    /// What ``readFrame(timeout:)`` found.
    public enum Read: Equatable, Sendable {
        case frame(WireFrame)
        /// The other side closed the connection (or reset it).
        case closed
        /// Nothing complete arrived in time.
        case timedOut
        /// Bytes arrived that are not a frame.
        case malformed
    }

    /// Connects to `port` on 127.0.0.1.
    public init(port: Int) throws {
        descriptor = try Self.connectToLoopback(port: port)
    }

    /// A blocking TCP socket connected to `port` on 127.0.0.1, with a receive buffer of
    /// `receiveBuffer` bytes when given.
    public static func connectToLoopback(port: Int, receiveBuffer: Int32? = nil) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let failure = errno
            close(descriptor)
            throw PeerSocketError("cannot connect to port \(port): errno \(failure)")
        }
        return descriptor
    }

    /// Adopts an accepted socket.
    public init(accepted descriptor: Int32) {
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// Ends the connection in both directions (the socket stays allocated until released).
    public func hangUp() {
        Glibc.shutdown(descriptor, Int32(SHUT_RDWR))
    }

    /// Sends bytes; `false` once the other side has closed.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let sent = bytes.withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            }
            guard sent > 0 else { return false }
            done += sent
        }
        return true
    }

    /// Sends one frame.
    @discardableResult
    public func send(_ frame: WireFrame) -> Bool { send(WireCodec.encode(frame)) }

    /// Waits up to `timeout` seconds for the next frame.
    public func readFrame(timeout: Double) -> Read {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if received.count >= 4 {
                let length = received.prefix(4).reduce(0) { $0 << 8 | Int($1) }
                if received.count >= 4 + length {
                    let body = Array(received[4..<(4 + length)])
                    received.removeFirst(4 + length)
                    guard let frame = try? WireCodec.decode(body: body) else { return .malformed }
                    return .frame(frame)
                }
            }
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { return .timedOut }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(min(remaining, 1) * 1000) + 1) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return .closed }
            received += buffer[0..<count]
        }
    }

    /// Reads frames until the other side closes or `timeout` seconds pass; returns the
    /// frames and whether it closed.
    public func readUntilClosed(timeout: Double) -> (frames: [WireFrame], closed: Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        var frames: [WireFrame] = []
        while deadline.timeIntervalSinceNow > 0 {
            switch readFrame(timeout: deadline.timeIntervalSinceNow) {
            case .frame(let frame): frames.append(frame)
            case .closed, .malformed: return (frames, true)
            case .timedOut: return (frames, false)
            }
        }
        return (frames, false)
    }

    /// Runs the connecting side of the handshake as node `node`; returns whether the
    /// other side accepted it and proved itself.
    public func handshake(
        node: NodeID, cluster: String = "kv", secret: String, listenAddress: String = "", timeout: Double = 5
    ) throws -> Bool {
        var handshake = PeerHandshake.Connector(
            secret: try ClusterSecret(secret),
            hello: .hello(
                node: node, cluster: cluster, listenAddress: listenAddress,
                clockMilliseconds: Self.wallClockMilliseconds()), nonce: Self.nonce())
        send(handshake.hello)
        while true {
            guard case .frame(let frame) = readFrame(timeout: timeout) else { return false }
            switch handshake.received(frame) {
            case .send(let reply): send(reply)
            case .authenticated: return true
            case .refuse: return false
            }
        }
    }
}

extension PeerSocket {
    /// Fresh random handshake bytes.
    /// This machine's wall clock in milliseconds, as a node's hello carries it.
    public static func wallClockMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    public static func nonce() -> [UInt8] {
        (0..<PeerHandshake.tokenBytes).map { _ in UInt8.random(in: 0...255) }
    }

    /// Runs the accepting side of the handshake on a connection a node opened; returns
    /// the node if it proved itself.
    public func acceptHandshake(cluster: String = "kv", secret: String, timeout: Double = 5) throws -> NodeID?
    {
        var handshake = PeerHandshake.Acceptor(
            secret: try ClusterSecret(secret), cluster: cluster, nonce: Self.nonce())
        while true {
            guard case .frame(let frame) = readFrame(timeout: timeout) else { return nil }
            switch handshake.received(frame) {
            case .send(let reply): send(reply)
            case .authenticated(let reply):
                if let reply { send(reply) }
                return handshake.peer?.node
            case .refuse: return nil
            }
        }
    }

    /// Opens the handshake as `node` with a secret that is not the cluster's, and sends
    /// `frames` right behind the proof without waiting for an answer: the most a
    /// stranger can try. Returns the frames that came back before the connection closed,
    /// and whether it closed within `timeout`.
    public func attempt(
        _ frames: [WireFrame], as node: NodeID, cluster: String = "kv", guessing secret: String,
        listenAddress: String = "", timeout: Double = 10
    ) throws -> (frames: [WireFrame], closed: Bool) {
        var handshake = PeerHandshake.Connector(
            secret: try ClusterSecret(secret),
            hello: .hello(
                node: node, cluster: cluster, listenAddress: listenAddress,
                clockMilliseconds: Self.wallClockMilliseconds()), nonce: Self.nonce())
        send(handshake.hello)
        guard case .frame(let challenge) = readFrame(timeout: timeout) else { return ([], true) }
        guard case .send(let proof) = handshake.received(challenge) else { return ([challenge], false) }
        send(proof)
        for frame in frames { send(frame) }
        let (rest, closed) = readUntilClosed(timeout: timeout)
        return ([challenge] + rest, closed)
    }
}

/// A failure of a ``PeerSocket``.
public struct PeerSocketError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A listening socket on 127.0.0.1 that hands out the connections made to it as
/// ``PeerSocket``s: for playing a peer that a node connects to.
public final class PeerListener: @unchecked Sendable {
    /// The listening socket.
    public let descriptor: Int32
    /// Its port.
    public let port: Int

    /// Listens on a free port.
    public init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(descriptor, $0, &length) }
        }
        guard bound == 0, listen(descriptor, 16) == 0 else {
            close(descriptor)
            throw PeerSocketError("cannot listen: errno \(errno)")
        }
        self.descriptor = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }

    /// The next connection made to it within `timeout` seconds.
    public func accept(timeout: Double) -> PeerSocket? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) > 0 else { return nil }
        let accepted = Glibc.accept(descriptor, nil, nil)
        return accepted >= 0 ? PeerSocket(accepted: accepted) : nil
    }
}
