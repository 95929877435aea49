import KVCluster
import KVCore
import KVReplica
import KVStorage
import KVStorageMemory
import Testing

/// How a replica answers its peers' anti-entropy and reaping requests: the code the node
/// and the simulator both serve them with, written from the rules each answer must keep.
@Suite("Maintenance serving")
struct MaintenanceServingTests {
    typealias Fixture = ReplicaStoreTests
    static let peer = NodeID(rawValue: 2)
    static let layout = Layout.computed(
        members: [Fixture.actor.node, peer].map { LayoutMember(node: $0) }, replicationFactor: 2,
        partitionCount: 4)

    static func view(indexComplete: Bool = true) -> ReaperView {
        ReaperView(
            node: Fixture.actor.node, members: [peer], reachable: [peer], layout: layout, moving: [],
            indexComplete: indexComplete)
    }

    static func answer(_ store: ReplicaStore, _ request: MaintenanceRequest, keysPerListing: Int = 10)
        -> ReplicaMessage?
    {
        store.answer(request, keysPerListing: keysPerListing, reaperView: { view() })
    }

    /// Writes `name` and then deletes it; returns the tombstone.
    static func tombstone(_ name: String, in store: ReplicaStore) throws -> StoredObject {
        let key = Fixture.key(name)
        let value = try #require(Fixture.object(store.apply([.coordinate(key, Fixture.put("one"))])[0]))
        let delete = ProposedWrite(
            sibling: .tombstone(at: 6), context: value.context, generation: Fixture.table.generation)
        return try #require(Fixture.object(store.apply([.coordinate(key, delete)])[0]))
    }

