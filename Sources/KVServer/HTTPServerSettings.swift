/// Limits and addresses of the HTTP front end. Every input has a limit; each is
/// answered with a status and a stable error code when exceeded.
public struct HTTPServerSettings: Sendable, Hashable {
    /// The address to listen on. Default 127.0.0.1.
    public var host: String
    /// The port; 0 picks a free one. Default 7700.
    public var port: Int
    /// Largest request head (request line and headers), in bytes. Default 16 KiB;
    /// at most 64 KiB. Larger heads get 431 `request.headers_too_large`.
    public var maximumHeaderBytes: Int
    /// Largest request body, in bytes. Default 16 MiB + 64 KiB (a maximal value plus room
    /// for a batch's JSON). Larger bodies get 413 `request.body_too_large`.
    public var maximumBodyBytes: Int
    /// Most open connections; more get 503 `server.too_many_connections`. Default 1024.
    public var maximumConnections: Int
    /// Seconds a client has to send a whole request once it has started one. Slower
    /// clients (slowloris) get 408 `request.timeout` and are disconnected. A client that
    /// stops reading an answer for this long is disconnected too. Default 10.
    public var requestTimeoutSeconds: Int
    /// Seconds an idle keep-alive connection stays open. Default 60.
    public var idleTimeoutSeconds: Int
    /// Seconds shutdown waits for in-flight requests before closing connections. Default 10.
    public var shutdownGraceSeconds: Int

    /// Creates settings with the documented defaults.
    public init(
        host: String = "127.0.0.1", port: Int = 7700, maximumHeaderBytes: Int = 16 << 10,
        maximumBodyBytes: Int = (16 << 20) + (64 << 10), maximumConnections: Int = 1024,
        requestTimeoutSeconds: Int = 10, idleTimeoutSeconds: Int = 60, shutdownGraceSeconds: Int = 10
    ) {
        self.host = host
        self.port = port
        self.maximumHeaderBytes = maximumHeaderBytes
        self.maximumBodyBytes = maximumBodyBytes
        self.maximumConnections = maximumConnections
        self.requestTimeoutSeconds = requestTimeoutSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.shutdownGraceSeconds = shutdownGraceSeconds
    }

    /// Every problem with these settings, one sentence each.
    public func problems() -> [String] {
        var problems: [String] = []
        if !(0...65535).contains(port) { problems.append("the port must be 0 to 65535, not \(port)") }
        if !(1024...(64 << 10)).contains(maximumHeaderBytes) {
            problems.append("the header limit must be 1 KiB to 64 KiB, not \(maximumHeaderBytes) bytes")
        }
        if !(1024...(1 << 31)).contains(maximumBodyBytes) {
            problems.append("the body limit must be 1 KiB to 2 GiB, not \(maximumBodyBytes) bytes")
        }
        if !(1...1_000_000).contains(maximumConnections) {
            problems.append("the connection limit must be 1 to 1000000, not \(maximumConnections)")
        }
        if !(1...3600).contains(requestTimeoutSeconds) {
            problems.append("the request timeout must be 1 to 3600 seconds, not \(requestTimeoutSeconds)")
        }
        if !(1...86400).contains(idleTimeoutSeconds) {
            problems.append("the idle timeout must be 1 to 86400 seconds, not \(idleTimeoutSeconds)")
        }
        if !(0...3600).contains(shutdownGraceSeconds) {
            problems.append("the shutdown grace must be 0 to 3600 seconds, not \(shutdownGraceSeconds)")
        }
        return problems
    }
}
