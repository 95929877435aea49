// Benchmark servers for scripts/bench-http.sh, measured side by side in one run:
//
//   HTTPBaselineServer bare PORT [BODY_BYTES]      the leanest NIOHTTP1 handler, answering
//                                                  every request with the same fixed bytes
//   HTTPBaselineServer kv-layer PORT [BODY_BYTES]  kv's HTTP layer (connection handling,
//                                                  router, response writing) over a service
//                                                  that answers every row read with those bytes
//
// The second isolates the HTTP layer from storage, which is what its 0.8× bar is about.

import KVCore
import KVServer
import Logging
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

/// Answers every row read of every table with the same value, immediately: the HTTP
/// layer's cost without any storage.
struct FixedValueService: KeyValueService {
    let value: RowValue
    let schema = try! KeySchema([.string])

    func immediateTable(_ name: TableName) -> TableDescriptor? { TableDescriptor(name: name, schema: schema) }
    func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult? {
        ReadResult(siblings: [Sibling(value: value, timestampMilliseconds: 0)], context: "AQA", etag: "0")
    }

    func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor { descriptor }
    func table(_ name: TableName) async throws(KVError) -> TableDescriptor {
        TableDescriptor(name: name, schema: schema)
    }
    func tables(in namespace: String) async throws(KVError) -> [TableDescriptor] { [] }
    func namespaces() async throws(KVError) -> [String] { [] }
    func clearTable(_ name: TableName) async throws(KVError) {}
    func dropTable(_ name: TableName) async throws(KVError) {}
    func dropNamespace(_ namespace: String) async throws(KVError) {}
    func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult {
        try immediateGet(key)!
    }
    func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError) -> WriteResult {
        WriteResult(context: "AQA", etag: "0")
    }
    func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult {
        WriteResult(context: "AQA", etag: "0")
    }
    func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage {
        ScanPage(rows: [], continuation: nil)
    }
    func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] { [] }
    func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError) -> Int64 {
        delta
    }
    func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? { nil }
    func nodeInfo() async throws(KVError) -> NodeInfo {
        NodeInfo(
            nodeID: NodeID(rawValue: 0), incarnation: 1, engine: "fixed", partitionCount: 1, version: "bench")
    }
}

let arguments = CommandLine.arguments
guard arguments.count >= 3, ["bare", "kv-layer"].contains(arguments[1]), let port = Int(arguments[2]) else {
    print("usage: HTTPBaselineServer bare|kv-layer PORT [BODY_BYTES]")
    exit(2)
}
let bodySize = arguments.count >= 4 ? Int(arguments[3]) ?? 100 : 100
let bytes = [UInt8](repeating: UInt8(ascii: "x"), count: bodySize)
if arguments[1] == "kv-layer" {
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    let server = try HTTPServer(
        settings: HTTPServerSettings(port: port),
        service: FixedValueService(value: RowValue(bytes: bytes, contentType: "application/octet-stream")),
        group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    let address = try await server.start()
    print("kv HTTP layer listening on 127.0.0.1:\(address.port ?? port)")
    while true { try await Task.sleep(for: .seconds(3600)) }
}
let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(
                FixedResponseHandler(body: ByteBuffer(bytes: bytes)))
        }
    }
    .bind(host: "127.0.0.1", port: port)
    .get()
print("baseline listening on 127.0.0.1:\(channel.localAddress?.port ?? port)")
try await channel.closeFuture.get()
