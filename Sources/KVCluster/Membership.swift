import KVCore

/// Timing and fan-out of ``Membership``.
public struct MembershipSettings: Hashable, Sendable {
    /// How often a node probes one member.
    public var probeIntervalMilliseconds: Int64
    /// How long a direct probe waits for its ack before members are asked to probe
    /// indirectly.
    public var probeTimeoutMilliseconds: Int64
    /// How many members are asked to probe a silent one on this node's behalf.
    public var indirectProbes: Int
    /// How long a member stays suspect before it is declared dead, unless it refutes.
    public var suspicionTimeoutMilliseconds: Int64
    /// The most state updates one message carries.
    public var maximumPiggybackedUpdates: Int

    /// Creates settings; the defaults suit a LAN cluster.
    public init(
        probeIntervalMilliseconds: Int64 = 1_000, probeTimeoutMilliseconds: Int64 = 300,
        indirectProbes: Int = 3,
        suspicionTimeoutMilliseconds: Int64 = 5_000, maximumPiggybackedUpdates: Int = 8
    ) {
        self.probeIntervalMilliseconds = probeIntervalMilliseconds
        self.probeTimeoutMilliseconds = probeTimeoutMilliseconds
        self.indirectProbes = indirectProbes
        self.suspicionTimeoutMilliseconds = suspicionTimeoutMilliseconds
        self.maximumPiggybackedUpdates = maximumPiggybackedUpdates
    }
}

/// What one node believes about one member.
public struct MemberState: Hashable, Sendable, CustomStringConvertible {
    /// The member's liveness.
    public enum Status: Int, Hashable, Sendable, Comparable {
        /// Answering probes.
        case alive = 0
        /// Missed a probe, direct and indirect; declared dead unless it refutes in time.
        case suspect = 1
        /// Was suspect for the whole suspicion timeout.
        case dead = 2

        public static func < (lhs: Status, rhs: Status) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// The member.
    public var node: NodeID
    /// The member's incarnation: only the member itself raises it, to refute a suspicion.
    public var incarnation: UInt64
    /// The status.
    public var status: Status

    /// Creates a state.
    public init(node: NodeID, incarnation: UInt64, status: Status) {
        self.node = node
        self.incarnation = incarnation
        self.status = status
    }

    /// Whether this state overrides `other` of the same member (SWIM's rules): a higher
    /// incarnation wins; at equal incarnations, suspect overrides alive and dead
    /// overrides both. Dead at an incarnation is final for it.
    public func overrides(_ other: MemberState) -> Bool {
        if incarnation != other.incarnation { return incarnation > other.incarnation }
        return status > other.status
    }

    public var description: String { "\(node)@\(incarnation):\(status)" }
}

/// A membership message. Every message carries some recent state updates (gossip
/// piggybacked on the probes themselves).
public enum MembershipMessage: Hashable, Sendable {
    /// Are you there? Answered by ``ack(sequence:updates:)`` with the same sequence.
    case ping(sequence: UInt64, updates: [MemberState])
    /// I am; or, relayed by a member that probed on the asker's behalf, the target is.
    case ack(sequence: UInt64, updates: [MemberState])
    /// Please probe `target` for me and relay its ack with this sequence.
    case pingRequest(sequence: UInt64, target: NodeID, updates: [MemberState])
}

/// SWIM-style failure detection and membership dissemination for one node, as a pure
/// state machine: the shell feeds it the time (``tick(now:)``) and the messages that
/// arrive, and carries out the actions it returns; randomness comes from a seeded
/// generator, so a simulation replays exactly.
///
/// - Each probe interval the node pings the next member of a shuffled round.
/// - Without an ack within the probe timeout it asks `indirectProbes` other members to
///   ping the target for it (a lossy link between two nodes does not make either look
///   down to the other).
/// - Without any ack by the end of the interval, the target becomes *suspect*; after
///   the suspicion timeout, *dead*. A member that learns it is suspected raises its
///   incarnation and announces itself alive, which overrides the suspicion everywhere.
/// - State changes spread piggybacked on pings and acks, each sent about
///   3·log₂(members) times.
public struct Membership: Sendable {
    /// What the shell must do.
    public enum Action: Hashable, Sendable {
        /// Send a message to a member (over a datagram-like channel: loss is expected).
        case send(MembershipMessage, to: NodeID)
        /// This node's view of a member changed.
        case statusChanged(NodeID, MemberState.Status)
        /// A member did not ack this node's own ping within the probe timeout, whether or
        /// not others vouch for it later (the shell counts it against the connection:
        /// ``PeerSilence``; a one-way silent connection leaves exactly the direct acks
        /// unanswered).
        case unanswered(NodeID)
    }

