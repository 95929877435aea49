import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What arrives from peers: each message routed to the machine or handler it belongs to,
/// failed sends reported back to whoever sent them, and connection events.
extension ClusterNode {

    fileprivate func received(_ message: ReplicaMessage, from sender: NodeID) {
        if message.answersMaintenanceRequest { noteAnswered(by: sender) }
        runCore(.received(message, from: sender))
    }

    /// A message the core's machines do not take (``NodeCore`` routes those): for
    /// metadata exchange, scans, or a request this node serves.
    func deliver(_ message: ReplicaMessage, from sender: NodeID) {
        switch message {
        case .metadata(.push(let id, let encoded)):
            local.threadPool.submit { [self] _ in receivedMetadata(encoded, id: id, from: sender) }
        case .metadata(.merged(let id)):
            let done: CheckedContinuation<Void, Never>? = state.withLockedValue { state in
                guard var entry = state.metadataAcks[id] else { return nil }
                entry.waiting.remove(sender)
                if entry.waiting.isEmpty {
                    state.metadataAcks[id] = nil
                    return entry.continuation
                }
                state.metadataAcks[id] = entry
                return nil
            }
            done?.resume()
        case .scans(.scan(let id, let request)):
            local.threadPool.submit { [self] _ in
                let page: PartitionScanPage
                do throws(KVError) {
                    page = try local.partitionScanPage(request, maximumBytes: maximumScanPageBytes)
                } catch {
                    page = PartitionScanPage(rows: [], truncated: false, error: error)
                }
                transport.send(.scans(.scanned(id: id, page: page)), to: sender)
            }
        case .scans(.scanned(let id, let page)):
            state.withLockedValue { $0.scans.removeValue(forKey: id) }?.resume(returning: page)
        case .transfers(.transfersReport(let id, _)):
            state.withLockedValue { $0.requests.removeValue(forKey: id) }?.resume(returning: message)
        case .antiEntropy(.treeRequest), .antiEntropy(.keyHashesRequest), .antiEntropy(.reconcile),
            .reaping(.reapQuery), .reaping(.reap):
            if let request = MaintenanceRequest(message) { serveMaintenance(request, from: sender) }
        case .transfers(.transferPull(let id, let partition, let layoutVersion, let after, let maximumBytes)):
            serveTransferPull(
                id: id, partition: partition, layoutVersion: layoutVersion, after: after,
                maximumBytes: maximumBytes,
                from: sender)
        case .transfers(.transfersRequest(let id)):
            transport.send(
                .transfers(
                    .transfersReport(
                        id: id,
                        encoded: Self.encode(localTransfers(received: coreLoop.value.core.transfers.inbound)))
                ), to: sender)
        case .quorum, .membership, .hints(.handoff), .hints(.handedOff), .antiEntropy(.treeHashes),
            .antiEntropy(.keyHashes), .antiEntropy(.reconciled), .transfers(.transferRows),
            .reaping(.reapAnswer):
            // The core's machines took these.
            return
        }
    }

    fileprivate func sendFailed(_ message: ReplicaMessage, to target: NodeID) {
        runCore(.sendFailed(message, to: target))
    }

    /// A message of the node's other parts could not be sent (``NodeCore`` reports its
    /// machines' own).
    func undeliverable(_ message: ReplicaMessage, to target: NodeID) {
        switch message {
        case .scans(.scan(let id, _)):
            state.withLockedValue { $0.scans.removeValue(forKey: id) }?.resume(
                returning: PartitionScanPage(
                    rows: [], truncated: false,
                    error: KVError(.quorumUnavailable, "replica \(target) is unreachable")))
        case .transfers(.transfersRequest(let id)):
            state.withLockedValue { $0.requests.removeValue(forKey: id) }?.resume(returning: nil)
        case .metadata, .quorum, .scans(.scanned), .membership, .antiEntropy, .reaping, .hints, .transfers:
            // Gossip and probes repeat; a lost answer times out at the asker; the
            // machines' own messages went to the core.
            return
        }
    }

    /// A connection to `node` opened or closed.
    ///
    /// The event's own direction is not trusted: events of an old and a new connection
    /// to one peer arrive from different event loops, in any order, and a check of the
    /// event against the connection followed by a separate update let a stale "closed"
    /// land after the "opened" that superseded it. The peer then stayed unreachable
    /// while connected (no later event comes for a connection that stays up): releases
    /// waited on it, hints for it piled up and were never delivered, and their rows'
    /// tombstones could not be reaped. So every event re-reads the connection's state.
    fileprivate func reachabilityChanged(_ node: NodeID, isUp _: Bool) {
        refreshReachability(node, connectionChanged: true)
    }

    /// Tells the coordinator whether `node` is up: connected, and not suspected or
    /// declared dead by SWIM (`connectionChanged` re-reads the connection first). The
    /// node's view is updated under the state lock, so whichever of two concurrent
    /// refreshes runs last saw the connection as it is; the coordinator's is read from
    /// that view on the core's loop, when the input is taken, so it cannot be left stale
    /// by two refreshes that reach the loop in the other order.
    func refreshReachability(_ node: NodeID, connectionChanged: Bool = false) {
        if connectionChanged {
            state.withLockedValue { state in
                if transport.isConnected(to: node) {
                    state.unreachable.remove(node)
                } else {
                    state.unreachable.insert(node)
                }
            }
        }
        if eventLoop.inEventLoop {
            reachabilityTaken(node)
        } else {
            eventLoop.execute { [self] in reachabilityTaken(node) }
        }
    }

    /// The coordinator learns what the node's view says of `node` now.
    private func reachabilityTaken(_ node: NodeID) {
        let (isUp, isSuspected) = state.withLockedValue {
            ($0.believesUp(node), !$0.unreachable.contains(node) && $0.liveness[node] == .suspect)
        }
        runCore(.reachabilityChanged(node, isUp: isUp, isSuspected: isSuspected))
    }

    /// A peer named its address in a hello: the next connection to it goes there (it
    /// may have restarted on another port).
    fileprivate func announced(_ node: NodeID, address: String) {
        guard let socket = Self.socketAddress(address) else { return }
        transport.setAddress(socket, of: node)
    }
}

/// Receives the transport's events for a ``ClusterNode`` (held weakly would lose them;
/// the transport drops it at shutdown).
final class TransportEvents: PeerTransportDelegate, Sendable {
    let node: ClusterNode

    init(node: ClusterNode) {
        self.node = node
    }

    func transport(received message: ReplicaMessage, from peer: NodeID) {
        node.received(message, from: peer)
    }

    func transport(failedToSend message: ReplicaMessage, to peer: NodeID) {
        node.sendFailed(message, to: peer)
    }

    func transport(peer: NodeID, isReachable: Bool) {
        node.reachabilityChanged(peer, isUp: isReachable)
    }

    func transport(peer: NodeID, announcedAddress: String) {
        node.announced(peer, address: announcedAddress)
    }
}
