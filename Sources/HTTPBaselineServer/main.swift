// The benchmark baseline: the leanest NIOHTTP1 server, answering every request with
// the same fixed bytes. The kv server's HTTP layer is measured against it in one run
// (scripts/bench-http.sh). Usage: HTTPBaselineServer PORT [BODY_BYTES]

import NIOCore
import NIOHTTP1
import NIOPosix

final class FixedResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let body: ByteBuffer
    private var keepAlive = true

    init(body: ByteBuffer) {
        self.body = body
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/octet-stream")
            headers.add(name: "content-length", value: String(body.readableBytes))
            headers.add(name: "connection", value: keepAlive ? "keep-alive" : "close")
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

let arguments = CommandLine.arguments
guard arguments.count >= 2, let port = Int(arguments[1]) else {
    print("usage: HTTPBaselineServer PORT [BODY_BYTES]")
    exit(2)
}
let bodySize = arguments.count >= 3 ? Int(arguments[2]) ?? 100 : 100
let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: bodySize)
let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(FixedResponseHandler(body: body))
        }
    }
    .bind(host: "127.0.0.1", port: port)
    .get()
print("baseline listening on 127.0.0.1:\(channel.localAddress?.port ?? port)")
try await channel.closeFuture.get()