    /// This node.
    public let node: NodeID
    /// Timing and fan-out.
    public let settings: MembershipSettings
    /// This node's own incarnation.
    public private(set) var incarnation: UInt64
    private var states: [NodeID: MemberState] = [:]
    private var random: SeededRandom
    private var nextSequence: UInt64 = 1
    private var round: [NodeID] = []
    private var nextProbeAt: Int64 = 0
    private var probe: Probe?
    private var relays: [UInt64: (asker: NodeID, sequence: UInt64)] = [:]
    private var suspectedAt: [NodeID: Int64] = [:]
    private var gossip: [(state: MemberState, sent: Int)] = []
    /// The time of the event being handled.
    private var now: Int64 = 0

    private struct Probe: Sendable {
        var target: NodeID
        var sequence: UInt64
        var sentAt: Int64
        var askedOthers = false
        var answered = false
    }

    /// Starts with every other member alive at incarnation 0. `incarnation` must exceed
    /// every incarnation this node had before (the shell passes the wall-clock time at
    /// start), or a node declared dead in an earlier life could never come back.
    public init(
        node: NodeID, members: [NodeID], incarnation: UInt64,
        settings: MembershipSettings = MembershipSettings(),
        random: SeededRandom
    ) {
        self.node = node
        self.settings = settings
        self.incarnation = incarnation
        self.random = random
        for member in members where member != node {
            states[member] = MemberState(node: member, incarnation: 0, status: .alive)
        }
        enqueue(MemberState(node: node, incarnation: incarnation, status: .alive))
    }

    /// What this node believes about `member` (`nil` if it is not a member).
    public func state(of member: NodeID) -> MemberState? {
        member == node ? MemberState(node: node, incarnation: incarnation, status: .alive) : states[member]
    }

    /// Every member this node believes alive, itself included, sorted.
    public var aliveMembers: [NodeID] {
        ([node] + states.values.filter { $0.status == .alive }.map(\.node)).sorted()
    }

    /// Adds a member (a join); it starts alive at incarnation 0 unless known better.
    public mutating func add(_ member: NodeID) {
        guard member != node, states[member] == nil else { return }
        states[member] = MemberState(node: member, incarnation: 0, status: .alive)
    }

    /// Forgets a member that left the cluster for good: it is no longer probed.
    public mutating func remove(_ member: NodeID) {
        states[member] = nil
    }

    // MARK: - Events

    /// Time passed: probe, escalate silent probes, expire suspicions.
    public mutating func tick(now: Int64) -> [Action] {
        self.now = now
        var actions: [Action] = []
        // Suspicions that ran out.
        for (member, since) in suspectedAt.sorted(by: { $0.key < $1.key })
        where now - since >= settings.suspicionTimeoutMilliseconds {
            suspectedAt[member] = nil
            guard var state = states[member], state.status == .suspect else { continue }
            state.status = .dead
            actions += apply(state)
        }
        if var current = probe, !current.answered {
            if !current.askedOthers, now - current.sentAt >= settings.probeTimeoutMilliseconds {
                current.askedOthers = true
                probe = current
                actions.append(.unanswered(current.target))
                // A dead member's silence is no news: nobody else is asked about it.
                let helpers =
                    states[current.target]?.status == .dead
                    ? []
                    : others(excluding: current.target).shuffled(using: &random).prefix(
                        settings.indirectProbes)
                for helper in helpers {
                    actions.append(
                        .send(
                            .pingRequest(
                                sequence: current.sequence, target: current.target, updates: takeUpdates()),
                            to: helper))
                }
            }
            if now - current.sentAt >= settings.probeIntervalMilliseconds {
                probe = nil
                if var state = states[current.target], state.status == .alive {
                    state.status = .suspect
                    actions += apply(state)
                }
            }
        }
        if now >= nextProbeAt, probe == nil || probe!.answered {
            nextProbeAt = now + settings.probeIntervalMilliseconds
            if let target = nextTarget() {
                let sequence = takeSequence()
                probe = Probe(target: target, sequence: sequence, sentAt: now)
                actions.append(.send(.ping(sequence: sequence, updates: takeUpdates()), to: target))
            }
        }
        return actions
    }

