import KVCore

/// Settings of ``PeerSilence``.
public struct PeerSilenceSettings: Hashable, Sendable {
    /// Requests in a row a peer may leave unanswered before its connection is reopened...
    public var requests: Int
    /// ...over at least this long.
    public var milliseconds: Int64

    /// Creates settings.
    public init(requests: Int = 3, milliseconds: Int64 = 5_000) {
        self.requests = requests
        self.milliseconds = milliseconds
    }
}

/// Which peers' connections to reopen, as a pure state machine.
///
/// A connection can stay open while nothing sent on it arrives: a proxy, or a path that
/// drops everything without a reset. The peer still looks alive, because other members
/// probe it on this node's behalf (SWIM's indirect probes), so nothing else would ever
/// reopen the connection, and every request to the peer times out for as long as both
/// processes live: releases wait, hints pile up, tombstones stay.
///
/// ## Rules
///
/// - Every maintenance request (SWIM's direct pings, hint handoffs, anti-entropy,
///   reaping, transfers, releases) that a peer leaves unanswered in time is reported
///   (``unanswered(by:nowMilliseconds:)``); every answer from it
///   (``ReplicaMessage/answersMaintenanceRequest``) clears its count (``answered(by:)``).
/// - A peer that has answered nothing for at least ``PeerSilenceSettings/milliseconds``
///   while at least ``PeerSilenceSettings/requests`` went unanswered is silent: the
///   shell reopens this node's connection to it, and the count starts over. A merely
///   busy peer answers late, not never, and keeps its connection.
public struct PeerSilence: Sendable {
    /// The machine's settings.
    public let settings: PeerSilenceSettings
    /// Since when, and how many, requests each peer left unanswered since it last
    /// answered one.
    private var unanswered: [NodeID: (since: Int64, requests: Int)] = [:]
    /// Connections reopened so far.
    public private(set) var reopened: Int64 = 0

    /// Creates the machine.
    public init(settings: PeerSilenceSettings = PeerSilenceSettings()) {
        self.settings = settings
    }

    /// `peer` answered a request of this node.
    public mutating func answered(by peer: NodeID) {
        unanswered[peer] = nil
    }

    /// `peer` left a request unanswered. Returns whether the connection to it must be
    /// reopened now.
    public mutating func unanswered(by peer: NodeID, nowMilliseconds now: Int64) -> Bool {
        var silence = unanswered[peer] ?? (since: now, requests: 0)
        silence.requests += 1
        guard silence.requests >= settings.requests, now - silence.since >= settings.milliseconds else {
            unanswered[peer] = silence
            return false
        }
        unanswered[peer] = nil
        reopened += 1
        return true
    }

    /// Requests `peer` left unanswered since it last answered one.
    public func unansweredRequests(of peer: NodeID) -> Int { unanswered[peer]?.requests ?? 0 }
}

extension ReplicaMessage {
    /// Whether this message answers a maintenance request of the node it is sent to (the
    /// requests whose silence ``PeerSilence`` counts, SWIM's pings among them): proof that
    /// the request reached its peer and the answer came back. The coordinator's answers are not counted either
    /// way: they are the hot path, and a quorum does not wait for one replica.
    public var answersMaintenanceRequest: Bool {
        switch self {
        case .membership(.ack, _), .metadata(.merged), .scans(.scanned), .hints(.handedOff),
            .antiEntropy(.treeHashes),
            .antiEntropy(.keyHashes), .antiEntropy(.reconciled), .reaping(.reapAnswer),
            .transfers(.transferRows), .transfers(.transfersReport):
            true
        case .quorum, .metadata, .scans, .membership, .hints, .antiEntropy, .reaping, .transfers:
            false
        }
    }
}
