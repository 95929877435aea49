import KVCluster
import KVCore
import KVWire

/// How a node finds and forms its cluster.
public struct ClusterSettings: Sendable, Hashable {
    /// The cluster's name; peers that say another one are refused.
    public var name: String
    /// The secret every member holds; peers that cannot prove they hold it are refused.
    public var secret: ClusterSecret
    /// Where the node-to-node protocol listens.
    public var peerHost: String
    /// Its port; 0 picks a free one.
    public var peerPort: Int
    /// The HTTP address (`host:port`) other members and clients are told.
    public var httpAddress: String
    /// The host peers are told to connect to (`nil`: ``peerHost``); needed when the node
    /// listens on every interface.
    public var advertisedHost: String?
    /// The port peers are told to connect to (`nil`: the port the node listens on); a
    /// fault-injecting proxy in front of the node listens on another.
    public var advertisedPeerPort: Int?
    /// How often the node compares one partition's Merkle tree with a peer replica's
    /// (active anti-entropy); 0 turns anti-entropy off.
    public var antiEntropyIntervalMilliseconds: Int64
    /// How many hints per second the node hands back to replicas that returned.
    public var hintDeliveryRatePerSecond: Int
    /// The most bytes of rows one handoff batch carries (the unit a resumed transfer
    /// may send twice).
    public var transferBatchBytes: Int = 1 << 20
    /// SWIM failure detection timing.
    public var membership: MembershipSettings
    /// How many members must be known before the cluster forms: 1 for a node on its own,
    /// the size of a static member list, or `nil` for a node that joins an existing
    /// cluster and never forms one itself.
    public var expectedMembers: Int?
    /// Replicas per partition of a cluster this node forms.
    public var replicationFactor: Int
    /// This node's zone.
    public var zone: String
    /// This node's capacity weight.
    public var capacity: Int
    /// How long an operation waits for its replicas.
    public var requestTimeoutMilliseconds: Int64
    /// How far a peer's wall clock may be from this node's when it connects (`nil`: not
    /// checked); see ``PeerTransportSettings/maximumClockSkewMilliseconds``.
    public var maximumClockSkewMilliseconds: Int64? = 1_000
    /// How often the node exchanges metadata with one peer.
    public var gossipIntervalMilliseconds: Int64
    /// How long chunks of a large value that no row names any more (overwritten,
    /// deleted, or an upload that never finished) are kept before they are collected;
    /// an upload must finish within half of it. Default one hour.
    public var largeValueGraceMilliseconds: Int64 = 3_600_000
    /// How often the node looks for such chunks in the partitions it leads. Default
    /// one minute.
    public var chunkCollectionIntervalMilliseconds: Int64 = 60_000

    /// Creates settings: by default a node on its own, N=3 for clusters it forms.
    public init(
        secret: ClusterSecret, name: String = "kv", peerHost: String = "127.0.0.1", peerPort: Int = 0,
        httpAddress: String = "",
        expectedMembers: Int? = 1, replicationFactor: Int = 3, zone: String = "default", capacity: Int = 1,
        requestTimeoutMilliseconds: Int64 = 5_000, gossipIntervalMilliseconds: Int64 = 1_000,
        antiEntropyIntervalMilliseconds: Int64 = 1_000, hintDeliveryRatePerSecond: Int = 2_000,
        membership: MembershipSettings = MembershipSettings()
    ) {
        self.antiEntropyIntervalMilliseconds = antiEntropyIntervalMilliseconds
        self.hintDeliveryRatePerSecond = hintDeliveryRatePerSecond
        self.membership = membership
        self.name = name
        self.secret = secret
        self.peerHost = peerHost
        self.peerPort = peerPort
        self.httpAddress = httpAddress
        self.expectedMembers = expectedMembers
        self.replicationFactor = replicationFactor
        self.zone = zone
        self.capacity = capacity
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        self.gossipIntervalMilliseconds = gossipIntervalMilliseconds
    }

    /// Every problem with these settings, one sentence each.
    public func problems() -> [String] {
        var problems: [String] = []
        if !(1...ReplicationDefaults.maximumReplicas).contains(replicationFactor) {
            problems.append(
                "the replication factor must be 1 to \(ReplicationDefaults.maximumReplicas), not \(replicationFactor)"
            )
        }
        if let expectedMembers, !(1...1024).contains(expectedMembers) {
            problems.append("a static cluster has 1 to 1024 members, not \(expectedMembers)")
        }
        if !(0...65535).contains(peerPort) {
            problems.append("the peer port must be 0 to 65535, not \(peerPort)")
        }
        if !(1...(1 << 20)).contains(capacity) {
            problems.append("the capacity must be 1 to 1048576, not \(capacity)")
        }
        if zone.isEmpty || zone.utf8.count > 64 { problems.append("the zone name has 1 to 64 bytes") }
        if let advertisedPeerPort, !(1...65535).contains(advertisedPeerPort) {
            problems.append("the advertised peer port must be 1 to 65535, not \(advertisedPeerPort)")
        }
        if antiEntropyIntervalMilliseconds != 0 && !(10...3_600_000).contains(antiEntropyIntervalMilliseconds)
        {
            problems.append(
                "the anti-entropy interval must be 0 (off) or 10 ms to 1 hour, not \(antiEntropyIntervalMilliseconds) ms"
            )
        }
        if !(1_000...(30 * 86_400_000)).contains(largeValueGraceMilliseconds) {
            problems.append(
                "the large value grace must be 1 s to 30 days, not \(largeValueGraceMilliseconds) ms")
        }
        if !(100...86_400_000).contains(chunkCollectionIntervalMilliseconds) {
            problems.append(
                "the chunk collection interval must be 100 ms to 1 day, not \(chunkCollectionIntervalMilliseconds) ms"
            )
        }
        if !((4 << 10)...(32 << 20)).contains(transferBatchBytes) {
            problems.append("the transfer batch must be 4 KiB to 32 MiB, not \(transferBatchBytes) bytes")
        }
        if !(1...1_000_000).contains(hintDeliveryRatePerSecond) {
            problems.append(
                "the hint delivery rate must be 1 to 1000000 per second, not \(hintDeliveryRatePerSecond)")
        }
        if !(100...600_000).contains(requestTimeoutMilliseconds) {
            problems.append(
                "the replica timeout must be 100 ms to 600 s, not \(requestTimeoutMilliseconds) ms")
        }
        return problems
    }
}
