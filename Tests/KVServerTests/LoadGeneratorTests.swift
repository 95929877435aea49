import Foundation
import KVClient
import KVCore
import KVTestSupport
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// `kv bench`'s event-loop load generator against real `kv server` processes: each step
/// ends once with the outcome the task-based client would report, puts carry the
/// context of the key's last answer, and a client survives a lost server, a refused
/// TLS handshake and a token it must send.
@Suite("load generator", .serialized)
struct LoadGeneratorTests {
    static let table = try! TableName(namespace: "load", table: "kv")

    /// What a test's scripts saw, shared by all of them.
    final class Record: Sendable {
        struct Entry: Sendable {
            var client: Int
            var step: LoadStep
            var outcome: LoadOutcome
        }
        let entries = Mutex<[Entry]>([])
        var all: [Entry] { entries.withLock { $0 } }
    }

    /// Plays a fixed list of steps, or keeps repeating its last one until a deadline.
    final class ListScript: LoadScript {
        let client: Int
        var steps: [LoadStep]
        let record: Record
        let until: NIODeadline?

        init(client: Int, steps: [LoadStep], record: Record, until: NIODeadline? = nil) {
            self.client = client
            self.steps = steps
            self.record = record
            self.until = until
        }

        func next(now: NIODeadline) -> LoadStep? {
            if let until {
                return now < until ? steps.first : nil
            }
            return steps.isEmpty ? nil : steps.removeFirst()
        }

        func ended(_ step: LoadStep, _ outcome: LoadOutcome, latency: TimeAmount, now: NIODeadline) {
            record.entries.withLock { $0.append(Record.Entry(client: client, step: step, outcome: outcome)) }
        }
    }

    static func createTable(_ url: String, options: HTTPClientOptions = HTTPClientOptions()) async throws {
        let client = try await HTTPKeyValueService(url: url, options: options)
        _ = try await client.createTable(
            TableDescriptor(name: table, schema: try KeySchema([.int64], partitionKeyLength: 1)))
        await client.close()
    }

    static func key(_ number: Int) -> RowKey { RowKey(table: table, parts: [.int64(Int64(number))]) }

    /// Runs one client per plan (client `i` plays `plans[i]`, or with `until` repeats
    /// its first step until then) and returns what their scripts saw.
    static func play(
        _ plans: [[LoadStep]], urls: [String], target: LoadTarget = LoadTarget(table: table, value: [1]),
        until: NIODeadline? = nil, route: (@Sendable (LoadStep, UInt64) -> Int)? = nil
    ) async throws -> [Record.Entry] {
        let record = Record()
        try await LoadGenerator.run(
            urls: urls, clients: plans.count, target: target, contexts: LoadContexts(), route: route,
            script: { index in ListScript(client: index, steps: plans[index], record: record, until: until) })
        return record.all
    }

    /// A `kv server` with the test's table.
    static func serverWithTable() async throws -> ServerProcess {
        let server = try ServerProcess(arguments: ["--partitions", "16"])
        try await createTable(server.url)
        return server
    }

    @Test("every step ends once, gets and puts answer as the client reports them, puts carry contexts")
    func stepsAndContexts() async throws {
        let server = try await Self.serverWithTable()
        defer {
            server.kill()
            server.removeData()
        }
        let value = Array("load value".utf8)
        // Client 0 writes key 7 three times in a row and reads it back; the others
        // each read an absent key, then write and read a key of their own.
        let plans: [[LoadStep]] =
            [[7, 7, 7].map { LoadStep(key: $0, isGet: false) } + [LoadStep(key: 7, isGet: true)]]
            + (1...3).map { client in
                [
                    LoadStep(key: 100 + client, isGet: true), LoadStep(key: client, isGet: false),
                    LoadStep(key: client, isGet: true),
                ]
            }
        let entries = try await Self.play(
            plans, urls: [server.url], target: LoadTarget(table: Self.table, value: value))
        for (client, plan) in plans.enumerated() {
            #expect(entries.filter { $0.client == client }.map(\.step) == plan)
        }
        #expect(entries.allSatisfy { $0.outcome == .succeeded }, "\(entries)")
        // Three puts in a row of one key, each with the context of the last answer,
        // leave one version; blind writes would have left three siblings.
        let reader = try await HTTPKeyValueService(url: server.url)
        let read = try await reader.get(Self.key(7), options: ReadOptions())
        #expect(read.siblings.count == 1)
        #expect(read.siblings.first?.value?.bytes == value)
        for client in 1...3 {
            #expect(try await reader.get(Self.key(client), options: ReadOptions()).siblings.count == 1)
        }
        await reader.close()
    }

