import KVCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// One HTTP connection: collects a request (within the header, body and time limits),
/// hands it to the router, writes the response, and enforces timeouts.
///
/// States: `idle` (waiting for a request, idle timer), `receiving` (a request has
/// started, request timer), `processing` (the router is working; no timer), `closing`.
/// All state lives on the connection's event loop. A read the router answers from
/// memory is written at once, a row's PUT it starts is written when its outcome comes
/// back; any other request runs in a task, which writes through the channel and then
/// reports back to the loop. Requests pipelined behind the one
/// being answered wait in order, with reading stopped, until its answer is written.
final class HTTPConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = ResponseOutput

    private enum State {
        case idle
        case receiving
        case processing
        case closing
    }

    private let router: Router
    private let settings: HTTPServerSettings
    private let logger: Logger
    private var state: State = .idle
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// The number of the last request dispatched: a finishing response only changes the
    /// state if no newer request has started.
    private var requestNumber: UInt64 = 0
    /// A dispatched request asked to close the connection: requests after it are ignored
    /// (its own streamed body is still read).
    private var closeRequested = false
    /// Since when the socket has been unwritable (the client is not reading what was
    /// sent). Past the request timeout the connection is closed, releasing its buffers.
    private var unwritableSince: NIODeadline?
    /// The byte-level handler in front of the HTTP decoder (see ``ByteActivityHandler``).
    weak var byteLevel: ByteActivityHandler?
    private var closeAfterResponse = false
    /// When the current phase (idle or receiving) expires; `nil` while processing.
    private var deadline: NIODeadline?
    /// Where requests begin and end in the bytes received: bytes of a request pipelined
    /// behind the one being answered must be complete within the request timeout, not
    /// the idle timeout, even when they came in the same packet.
    private var boundaries = RequestBoundaries()
    /// Bytes that are not HTTP followed requests still being answered: those are
    /// answered first, then this error, then the connection closes.
    private var pendingParseError: KVError?
    /// Whether this connection is waiting between requests, for the server to close the
    /// longest-idle connection when it is full (see ``ConnectionActivity``).
    let activity = ConnectionActivity()
    /// The body of the request being answered while it still arrives (a streamed
    /// upload), or `nil`. Its deadline is the request timeout since the last byte.
    private var streamingBody: RequestBodyStream?
    /// Whether the last streamed body arrived whole: if not, the connection cannot be
    /// reused once the answer is written (the rest of the body is in the way).
    private var streamedBodyComplete = true
    /// Reading is held back while a streamed body's buffer is full.
    private var readsPaused = false
    private var readPending = false
    /// Checks `deadline` periodically. One repeating task per connection, rather than a
    /// timer scheduled and cancelled on every request, keeps timeouts off the hot path.
    private var deadlineChecker: RepeatedTask?
    /// The metrics of the last request answered on the event loop: the next is mostly
    /// the same operation with the same status.
    private var lastSeries: HTTPMetrics.RequestSeries?
    /// Parts of requests pipelined behind the one being answered, oldest first. Nothing
    /// more is read from the socket while any wait, so they are at most what the read
    /// under way took (NIO reads up to `maxMessagesPerRead` buffers per wakeup).
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var handlingQueued = false

    init(router: Router, settings: HTTPServerSettings, logger: Logger) {
        self.router = router
        self.settings = settings
        self.logger = logger
    }

    // MARK: Timers

    private func arm(_ seconds: Int) {
        deadline = .now() + .seconds(Int64(seconds))
    }

    private func disarm() {
        deadline = nil
    }

    private func checkDeadline(context: ChannelHandlerContext) {
        if let since = unwritableSince,
            NIODeadline.now() - since >= .seconds(Int64(settings.requestTimeoutSeconds))
        {
            logger.debug(
                "client stopped reading its answer",
                metadata: ["remote": "\(context.remoteAddress?.description ?? "?")"])
            state = .closing
            context.close(promise: nil)
            return
        }
        guard let deadline, NIODeadline.now() >= deadline else { return }
        self.deadline = nil
        switch state {
        case .idle:
            state = .closing
            activity.setBusy()
            context.close(promise: nil)
        case .receiving:
            logger.debug(
                "request timed out", metadata: ["remote": "\(context.remoteAddress?.description ?? "?")"])
            respondAndClose(
                KVError(
                    .requestTimeout,
                    "the request was not received within \(settings.requestTimeoutSeconds) seconds"),
                context: context)
        case .processing where streamingBody != nil && readsPaused:
            // The service is behind, not the client: the clock starts again once the
            // connection reads again.
            arm(settings.requestTimeoutSeconds)
        case .processing where streamingBody != nil:
            logger.debug(
                "upload stalled", metadata: ["remote": "\(context.remoteAddress?.description ?? "?")"])
            streamingBody?.fail(
                KVError(
                    .requestTimeout,
                    "the body stopped arriving for \(settings.requestTimeoutSeconds) seconds"))
            streamingBody = nil
        case .processing, .closing:
            break
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        // A connection that never sends a byte is closed after the shorter timeout: a
        // crowd of silent connections cannot hold every slot for the idle timeout.
        arm(min(settings.requestTimeoutSeconds, settings.idleTimeoutSeconds))
        activity.setIdle()
        // Checked at half the shorter timeout, so an expiry is noticed within 1.5× of it.
        let period = TimeAmount.milliseconds(
            Int64(max(500, min(settings.requestTimeoutSeconds, settings.idleTimeoutSeconds) * 500)))
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadlineChecker = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            loopBoundSelf.value.checkDeadline(context: loopBoundContext.value)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        streamingBody?.fail(KVError(.incompleteBody, "the connection closed before the body ended"))
        streamingBody = nil
        disarm()
        activity.setBusy()
        deadlineChecker?.cancel()
        deadlineChecker = nil
        state = .closing
        queued.removeAll()
        context.fireChannelInactive()
    }

    func bytesArrived(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        bytes.withUnsafeReadableBytes { boundaries.consume($0) }
        if state == .idle {
            state = .receiving
            activity.setBusy()
            arm(settings.requestTimeoutSeconds)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        unwritableSince = context.channel.isWritable ? nil : (unwritableSince ?? .now())
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is CloseIfIdle {
            // The server is full and this connection has waited longest: it goes, unless
            // a request started meanwhile.
            if state == .idle {
                state = .closing
                activity.setBusy()
                context.close(promise: nil)
            }
            return
        }
        if event is CloseWhenIdle {
            closeAfterResponse = true
            if state == .idle {
                state = .closing
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Once the connection is closing (an error answer, or a request that asked for
        // it), nothing more is read: a pipelined request behind it must not run unanswered.
        // The body of a streamed upload that asked for it is still read: only what
        // follows the request is not.
        guard state != .closing && (!closeRequested || streamingBody != nil) else { return }
        let part = unwrapInboundIn(data)
        // A request pipelined behind one being answered waits its turn (and so does
        // everything after it), so that answers leave in order.
        if !queued.isEmpty || (state == .processing && streamingBody == nil) {
            queued.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Parts written through the channel (by the task that answers a request, or a
    /// streamed body) go to the encoder as parts.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(wrapOutboundOut(.part(unwrapOutboundIn(data))), promise: promise)
    }

    /// Hands the waiting pipelined requests over, one after the other, while each is
    /// answered at once; stops at one that is answered by a task (its answer resumes
    /// this), then answers a parse error that followed them, then reads again.
    private func handleQueued(context: ChannelHandlerContext) {
        // An answer given during the loop (on the event loop) calls back here.
        guard !handlingQueued else { return }
        handlingQueued = true
        defer { handlingQueued = false }
        while let part = queued.first, state != .closing, state != .processing || streamingBody != nil {
            queued.removeFirst()
            guard !closeRequested || streamingBody != nil else { continue }
            handle(part, context: context)
        }
        guard queued.isEmpty, state != .closing else { return }
        if state == .processing {
            // Only a streamed upload taken from the queue reads on: its body is still in
            // the socket.
            guard let streamingBody else { return }
            if let error = pendingParseError {
                // The bytes after its head are not HTTP: its body is broken, as when the
                // decoder says so while the upload was not queued.
                pendingParseError = nil
                streamingBody.fail(
                    KVError(.incompleteBody, "the request body is not valid HTTP/1.1 (\(error.message))"))
                self.streamingBody = nil
                return
            }
        } else if let error = pendingParseError {
            respondAndClose(error, context: context)
            return
        }
        if readPending && !readsPaused {
            readPending = false
            context.read()
        }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let requestHead):
            if state == .idle {
                state = .receiving
                activity.setBusy()
                arm(settings.requestTimeoutSeconds)
            }
            head = requestHead
            if requestHead.method == .CONNECT {
                // NIO frames an answer to CONNECT as the start of a tunnel (no length, no
                // body), so the refusal is written below the HTTP handlers.
                head = nil
                respondAndClose(
                    KVError(.methodNotAllowed, "CONNECT is not allowed: this is not a proxy"),
                    context: context)
                return
            }
            body = []
            let headBytes =
                requestHead.uri.utf8.count
                + requestHead.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if headBytes > settings.maximumHeaderBytes {
                respondAndClose(
                    KVError(
                        .headersTooLarge,
                        "the request head has \(headBytes) bytes; the limit is \(settings.maximumHeaderBytes)"
                    ),
                    context: context)
                return
            }
            if router.streamsBody(requestHead) {
                if let declared = requestHead.headers.first(name: "content-length"), Int64(declared) == nil {
                    respondAndClose(
                        KVError(
                            .bodyTooLarge, "the body has \(declared.prefix(30)) bytes, more than any limit"),
                        context: context)
                    return
                }
                startStreaming(requestHead, context: context)
                return
            }
            if let declared = requestHead.headers.first(name: "content-length"),
                Self.exceeds(declared, settings.maximumBodyBytes)
            {
                respondAndClose(
                    KVError(
                        .bodyTooLarge,
                        "the body has \(declared) bytes; the limit is \(settings.maximumBodyBytes)"),
                    context: context)
                return
            }
            if requestHead.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(
                    wrapOutboundOut(
                        .part(.head(HTTPResponseHead(version: requestHead.version, status: .continue)))),
                    promise: nil)
            }
        case .body(var chunk) where streamingBody != nil:
            arm(settings.requestTimeoutSeconds)
            if streamingBody?.append(chunk.readBytes(length: chunk.readableBytes) ?? []) == true {
                readsPaused = true
            }
        case .end where streamingBody != nil:
            disarm()
            streamingBody?.finish()
            streamingBody = nil
            streamedBodyComplete = true
        case .body(var chunk):
            if body.count + chunk.readableBytes > settings.maximumBodyBytes {
                respondAndClose(
                    KVError(
                        .bodyTooLarge,
                        "the body is larger than the limit of \(settings.maximumBodyBytes) bytes"),
                    context: context)
                return
            }
            body.append(contentsOf: chunk.readBytes(length: chunk.readableBytes) ?? [])
        case .end:
            guard let requestHead = head else { return }
            head = nil
            state = .processing
            disarm()
            dispatch(requestHead, body: body, context: context)
            body = []
        }
    }

    /// Dispatches a request whose body the service reads as it arrives.
    private func startStreaming(_ requestHead: HTTPRequestHead, context: ChannelHandlerContext) {
        if requestHead.headers.first(name: "expect")?.lowercased() == "100-continue" {
            context.writeAndFlush(
                wrapOutboundOut(
                    .part(.head(HTTPResponseHead(version: requestHead.version, status: .continue)))),
                promise: nil)
        }
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let stream = RequestBodyStream {
            eventLoop.execute { loopBoundSelf.value.resumeReading(context: loopBoundContext.value) }
        }
        streamingBody = stream
        streamedBodyComplete = false
        head = nil
        state = .processing
        arm(settings.requestTimeoutSeconds)
        dispatch(requestHead, body: [], stream: stream, context: context)
    }

    private func resumeReading(context: ChannelHandlerContext) {
        readsPaused = false
        if streamingBody != nil { arm(settings.requestTimeoutSeconds) }
        if readPending {
            readPending = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if readsPaused || !queued.isEmpty {
            readPending = true
            return
        }
        context.read()
    }

    /// Whether a declared Content-Length is over `limit`; a number too large for any
    /// integer is (the parser has already refused anything that is not digits).
    static func exceeds(_ declared: String, _ limit: Int) -> Bool {
        guard let length = Int(declared) else { return declared.utf8.allSatisfy { (48...57).contains($0) } }
        return length > limit
    }

    private func dispatch(
        _ requestHead: HTTPRequestHead, body: [UInt8], stream: RequestBodyStream? = nil,
        context: ChannelHandlerContext
    ) {
        let keepAlive = requestHead.isKeepAlive && !closeAfterResponse
        requestNumber &+= 1
        let number = requestNumber
        if !keepAlive { closeRequested = true }
        let channel = context.channel
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let router = router
        let logger = logger
        let version = requestHead.version
        let isHead = requestHead.method == .HEAD
        var request = HTTPRequest(
            method: requestHead.method, uri: requestHead.uri, headers: requestHead.headers, body: body)
        request?.bodyStream = stream
        let started = NIODeadline.now()
        let operation = HTTPMetrics.operation(method: requestHead.method, path: request?.pathSegments ?? [])
        if stream == nil, let request, let response = router.respondImmediately(to: request),
            case .bytes(let bytes) = response.body
        {
            // Answered from memory: write on the event loop, no task, no thread hop.
            writeWhole(
                response, bytes: bytes, number: number, keepAlive: keepAlive, version: version,
                isHead: isHead,
                operation: operation, started: started, context: context)
            return
        }
        if stream == nil, let request,
            router.startImmediately(
                request,
                completion: { outcome in
                    channel.eventLoop.execute {
                        // A put started here: its response is a few headers, made and
                        // written on the event loop, without a task.
                        let response = router.response(to: outcome)
                        var bytes: [UInt8] = []
                        if case .bytes(let body) = response.body { bytes = body }
                        loopBoundSelf.value.writeWhole(
                            response, bytes: bytes, number: number, keepAlive: keepAlive,
                            version: version, isHead: isHead, operation: operation, started: started,
                            context: loopBoundContext.value)
                    }
                })
        {
            return
        }
        Task {
            let reusable = await HTTPConnectionHandler.serve(
                request, router: router, version: version, keepAlive: keepAlive, isHead: isHead,
                channel: channel, logger: logger, operation: operation, started: started)
            channel.eventLoop.execute {
                loopBoundSelf.value.responseFinished(
                    number, keepAlive: reusable, context: loopBoundContext.value)
            }
        }
    }

    /// Writes `response` with `bytes`, its body at hand, records it, and finishes the
    /// request.
    private func writeWhole(
        _ response: HTTPResponse, bytes: [UInt8], number: UInt64, keepAlive: Bool, version: HTTPVersion,
        isHead: Bool, operation: String, started: NIODeadline, context: ChannelHandlerContext
    ) {
        var headers = response.headers
        headers.set("connection", keepAlive ? "keep-alive" : "close")
        headers.set("content-length", String(bytes.count))
        let head = HTTPResponseHead(version: version, status: response.status, headers: headers)
        let part = wrapOutboundOut(.whole(head, body: isHead ? ByteBuffer() : ByteBuffer(bytes: bytes)))
        let series =
            lastSeries.flatMap { $0.matches(operation, response.status) ? $0 : nil }
            ?? router.metrics.series(operation: operation, status: response.status)
        lastSeries = series
        guard !keepAlive || closeAfterResponse || pendingParseError != nil else {
            context.writeAndFlush(part, promise: nil)
            series.record(nanoseconds: (NIODeadline.now() - started).nanoseconds)
            responseFinished(number, keepAlive: keepAlive, context: context)
            return
        }
        // The connection closes after this answer: only once it is written, or a socket
        // that cannot take it at once would lose it.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(part, promise: written)
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        written.futureResult.whenComplete { _ in
            series.record(nanoseconds: (NIODeadline.now() - started).nanoseconds)
            loopBoundSelf.value.responseFinished(
                number, keepAlive: keepAlive, context: loopBoundContext.value)
        }
    }

    /// Routes one request and writes its response (off the event loop); returns whether
    /// the connection can take another request.
    private static func serve(
        _ request: HTTPRequest?, router: Router, version: HTTPVersion, keepAlive: Bool, isHead: Bool,
        channel: any Channel, logger: Logger, operation: String, started: NIODeadline
    ) async -> Bool {
        let response: HTTPResponse
        if let request {
            response = await router.respond(to: request)
        } else {
            response = Router.errorResponse(
                KVError(.invalidRequest, "the request target has malformed percent-encoding"))
        }
        // The latency includes writing the answer (a streamed one lasts as long as the
        // client reads it).
        defer {
            router.metrics.record(
                operation: operation, status: response.status,
                nanoseconds: (NIODeadline.now() - started).nanoseconds)
        }
        // An answer given before its streamed body has all arrived ends the connection
        // (the rest of the body is in the way of the next request), so it says so.
        let reusable = keepAlive && ((request?.bodyStream as? RequestBodyStream)?.isComplete ?? true)
        do {
            return try await write(
                response, version: version, keepAlive: reusable, isHead: isHead, to: channel)
        } catch {
            logger.debug("writing a response failed", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
            return false
        }
    }

    private func responseFinished(_ number: UInt64, keepAlive: Bool, context: ChannelHandlerContext) {
        if !keepAlive || (number == requestNumber && !streamedBodyComplete) {
            // An answer given before its streamed body ended: the rest of the body is
            // in the way of the next request, so the connection closes.
            streamingBody?.fail(KVError(.incompleteBody, "the request was answered before its body ended"))
            streamingBody = nil
            state = .closing
            context.close(promise: nil)
            return
        }
        guard number == requestNumber, state == .processing else { return }
        if queued.isEmpty, let error = pendingParseError {
            // Every request received before the bytes that are not HTTP is answered.
            respondAndClose(error, context: context)
            return
        } else if closeAfterResponse {
            state = .closing
            context.close(promise: nil)
            return
        } else if !queued.isEmpty || boundaries.isWithinRequest {
            // The next request has arrived, or started arriving: it has the request timeout.
            state = .receiving
            arm(settings.requestTimeoutSeconds)
        } else {
            state = .idle
            activity.setIdle()
            arm(settings.idleTimeoutSeconds)
        }
        handleQueued(context: context)
    }

    /// Answers with an error and closes: used when the rest of the request will not be
    /// read (too large, too slow, unparseable).
    private func respondAndClose(_ error: KVError, context: ChannelHandlerContext) {
        disarm()
        guard state != .closing else { return }
        state = .closing
        activity.setBusy()
        if head == nil, let byteLevel {
            // No request head has been decoded: answer below the HTTP handlers.
            byteLevel.writeRawAndClose(Self.rawResponse(for: error))
            return
        }
        let response = Router.errorResponse(error)
        var headers = response.headers
        headers.replaceOrAdd(name: "connection", value: "close")
        if case .bytes(let bytes) = response.body {
            headers.replaceOrAdd(name: "content-length", value: String(bytes.count))
            context.write(
                wrapOutboundOut(
                    .part(
                        .head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)))
                ),
                promise: nil)
            context.write(wrapOutboundOut(.part(.body(.byteBuffer(ByteBuffer(bytes: bytes))))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.part(.end(nil)))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ResponseHeadRefused {
            // Never expected: the router writes only headers it checked. The client still
            // gets an answer rather than a connection that goes quiet.
            logger.error("a response had a header that cannot be sent; answering 500 instead")
            respondAndClose(
                KVError(.internalError, "the response had a header that cannot be sent"), context: context)
            return
        }
        if let streamingBody, error is HTTPParserError {
            // The body being streamed is broken: the service's answer follows, then the
            // connection closes.
            streamingBody.fail(KVError(.incompleteBody, "the request body is not valid HTTP/1.1 (\(error))"))
            self.streamingBody = nil
            return
        }
        if let parserError = error as? HTTPParserError {
            let kvError =
                switch parserError {
                case .headerOverflow: KVError(.headersTooLarge, "the request head is too large")
                default: KVError(.invalidRequest, "the request is not valid HTTP/1.1 (\(parserError))")
                }
            if (state == .processing && head == nil) || !queued.isEmpty {
                // Requests before the bad bytes are being answered (or wait their turn
                // in the pipeline): the error follows their answers.
                pendingParseError = pendingParseError ?? kvError
                return
            }
            respondAndClose(kvError, context: context)
            return
        }
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
