import Foundation
import Glibc
import KVCore
import KVTestSupport
import KVWire
import NIOConcurrencyHelpers

/// A TCP proxy in front of one node's peer port that can cut the links from chosen
/// nodes: the nemesis's network fault.
///
/// Every peer connection starts with a hello naming the node that opened it, so the
/// proxy reads that first frame, learns the origin and either refuses the connection
/// (the link is cut) or pipes bytes both ways. Cutting a link shuts its open connections
/// down too. Nodes are told to reach each other through the proxies
/// (`--advertise-peer-port`), so every byte between two nodes passes one of them.
///
/// Plain blocking sockets and a thread per direction: a test's handful of connections
/// needs nothing more, and the proxy then adds no scheduling of its own to the delays
/// it is meant to control.
final class FaultProxy: @unchecked Sendable {
    /// Where the proxy listens.
    let port: Int
    private let targetPort: Int
    private let listener: Int32
    private let state = NIOLockedValueBox(State())

    private struct State {
        var blocked: Set<NodeID> = []
        /// Open connections and the node that opened each.
        var connections: [(origin: NodeID, connection: ProxiedConnection)] = []
        var closed = false
    }

    /// Both sockets of one proxied connection. Shutting down and closing happen under
    /// one lock, so a shutdown never reaches a descriptor number the system has already
    /// given to a newer connection.
    final class ProxiedConnection: @unchecked Sendable {
        let client: Int32
        let server: Int32
        private let lock = NIOLock()
        private var closed = false

        init(client: Int32, server: Int32) {
            self.client = client
            self.server = server
        }

        func shutdownBoth() {
            lock.withLock {
                guard !closed else { return }
                shutdown(client, Int32(SHUT_RDWR))
                shutdown(server, Int32(SHUT_RDWR))
            }
        }

        func close() {
            lock.withLock {
                guard !closed else { return }
                closed = true
                Glibc.close(client)
                Glibc.close(server)
            }
        }
    }

    /// Names the node that runs process `pid`, for connections whose hello the proxy
    /// cannot read (TLS).
    typealias ProcessOwner = @Sendable (pid_t) -> NodeID?
    private let owner: ProcessOwner?

    /// Listens on a free port of 127.0.0.1 and forwards to `targetPort`. Without
    /// `owner` a connection's origin is the node its hello names; with it (when peers
    /// speak TLS and the hello is encrypted) the node whose process opened the
    /// connection, found through the kernel's socket tables.
    init(targetPort: Int, owner: ProcessOwner? = nil) throws {
        self.owner = owner
        self.targetPort = targetPort
        let listening = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listening, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listening, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(listening, 64) == 0 else { throw CrashTestError("the proxy cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listening, $0, &length) }
        }
        listener = listening
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// Cuts the links from `origins`: their connections are shut down and new ones
    /// refused.
    func cut(from origins: Set<NodeID>) {
        let closing = state.withLockedValue { state in
            state.blocked.formUnion(origins)
            return state.connections.filter { origins.contains($0.origin) }
        }
        for entry in closing { entry.connection.shutdownBoth() }
    }

    /// Restores every link.
    func heal() {
        state.withLockedValue { $0.blocked = [] }
    }

    /// Stops listening and shuts every connection down.
    func close() {
        let open = state.withLockedValue { state in
            state.closed = true
            return state.connections
        }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        for entry in open { entry.connection.shutdownBoth() }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if state.withLockedValue({ $0.closed }) { return }
                continue
            }
            let thread = Thread { [self] in serve(client) }
            thread.start()
        }
    }

    private static func setNoDelay(_ socket: Int32) {
        var yes: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Reads exactly `count` bytes, or `nil` at the end of the stream.
    private static func read(_ socket: Int32, count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { recv(socket, $0.baseAddress! + done, count - done, 0) }
            guard got > 0 else { return nil }
            done += got
        }
        return bytes
    }

    private static func write(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let sent = bytes.withUnsafeBytes {
                send(socket, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            }
            guard sent > 0 else { return false }
            done += sent
        }
        return true
    }

    /// Reads the hello (or asks the kernel who connected), then pipes the connection
    /// to the node unless its origin is cut off.
    private func serve(_ client: Int32) {
        Self.setNoDelay(client)
        let origin: NodeID
        var prefix: [UInt8] = []
        var body: [UInt8] = []
        if let owner {
            guard let pid = Self.connectingProcess(client), let node = owner(pid) else {
                Glibc.close(client)
                return
            }
            origin = node
        } else {
            guard let read = Self.read(client, count: 4) else {
                Glibc.close(client)
                return
            }
            prefix = read
            let length = prefix.reduce(0) { $0 << 8 | Int($1) }
            guard length < 1 << 16, let bytes = Self.read(client, count: length),
                case .hello(let node, _, _, _)? = try? WireCodec.decode(body: bytes)
            else {
                Glibc.close(client)
                return
            }
            body = bytes
            origin = node
        }
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: targetPort)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        Self.setNoDelay(server)
        let connection = ProxiedConnection(client: client, server: server)
        let admitted = state.withLockedValue { state in
            guard connected == 0, !state.blocked.contains(origin), !state.closed else { return false }
            state.connections.append((origin, connection))
            return true
        }
        guard admitted, Self.write(server, prefix + body) else {
            connection.close()
            return
        }
        let reverseDone = NIOLockedValueBox(false)
        let reverse = Thread {
            Self.pump(from: server, to: client, connection)
            reverseDone.withLockedValue { $0 = true }
        }
        reverse.start()
        Self.pump(from: client, to: server, connection)
        // Both directions end together (each pump shuts both sockets down); the sockets
        // are closed only once the other pump is done with them.
        while !reverseDone.withLockedValue({ $0 }) { usleep(1_000) }
        state.withLockedValue { state in state.connections.removeAll { $0.connection === connection } }
        connection.close()
    }

    /// The process on this machine that holds the other end of `socket` (a loopback
    /// connection): its local port is our peer's port; /proc/net/tcp maps it to a socket
    /// inode, and /proc/PID/fd to the process holding that inode.
    static func connectingProcess(_ socket: Int32) -> pid_t? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let got = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(socket, $0, &length) }
        }
        guard got == 0 else { return nil }
        let digits = String(UInt16(bigEndian: address.sin_port), radix: 16, uppercase: true)
        let port = String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        let table = procFile("/proc/net/tcp")
        var inode: String?
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // local_address is "0100007F:PORT"; the inode is the tenth field.
            if fields.count > 9, fields[1].hasSuffix(":" + port), fields[1].hasPrefix("0100007F") {
                inode = String(fields[9])
                break
            }
        }
        guard let inode, inode != "0" else { return nil }
        let target = "socket:[\(inode)]"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry) else { continue }
            let directory = "/proc/\(entry)/fd"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            where (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + fd)) == target
            {
                return pid
            }
        }
        return nil
    }

    /// A file of /proc, read to its end (they report a size of 0, so reading by size
    /// would find nothing).
    static func procFile(_ path: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
    }

    private static func pump(from source: Int32, to destination: Int32, _ connection: ProxiedConnection) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress!, $0.count, 0) }
            guard got > 0, write(destination, Array(buffer[0..<got])) else { break }
        }
        connection.shutdownBoth()
    }
}