    /// A message arrived.
    public mutating func received(_ message: MembershipMessage, from sender: NodeID, now: Int64) -> [Action] {
        self.now = now
        var actions: [Action] = []
        defer {
            // A sender this node still holds suspect or dead (at the incarnation the
            // sender itself reported) has to hear so, to refute: the gossip about it
            // may have run out while the two could not talk.
            if let known = states[sender], known.status != .alive { enqueue(known) }
        }
        switch message {
        case .ping(let sequence, let updates):
            actions += merge(updates)
            actions.append(.send(.ack(sequence: sequence, updates: takeUpdates()), to: sender))
        case .ack(let sequence, let updates):
            actions += merge(updates)
            if let relay = relays.removeValue(forKey: sequence) {
                actions.append(.send(.ack(sequence: relay.sequence, updates: takeUpdates()), to: relay.asker))
            } else if var current = probe, current.sequence == sequence {
                current.answered = true
                probe = current
            }
        case .pingRequest(let sequence, let target, let updates):
            actions += merge(updates)
            let relayed = takeSequence()
            relays[relayed] = (sender, sequence)
            // Forgotten after a while: relays are few, but a silent target must not
            // leave them behind forever.
            if relays.count > 1024, let oldest = relays.keys.min() { relays[oldest] = nil }
            actions.append(.send(.ping(sequence: relayed, updates: takeUpdates()), to: target))
        }
        return actions
    }

    // MARK: - State

    /// Merges gossiped states, refuting any suspicion of this node.
    private mutating func merge(_ updates: [MemberState]) -> [Action] {
        var actions: [Action] = []
        for update in updates {
            if update.node == node {
                // A peer cannot make this node's incarnation overflow.
                if update.status != .alive, update.incarnation >= incarnation, update.incarnation < .max {
                    incarnation = update.incarnation + 1
                    enqueue(MemberState(node: node, incarnation: incarnation, status: .alive))
                }
                continue
            }
            guard let known = states[update.node] else {
                // A member this node did not know (a join it has not heard of).
                states[update.node] = update
                enqueue(update)
                actions.append(.statusChanged(update.node, update.status))
                continue
            }
            if update.overrides(known) { actions += apply(update) }
        }
        return actions
    }

    /// Records a new state of a member, spreads it, and reports a changed status.
    private mutating func apply(_ state: MemberState) -> [Action] {
        let previous = states[state.node]
        states[state.node] = state
        enqueue(state)
        if state.status == .suspect {
            if previous?.status != .suspect || suspectedAt[state.node] == nil {
                suspectedAt[state.node] = now
            }
        } else {
            suspectedAt[state.node] = nil
        }
        return previous?.status == state.status ? [] : [.statusChanged(state.node, state.status)]
    }

    private mutating func enqueue(_ state: MemberState) {
        gossip.removeAll { $0.state.node == state.node }
        gossip.append((state, 0))
    }

    /// The updates the next message carries: this node's own state first (so whoever
    /// hears from it directly learns its current incarnation, even one that believed it
    /// dead at an older one), then the least-sent others; each is dropped once it was
    /// sent about 3·log₂(n) times.
    private mutating func takeUpdates() -> [MemberState] {
        let limit = 3 * max(1, (states.count + 1).bitWidth - (states.count + 1).leadingZeroBitCount)
        gossip.sort { $0.sent < $1.sent }
        var taken: [MemberState] = [MemberState(node: node, incarnation: incarnation, status: .alive)]
        gossip.removeAll { $0.state.node == node }
        for index in gossip.indices where taken.count < max(1, settings.maximumPiggybackedUpdates) {
            gossip[index].sent += 1
            taken.append(gossip[index].state)
        }
        gossip.removeAll { $0.sent >= limit }
        return taken
    }

    private func others(excluding target: NodeID) -> [NodeID] {
        states.values.filter { $0.node != target && $0.status == .alive }.map(\.node).sorted()
    }

    /// The next member of the current shuffled round of every member, dead ones
    /// included: two nodes that each declared the other dead (a long partition, or a
    /// node that restarted while cut off) would otherwise never speak again, and the ack
    /// of a member wrongly buried carries its current incarnation, which revives it.
    private mutating func nextTarget() -> NodeID? {
        if round.isEmpty {
            round = states.keys.sorted().shuffled(using: &random)
        }
        while let candidate = round.popLast() {
            if states[candidate] != nil { return candidate }
        }
        return nil
    }

    private mutating func takeSequence() -> UInt64 {
        defer { nextSequence += 1 }
        return nextSequence
    }
}
