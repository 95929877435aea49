import KVCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The node's Mykeyv listener (docs/mykeyv.md): each connection's frames run side by
/// side, at most ``maximumInFlight`` at once (the connection is not read further until
/// one finishes), and each answer goes out when it is ready, so answers come in any
/// order and carry the request's `request_id`. A frame that breaks the framing is
/// answered with an error and ends the connection.
public final class MykeyvServer: Sendable {
    /// The most requests of one connection running at once.
    public static let maximumInFlight = 64
    /// The most payload bytes of one connection's requests running at once: beyond it
    /// the connection is not read until some finish (one request may be larger alone).
    public static let maximumInFlightBytes = 32 << 20

    private let frontEnd: MykeyvFrontEnd
    private let host: String
    private let port: Int
    private let maximumConnections: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let tls: (@Sendable () -> NIOSSLContext)?
    private let openConnections = Atomic<Int>(0)
    private let serverChannel = Mutex<(any Channel)?>(nil)
    private let acceptLoop = Mutex<Task<Void, Never>?>(nil)

    /// Creates a listener on `host:port` (0 picks a free port).
    public init(
        frontEnd: MykeyvFrontEnd, host: String, port: Int, maximumConnections: Int = 10_000,
        group: any EventLoopGroup, logger: Logger, tls: (@Sendable () -> NIOSSLContext)? = nil
    ) {
        self.tls = tls
        self.frontEnd = frontEnd
        self.host = host
        self.port = port
        self.maximumConnections = maximumConnections
        self.group = group
        self.logger = logger
    }

    /// Binds and starts accepting; returns the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        let limit = frontEnd.maximumPayloadBytes
        let tls = self.tls
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls())) }
                    try sync.addHandler(ByteToMessageHandler(MykeyvFrameDecoder(maximumPayloadBytes: limit)))
                    return try NIOAsyncChannel<[UInt8], ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8)))
                }
            }
        guard let address = server.channel.localAddress else {
            throw KVError(.internalError, "the Mykeyv listener has no address")
        }
        serverChannel.withLock { $0 = server.channel }
        let task = Task { await self.accept(server) }
        acceptLoop.withLock { $0 = task }
        logger.info("Mykeyv server listening", metadata: ["address": "\(address)"])
        return address
    }

    /// Stops accepting and closes every connection.
    public func stop() async {
        let channel = serverChannel.withLock { $0 }
        try? await channel?.close()
        let task = acceptLoop.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    /// One frame: the version byte, the length, the payload.
    static func frame(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: payload.count + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(payload.count), endianness: .little)
        buffer.writeBytes(payload)
        return buffer
    }

    private func accept(_ server: NIOAsyncChannel<NIOAsyncChannel<[UInt8], ByteBuffer>, Never>) async {
        await withDiscardingTaskGroup { connections in
            do {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        connections.addTask { await self.serve(connection) }
                    }
                }
            } catch {
                logger.debug("the Mykeyv listener stopped", metadata: ["error": "\(error)"])
            }
            connections.cancelAll()
        }
    }

    private func serve(_ connection: NIOAsyncChannel<[UInt8], ByteBuffer>) async {
        let open = openConnections.add(1, ordering: .relaxed).newValue
        defer { openConnections.subtract(1, ordering: .relaxed) }
        let allocator = connection.channel.allocator
        let session = frontEnd.openSession()
        let frontEnd = frontEnd
        do {
            try await connection.executeThenClose { inbound, outbound in
                if open > maximumConnections {
                    try await outbound.write(
                        Self.frame(
                            MykeyvFrontEnd.encode(
                                .init(
                                    command: "error", error: "too many connections",
                                    code: "server.too_many_connections")),
                            allocator: allocator))
                    return
                }
                try await withThrowingTaskGroup(of: Int.self) { requests in
                    var running = 0
                    var runningBytes = 0
                    do {
                        for try await payload in inbound {
                            if !session.isAuthenticated {
                                // Until the connection proved a token, frames run one at a
                                // time, so the requests after an `auth` run with its grants.
                                let answer = await frontEnd.answer(payload, session: session)
                                try await outbound.write(Self.frame(answer, allocator: allocator))
                                continue
                            }
                            while running == Self.maximumInFlight
                                || (running > 0 && runningBytes + payload.count > Self.maximumInFlightBytes)
                            {
                                runningBytes -= try await requests.next() ?? 0
                                running -= 1
                            }
                            requests.addTask {
                                let answer = await frontEnd.answer(payload, session: session)
                                try await outbound.write(Self.frame(answer, allocator: allocator))
                                return payload.count
                            }
                            running += 1
                            runningBytes += payload.count
                        }
                    } catch let error as MykeyvFrameError {
                        // The framing is lost: say why, after the answers already owed.
                        try await requests.waitForAll()
                        try await outbound.write(
                            Self.frame(
                                MykeyvFrontEnd.encode(
                                    .init(command: "error", error: error.description, code: "request.invalid")
                                ),
                                allocator: allocator))
                        return
                    }
                    try await requests.waitForAll()
                }
            }
        } catch {
            logger.debug("a Mykeyv connection ended", metadata: ["error": "\(error)"])
        }
    }
}