    @Test("an error answer ends its step with the code the client reports")
    func errorCodes() async throws {
        let server = try ServerProcess(arguments: ["--partitions", "16"])
        defer {
            server.kill()
            server.removeData()
        }
        let steps = [LoadStep(key: 1, isGet: true), LoadStep(key: 1, isGet: false)]
        /// The codes the client library's get and put of key 1 fail with, and the
        /// outcomes of the same two steps through the load generator.
        func compare(_ target: LoadTarget) async throws -> (expected: [LoadOutcome], got: [LoadOutcome]) {
            let client = try await HTTPKeyValueService(url: server.url)
            var expected: [LoadOutcome] = []
            do {
                _ = try await client.get(Self.key(1), options: ReadOptions(quorum: target.readQuorum))
                expected.append(.succeeded)
            } catch {
                expected.append(.failed(error.code))
            }
            do {
                _ = try await client.put(
                    Self.key(1), value: RowValue(bytes: target.value),
                    options: WriteOptions(quorum: target.writeQuorum))
                expected.append(.succeeded)
            } catch {
                expected.append(.failed(error.code))
            }
            await client.close()
            return (expected, try await Self.play([steps], urls: [server.url], target: target).map(\.outcome))
        }
        // No table yet: both are refused for it.
        let missing = try await compare(LoadTarget(table: Self.table, value: [1]))
        #expect(missing.expected == [.failed(.tableNotFound), .failed(.tableNotFound)])
        #expect(missing.got == missing.expected)
        // Quorum overrides no replica set can meet: the headers reach the server.
        try await Self.createTable(server.url)
        let quorum = try await compare(
            LoadTarget(
                table: Self.table, value: [1], readQuorum: QuorumOverrides(r: 9),
                writeQuorum: QuorumOverrides(w: 9)))
        #expect(quorum.expected.allSatisfy { $0 != .succeeded && $0 != .failed(.tableNotFound) })
        #expect(quorum.got == quorum.expected)
    }

    /// A server that answers each request with `answer` and then closes the connection
    /// (or, without an answer, reads requests and never answers), counting the
    /// connections it accepts.
    final class ClosingServer: Sendable {
        final class Counter: Sendable {
            let value = Atomic<Int>(0)
        }

