import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Batches: items grouped by partition, each group coordinated as one request.
extension ClusterNode {
    // MARK: - Batches

    /// Runs a batch's operations grouped by partition: one partition's operations in
    /// their order, different partitions concurrently.
    public func batch(_ operations: [BatchOperation]) async throws(KVError) -> [BatchItemResult] {
        guard operations.count <= local.settings.maximumBatchOperations else {
            throw KVError(
                .invalidRequest,
                "the batch has \(operations.count) operations; the limit is \(local.settings.maximumBatchOperations)"
            )
        }
        var groups: [PartitionID?: [Int]] = [:]
        for (index, operation) in operations.enumerated() {
            let key: RowKey
            switch operation {
            case .get(let rowKey), .put(let rowKey, _, _), .delete(let rowKey, _): key = rowKey
            }
            groups[try? local.resolve(key).partition, default: []].append(index)
        }
        let maximumBytes = local.settings.maximumResponseBytes
        let answered = NIOLockedValueBox(0)
        // Once the gathered values reach the budget, a partition's group stops before its
        // next get and leaves the rest of its operations to the ordered pass below, which
        // decides in batch order which gets the answer holds (as one node does) and so
        // keeps every partition's operations in their order.
        let results = await withTaskGroup(of: [(Int, BatchItemResult?)].self) { group in
            for indexes in groups.values {
                group.addTask {
                    var done: [(Int, BatchItemResult?)] = []
                    var stopped = false
                    for index in indexes {
                        if stopped {
                            done.append((index, nil))
                            continue
                        }
                        do throws(KVError) {
                            switch operations[index] {
                            case .get(let key):
                                guard answered.withLockedValue({ $0 }) < maximumBytes else {
                                    stopped = true
                                    done.append((index, nil))
                                    continue
                                }
                                let read = try await self.get(key)
                                answered.withLockedValue { $0 += Self.valueBytes(read) }
                                done.append((index, .read(read)))
                            case .put(let key, let value, let options):
                                done.append(
                                    (index, .written(try await self.put(key, value: value, options: options)))
                                )
                            case .delete(let key, let options):
                                done.append((index, .written(try await self.delete(key, options: options))))
                            }
                        } catch {
                            done.append((index, .failed(error)))
                        }
                    }
                    return done
                }
            }
            var all: [(Int, BatchItemResult?)] = []
            for await part in group { all += part }
            return all
        }
        // In batch order, as on a single node: the gets up to the budget are answered,
        // every later one is refused; operations a group left are run now, in order.
        var ordered = results.sorted { $0.0 < $1.0 }.map(\.1)
        var total = 0
        for index in ordered.indices {
            do throws(KVError) {
                switch operations[index] {
                case .get(let key):
                    if total >= maximumBytes {
                        ordered[index] = .failed(
                            KVError(
                                .responseTooLarge,
                                "the batch's answer reached \(maximumBytes) bytes; send the rest in another batch"
                            ))
                        continue
                    }
                    if ordered[index] == nil { ordered[index] = .read(try await get(key)) }
                    if case .read(let read)? = ordered[index] { total += Self.valueBytes(read) }
                case .put(let key, let value, let options):
                    if ordered[index] == nil {
                        ordered[index] = .written(try await put(key, value: value, options: options))
                    }
                case .delete(let key, let options):
                    if ordered[index] == nil {
                        ordered[index] = .written(try await delete(key, options: options))
                    }
                }
            } catch {
                ordered[index] = .failed(error)
            }
        }
        return ordered.map { $0 ?? .failed(KVError(.internalError, "a batch item was not run")) }
    }

    /// The value bytes a read returns.
    static func valueBytes(_ read: ReadResult) -> Int {
        read.siblings.reduce(0) { $0 + ($1.value?.bytes.count ?? 0) }
    }
}
