import Foundation
import KVClient
import KVCore
import KVNode
import KVServer
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// The HTTP server's service until the cluster node exists: the server must listen
/// before the node can announce its HTTP address.
final class DeferredService: KeyValueService, Sendable {
    private let box = NIOLockedValueBox<ClusterNode?>(nil)

    func install(_ node: ClusterNode) { box.withLockedValue { $0 = node } }

    private func node() throws(KVError) -> ClusterNode {
        guard let node = box.withLockedValue({ $0 }) else {
            throw KVError(.unavailable, "the node is starting")
        }
        return node
    }

    func createTable(_ descriptor: TableDescriptor) async throws(KVError) -> TableDescriptor {
        try await node().createTable(descriptor)
    }
    func table(_ name: TableName) async throws(KVError) -> TableDescriptor { try await node().table(name) }
    func tables(in namespace: String) async throws(KVError) -> [TableDescriptor] {
        try await node().tables(in: namespace)
    }
    func namespaces() async throws(KVError) -> [String] { try await node().namespaces() }
    func clearTable(_ name: TableName) async throws(KVError) { try await node().clearTable(name) }
    func dropTable(_ name: TableName) async throws(KVError) { try await node().dropTable(name) }
    func dropNamespace(_ namespace: String) async throws(KVError) {
        try await node().dropNamespace(namespace)
    }
    func get(_ key: RowKey, options: ReadOptions) async throws(KVError) -> ReadResult {
        try await node().get(key, options: options)
    }
    func put(_ key: RowKey, value: RowValue, options: WriteOptions) async throws(KVError) -> WriteResult {
        try await node().put(key, value: value, options: options)
    }
    func delete(_ key: RowKey, options: WriteOptions) async throws(KVError) -> WriteResult {
        try await node().delete(key, options: options)
    }
    func putStreamed(
        _ key: RowKey, contentType: String, length: Int64?, body: any ValueBody, options: WriteOptions
    ) async throws(KVError) -> WriteResult {
        try await node().putStreamed(
            key, contentType: contentType, length: length, body: body, options: options)
    }
    func readLargeValue(_ value: LargeValue, range: Range<Int64>, into sink: ValueSink) async throws(KVError)
    {
        try await node().readLargeValue(value, range: range, into: sink)
    }
    func scan(_ request: ScanRequest) async throws(KVError) -> ScanPage { try await node().scan(request) }
    func increment(_ key: RowKey, by delta: Int64, options: WriteOptions) async throws(KVError) -> Int64 {
        try await node().increment(key, by: delta, options: options)
    }
    func counter(_ key: RowKey, options: ReadOptions) async throws(KVError) -> Int64? {
        try await node().counter(key, options: options)
    }
    func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] {
        try await node().batch(operations)
    }
    func nodeInfo() async throws(KVError) -> NodeInfo { try await node().nodeInfo() }
    func clusterStatus() async throws(KVError) -> ClusterStatus { try await node().clusterStatus() }
    func clusterLayout() async throws(KVError) -> LayoutDescription { try await node().clusterLayout() }
    func stageLayoutChange(_ change: LayoutChangeRequest) async throws(KVError) -> LayoutPlanReport {
        try await node().stageLayoutChange(change)
    }
    func clearLayoutChanges() async throws(KVError) -> LayoutPlanReport {
        try await node().clearLayoutChanges()
    }
    func layoutPlan() async throws(KVError) -> LayoutPlanReport { try await node().layoutPlan() }
    func commitLayoutPlan(_ id: String) async throws(KVError) -> LayoutPlanReport {
        try await node().commitLayoutPlan(id)
    }
    func transfers() async throws(KVError) -> TransfersReport { try await node().transfers() }
    func controlTransfers(_ request: TransferControlRequest) async throws(KVError) -> TransfersReport {
        try await node().controlTransfers(request)
    }
    func backup(name: String?) async throws(KVError) -> BackupReport { try await node().backup(name: name) }
    func createAccessToken(_ request: AccessTokenRequest) async throws(KVError) -> CreatedAccessToken {
        try await node().createAccessToken(request)
    }
    func accessTokens() async throws(KVError) -> [AccessTokenRecord] { try await node().accessTokens() }
    func revokeAccessToken(id: String) async throws(KVError) -> AccessTokenRecord {
        try await node().revokeAccessToken(id: id)
    }
    func immediateAccessToken(id: String) -> AccessTokenRecord? {
        box.withLockedValue { $0 }?.immediateAccessToken(id: id)
    }

    func refreshMetrics() async {
        await box.withLockedValue({ $0 })?.refreshMetrics()
    }

    func readinessProblem() -> KVError? {
        guard let node = box.withLockedValue({ $0 }) else {
            return KVError(.unavailable, "the node is starting")
        }
        return node.readinessProblem()
    }

    func immediateTable(_ name: TableName) -> TableDescriptor? {
        box.withLockedValue { $0 }?.immediateTable(name)
    }

    func immediateGet(_ key: RowKey) throws(KVError) -> ReadResult? {
        try box.withLockedValue { $0 }?.immediateGet(key)
    }

    func startPut(
        _ key: RowKey, value: RowValue, options: WriteOptions,
        completion: @escaping @Sendable (PutOutcome) -> Void
    ) -> Bool {
        box.withLockedValue { $0 }?.startPut(key, value: value, options: options, completion: completion)
            ?? false
    }
}

/// Keeps the node running until a shutdown signal, then stops it in order: HTTP first
/// (no new requests, in-flight ones finish), then storage (flushed and closed).
struct NodeLifecycle: Service {
    let server: HTTPServer
    /// Listeners of other dialects (minikeyvalue), stopped with the main one.
    var dialectServers: [HTTPServer] = []
    /// The Redis-protocol listener, if one is open.
    var respServer: RESPServer?
    /// The Mykeyv listener, if one is open.
    var mykeyvServer: MykeyvServer?
    let node: ClusterNode
    let bootstrap: Task<Void, Never>

    func run() async throws {
        try? await gracefulShutdown()
        bootstrap.cancel()
        for other in dialectServers { await other.shutdown() }
        await respServer?.stop()
        await mykeyvServer?.stop()
        await server.shutdown()
        await node.shutdown()
    }
}
