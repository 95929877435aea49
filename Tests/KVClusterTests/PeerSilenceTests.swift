import KVCore
import Testing

@testable import KVCluster

/// Which connections are reopened, written from the rules in ``PeerSilence``'s
/// documentation.
@Suite("Peer silence")
struct PeerSilenceTests {
    static let peer = NodeID(rawValue: 2)
    static let other = NodeID(rawValue: 3)

    /// Reports an unanswered request: whether the connection must be reopened.
    static func note(_ silence: inout PeerSilence, _ peer: NodeID, _ now: Int64) -> Bool {
        silence.unanswered(by: peer, nowMilliseconds: now)
    }

    @Test("a peer that answers nothing for long enough, over enough requests, is silent once")
    func silentAfterEnoughRequestsAndTime() {
        var silence = PeerSilence(settings: PeerSilenceSettings(requests: 3, milliseconds: 5_000))
        // Three requests, but within a second: a busy peer.
        #expect(!Self.note(&silence, Self.peer, 1_000))
        #expect(!Self.note(&silence, Self.peer, 1_500))
        #expect(!Self.note(&silence, Self.peer, 2_000))
        // Five seconds after the first unanswered request: silent.
        #expect(Self.note(&silence, Self.peer, 6_000))
        #expect(silence.reopened == 1)
        // The count starts over after the reopen.
        #expect(silence.unansweredRequests(of: Self.peer) == 0)
        #expect(!Self.note(&silence, Self.peer, 12_000))
    }

    @Test("a long time with too few unanswered requests is not silence")
    func tooFewRequests() {
        var silence = PeerSilence()
        #expect(!Self.note(&silence, Self.peer, 0))
        #expect(!Self.note(&silence, Self.peer, 60_000))
        #expect(Self.note(&silence, Self.peer, 60_001))
    }

    @Test("an answer clears the peer's count, and peers are counted apart")
    func answersClear() {
        var silence = PeerSilence()
        _ = silence.unanswered(by: Self.peer, nowMilliseconds: 0)
        _ = silence.unanswered(by: Self.peer, nowMilliseconds: 1_000)
        _ = silence.unanswered(by: Self.other, nowMilliseconds: 0)
        _ = silence.unanswered(by: Self.other, nowMilliseconds: 1_000)
        silence.answered(by: Self.peer)
        #expect(silence.unansweredRequests(of: Self.peer) == 0)
        // The count and the clock start again from the next unanswered request.
        #expect(!Self.note(&silence, Self.peer, 9_000))
        #expect(!Self.note(&silence, Self.peer, 10_000))
        #expect(!Self.note(&silence, Self.peer, 11_000))
        #expect(Self.note(&silence, Self.peer, 14_000))
        // The other peer kept its count.
        #expect(Self.note(&silence, Self.other, 5_000))
    }

    @Test("answers to maintenance requests count; the coordinator's answers and requests do not")
    func whatCountsAsAnAnswer() {
        let key = ReplicaKey(partition: PartitionID(rawValue: 0), bytes: [1])
        #expect(
            ReplicaMessage.antiEntropy(.reconciled(id: 1, outcome: .object(StoredObject())))
                .answersMaintenanceRequest)
        #expect(ReplicaMessage.hints(.handedOff(id: 1, error: nil)).answersMaintenanceRequest)
        #expect(ReplicaMessage.reaping(.reapAnswer(id: 1, agrees: true)).answersMaintenanceRequest)
        #expect(
            !ReplicaMessage.antiEntropy(.reconcile(id: 1, key: key, object: StoredObject()))
                .answersMaintenanceRequest)
        #expect(!ReplicaMessage.quorum(.stored(id: 1, durable: true)).answersMaintenanceRequest)
        #expect(!ReplicaMessage.reaping(.reap(key: key, objectHash: 1)).answersMaintenanceRequest)
    }
}
