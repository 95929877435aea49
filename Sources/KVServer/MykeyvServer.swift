import KVCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL

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

    private let listener: StreamListener<[UInt8], ByteBuffer>

    /// Creates a listener on `host:port` (0 picks a free port).
    public init(
        frontEnd: MykeyvFrontEnd, host: String, port: Int, maximumConnections: Int = 10_000,
        group: any EventLoopGroup, logger: Logger, tls: (@Sendable () -> NIOSSLContext)? = nil
    ) {
        let limit = frontEnd.maximumPayloadBytes
        listener = StreamListener(
            name: "Mykeyv", host: host, port: port, maximumConnections: maximumConnections, group: group,
            logger: logger, tls: tls,
            addDecoder: {
                try $0.addHandler(ByteToMessageHandler(MykeyvFrameDecoder(maximumPayloadBytes: limit)))
            },
            serve: { connection, overLimit in
                try await Self.serve(connection, overLimit: overLimit, frontEnd: frontEnd)
            })
    }

    /// Binds and starts accepting; returns the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        try await listener.start()
    }

    /// Stops accepting and closes every connection.
    public func stop() async {
        await listener.stop()
    }

    /// One frame: the version byte, the length, the payload.
    static func frame(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: payload.count + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(payload.count), endianness: .little)
        buffer.writeBytes(payload)
        return buffer
    }

    private static func serve(
        _ connection: NIOAsyncChannel<[UInt8], ByteBuffer>, overLimit: Bool, frontEnd: MykeyvFrontEnd
    ) async throws {
        let allocator = connection.channel.allocator
        let session = frontEnd.openSession()
        try await connection.executeThenClose { inbound, outbound in
            if overLimit {
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
    }
}