    @Test("requests are told from answers, and each names the work it takes")
    func requestsAndTheirWork() {
        let key = Fixture.key("a")
        let object = StoredObject()
        let partition = Fixture.partition
        #expect(
            MaintenanceRequest(.antiEntropy(.treeRequest(id: 1, partition: partition, segments: [])))?.work
                == .memory)
        #expect(
            MaintenanceRequest(
                .antiEntropy(.keyHashesRequest(id: 1, partition: partition, leaves: [0], after: nil)))?.work
                == .engineReads)
        #expect(
            MaintenanceRequest(.reaping(.reapQuery(id: 1, key: key, objectHash: 7, layoutVersion: 1)))?.work
                == .engineReads)
        #expect(
            MaintenanceRequest(.antiEntropy(.reconcile(id: 1, key: key, object: object)))?.work
                == .write(.reconcile(key, object)))
        #expect(
            MaintenanceRequest(.reaping(.reap(key: key, objectHash: 7)))?.work
                == .write(.reap(key, objectHash: 7)))
        // Answers and other subsystems' messages are not requests a replica serves.
        for message: ReplicaMessage in [
            .antiEntropy(.treeHashes(id: 1, ready: true, hashes: [])),
            .antiEntropy(.keyHashes(id: 1, entries: [], truncated: false)),
            .antiEntropy(.reconciled(id: 1, outcome: .object(object))),
            .reaping(.reapAnswer(id: 1, agrees: true)),
            .hints(.handoff(id: 1, key: key, object: object)),
        ] {
            #expect(MaintenanceRequest(message) == nil)
        }
    }

    @Test("a tree request answers the partition's hashes, or that its tree is not built yet")
    func trees() throws {
        let store = try Fixture.store()
        _ = try Self.tombstone("a", in: store)
        let tree = try #require(store.antiEntropy.tree(of: Fixture.partition))
        #expect(
            Self.answer(store, .treeHashes(id: 4, partition: Fixture.partition, segments: []))
                == .antiEntropy(.treeHashes(id: 4, ready: true, hashes: tree.segmentHashes)))
        #expect(
            Self.answer(store, .treeHashes(id: 5, partition: Fixture.partition, segments: [0, 3]))
                == .antiEntropy(.treeHashes(id: 5, ready: true, hashes: tree.leafHashes(of: [0, 3]))))
        // Only partition 2's tree was built: an empty answer must not read as "in sync".
        #expect(
            Self.answer(store, .treeHashes(id: 6, partition: PartitionID(rawValue: 3), segments: []))
                == .antiEntropy(.treeHashes(id: 6, ready: false, hashes: [])))
    }

    @Test("a key listing pages by its limit and goes on after the key it was given")
    func listings() throws {
        let store = try Fixture.store()
        for name in ["a", "b", "c"] {
            _ = store.apply([.coordinate(Fixture.key(name), Fixture.put(name))])
        }
        let leaves = Array(0..<MerkleTree.leafCount)
        let request = MaintenanceRequest.keyHashes(
            id: 8, partition: Fixture.partition, leaves: leaves, after: nil)
        guard
            case .antiEntropy(.keyHashes(8, let first, true)) = Self.answer(store, request, keysPerListing: 2)
        else {
            Issue.record("the first page is not a truncated listing of id 8")
            return
        }
        #expect(first.count == 2)
        let rest = MaintenanceRequest.keyHashes(
            id: 9, partition: Fixture.partition, leaves: leaves, after: first.last?.key)
        guard
            case .antiEntropy(.keyHashes(9, let second, false)) = Self.answer(store, rest, keysPerListing: 2)
        else {
            Issue.record("the second page is not the complete rest of id 9")
            return
        }
        let keys = (first + second).map(\.key)
        #expect(
            keys == ["a", "b", "c"].map { Fixture.key($0).bytes }.sorted { $0.lexicographicallyPrecedes($1) })
    }

    @Test("a reap query agrees only for the very tombstone held, and never while a hint for the row is held")
    func reapQueries() throws {
        let store = try Fixture.store()
        let tombstone = try Self.tombstone("a", in: store)
        let key = Fixture.key("a")
        let hash = MerkleTree.objectHash(tombstone)
        func agrees(_ hash: UInt64, layoutVersion: UInt64 = Self.layout.version) -> Bool? {
            guard
                case .reaping(.reapAnswer(3, let agrees)) = Self.answer(
                    store, .reapQuery(id: 3, key: key, objectHash: hash, layoutVersion: layoutVersion))
            else { return nil }
            return agrees
        }
        #expect(agrees(hash) == true)
        // Another tombstone (newer elsewhere) or another layout: not this one's to reap.
        #expect(agrees(hash &+ 1) == false)
        #expect(agrees(hash, layoutVersion: Self.layout.version + 1) == false)
        // A row this replica never held has nothing to bring back.
        #expect(
            Self.answer(
                store,
                .reapQuery(id: 3, key: Fixture.key("z"), objectHash: hash, layoutVersion: Self.layout.version)
            )
                == .reaping(.reapAnswer(id: 3, agrees: true)))
        // A hint may hold an older value that its handoff would bring back.
        _ = store.apply([.storeHint(target: Self.peer, key: key, object: tombstone)])
        #expect(agrees(hash) == false)
    }

    @Test("a reconcile answers its outcome under its id; a reap answers nothing")
    func writeAnswers() {
        let key = Fixture.key("a")
        let outcome = StorageOutcome.object(StoredObject())
        #expect(
            MaintenanceRequest.reconcile(id: 12, key: key, object: StoredObject()).answer(to: outcome)
                == .antiEntropy(.reconciled(id: 12, outcome: outcome)))
        #expect(MaintenanceRequest.reap(key: key, objectHash: 1).answer(to: outcome) == nil)
        // A read request has no write to answer.
        #expect(
            MaintenanceRequest.treeHashes(id: 1, partition: key.partition, segments: []).answer(to: outcome)
                == nil)
    }

    @Test("reap candidates carry their table's generation and leave out rows of tables no longer known")
    func reapCandidates() throws {
        let store = try Fixture.store()
        let tombstone = try Self.tombstone("a", in: store)
        let candidates = store.reapCandidates(
            of: Fixture.partition, limit: 10, minimumAge: 0, start: 0)
        #expect(candidates.map(\.key) == [Fixture.key("a")])
        #expect(candidates.map(\.objectHash) == [MerkleTree.objectHash(tombstone)])
        #expect(candidates.map(\.holding.entry?.isTombstone) == [true])
        store.catalog.withLockedValue { $0 = [:] }
        #expect(store.reapCandidates(of: Fixture.partition, limit: 10, minimumAge: 0, start: 0).isEmpty)
    }
}