        final class AnswerAndClose: ChannelInboundHandler, Sendable {
            typealias InboundIn = ByteBuffer
            typealias OutboundOut = ByteBuffer
            let answer: String?
            init(answer: String?) { self.answer = answer }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                guard let answer else { return }
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer))).whenComplete { _ in
                    channel.close(promise: nil)
                }
            }
        }

        let channel: any Channel
        let counter = Counter()
        var connections: Int { counter.value.load(ordering: .relaxed) }
        var url: String { "http://127.0.0.1:\(channel.localAddress?.port ?? 0)" }

        init(answer: String?) async throws {
            let counter = counter
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { child in
                    counter.value.wrappingAdd(1, ordering: .relaxed)
                    return child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(AnswerAndClose(answer: answer))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
        }
    }

    @Test("a server that refuses each connection with an error is asked again after a pause, not at once")
    func refusedConnectionsPause() async throws {
        let body = #"{"code":"server.too_many_connections","message":"full"}"#
        let server = try await ClosingServer(
            answer: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: \(body.utf8.count)\r\n"
                + "connection: close\r\n\r\n" + body)
        defer { server.channel.close(promise: nil) }
        let entries = try await Self.play(
            [[LoadStep(key: 1, isGet: true)]], urls: [server.url], until: .now() + .seconds(1))
        #expect(
            entries.allSatisfy { $0.outcome == .failed(.tooManyConnections) },
            "\(Set(entries.map(\.outcome)))")
        // One connection per 50 ms pause at most: about 20 in the second, not thousands.
        #expect(server.connections <= 25, "\(server.connections) connections in 1 s")
        #expect(entries.count == server.connections)
    }

    @Test("after an answer that closes its connection the next step goes on a new one, at once")
    func answersThatClose() async throws {
        let server = try await ClosingServer(
            answer: "HTTP/1.1 204 No Content\r\nx-kv-context: c\r\nconnection: close\r\n\r\n")
        defer { server.channel.close(promise: nil) }
        let started = NIODeadline.now()
        let entries = try await Self.play(
            [(0..<40).map { LoadStep(key: $0 % 5, isGet: false) }], urls: [server.url])
        // None was written onto the closing connection (it would have failed), and none
        // waited for a pause (40 of them would take 2 s).
        #expect(entries.count == 40)
        #expect(entries.allSatisfy { $0.outcome == .succeeded }, "\(Set(entries.map(\.outcome)))")
        #expect(server.connections == 40)
        #expect(NIODeadline.now() - started < .seconds(1))
    }

    @Test("a request left unanswered past the limit fails, and the run still ends", .timeLimit(.minutes(1)))
    func unansweredRequestTimesOut() async throws {
        let server = try await ClosingServer(answer: nil)
        defer { server.channel.close(promise: nil) }
        let started = NIODeadline.now()
        let entries = try await Self.play(
            [[LoadStep(key: 0, isGet: true)], [LoadStep(key: 1, isGet: false)]], urls: [server.url],
            target: LoadTarget(table: Self.table, value: [1], requestTimeout: .milliseconds(300)))
        #expect(entries.map(\.outcome) == [.failed(.unavailable), .failed(.unavailable)])
        #expect(NIODeadline.now() - started < .seconds(5))
    }

    @Test("a route sends each step to the node it names, whatever node the client would use")
    func routeOverridesTheClientsNode() async throws {
        let server = try await Self.serverWithTable()
        defer {
            server.kill()
            server.removeData()
        }
        // The second URL answers nothing: a step sent there fails.
        let nowhere = try ServerProcess(arguments: ["--partitions", "16"])
        let deadURL = nowhere.url
        nowhere.kill()
        nowhere.removeData()
        let urls = [server.url, deadURL]
        let steps = (0..<6).map { LoadStep(key: $0, isGet: $0 % 2 == 0) }
        for (target, succeeds) in [(0, true), (1, false)] {
            // Both clients, one of them at home on each node, are routed to `target`.
            let entries = try await Self.play([steps, steps], urls: urls, route: { _, _ in target })
            #expect(entries.count == 12)
            #expect(
                entries.allSatisfy { ($0.outcome == .succeeded) == succeeds }, "route \(target): \(entries)")
        }
    }

    @Test("a client whose server goes away counts unavailable steps and goes on when it is back")
    func lostServer() async throws {
        let server = try await Self.serverWithTable()
        defer {
            server.kill()
            server.removeData()
        }
        // The run goes on for 8 s: a second up, a second down, and the rest for the server
        // to start again (slow on a slow machine) and serve some steps.
        let until = NIODeadline.now() + .seconds(8)
        let url = server.url
        let port = server.port
        let run = Task {
            try await Self.play(
                [[LoadStep(key: 0, isGet: true)], [LoadStep(key: 1, isGet: false)]], urls: [url], until: until
            )
        }
        try await Task.sleep(for: .seconds(1))
        let killed = ContinuousClock.now
        server.kill()
        try await Task.sleep(for: .seconds(1))
        try await offCooperativePool { try server.start(port: port) }
        let outage = (ContinuousClock.now - killed) / .seconds(1)
        let entries = try await run.value
        // Steps end in order; those after the last failure ended once the server was back.
        let lastFailure = entries.lastIndex { $0.outcome == .failed(.unavailable) }.map { $0 + 1 } ?? 0
        let failures = entries.filter { $0.outcome == .failed(.unavailable) }.count
        #expect(failures > 0)
        // A refused connection is tried again after a pause, not in a tight loop: at most
        // about 20 a second per client while the server is down (which is longer on a
        // slow machine, where the restart takes longer).
        #expect(
            Double(failures) < 2 * 25 * (outage + 1), "\(failures) failed steps in an outage of \(outage) s")
        #expect(entries.count > lastFailure, "no step succeeded after the server came back")
        #expect(entries.last?.outcome == .succeeded)
    }

    @Test(
        "over TLS with the CA and a token the load runs; without the CA every step fails and the run still ends"
    )
    func tlsAndToken() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let token = "load-test-admin-token-0123456789abcdef"
        var environment = certificates.environment
        environment["KV_ADMIN_TOKEN"] = token
        let server = try ServerProcess(arguments: ["--partitions", "16"], environment: environment)
        defer {
            server.kill()
            server.removeData()
        }
        let options = HTTPClientOptions(token: token, caFile: certificates.authority)
        try await Self.createTable(server.url, options: options)
        let steps = [LoadStep(key: 1, isGet: false), LoadStep(key: 1, isGet: true)]
        func outcomes(_ options: HTTPClientOptions, clients: Int) async throws -> [LoadOutcome] {
            try await Self.play(
                Array(repeating: steps, count: clients), urls: [server.url],
                target: LoadTarget(table: Self.table, value: [1], options: options)
            ).map(\.outcome)
        }
        let trusted = try await outcomes(options, clients: 2)
        #expect(trusted == Array(repeating: .succeeded, count: 4))
        let withoutToken = try await outcomes(HTTPClientOptions(caFile: certificates.authority), clients: 1)
        #expect(withoutToken == [.failed(.tokenRequired), .failed(.tokenRequired)])
        let untrusted = try await outcomes(HTTPClientOptions(token: token), clients: 1)
        #expect(untrusted == [.failed(.unavailable), .failed(.unavailable)])
    }
}
