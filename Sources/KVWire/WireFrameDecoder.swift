import NIOCore
import Synchronization

/// Splits a node-to-node byte stream into frames and decodes them.
///
/// The length prefix is checked against the limit before the frame is buffered, so a
/// peer cannot make this node hold more than one maximum-size frame per connection.
/// With a ``WireFrameBudget``, a large frame must also find room in the budget all
/// connections share before its bytes are buffered: many connections cannot add up to
/// more than it either.
public struct WireFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = WireFrame

    /// Frames longer than this take room in the shared budget while they arrive; shorter
    /// ones are covered by the limit on connections.
    public static let budgetedFrameBytes = 64 << 10

    private let limit: WireFrameLimit
    private let budget: WireFrameBudget?
    /// Bytes of the budget the unfinished frame holds.
    private var reserved = 0

    /// The largest frame accepted now.
    public var maximumFrameBytes: Int { limit.bytes }

    /// Creates a decoder with a fixed limit and no shared budget.
    public init(maximumFrameBytes: Int = WireCodec.defaultMaximumFrameBytes) {
        self.init(limit: WireFrameLimit(bytes: maximumFrameBytes), budget: nil)
    }

    /// Creates a decoder whose limit its owner may change between frames (a peer gets
    /// the full limit only once it has authenticated) and that reserves large frames in
    /// `budget`.
    public init(limit: WireFrameLimit, budget: WireFrameBudget?) {
        self.limit = limit
        self.budget = budget
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> WireFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= limit.bytes else {
            throw WireProtocolError.frameTooLarge(Int(length), limit: limit.bytes)
        }
        guard buffer.readableBytes >= WireCodec.lengthPrefixBytes + Int(length) else {
            if let budget, reserved == 0, Int(length) > Self.budgetedFrameBytes {
                guard budget.reserve(Int(length)) else {
                    throw WireProtocolError.overBudget(Int(length), budget: budget.totalBytes)
                }
                reserved = Int(length)
            }
            return nil
        }
        releaseReservation()
        buffer.moveReaderIndex(forwardBy: WireCodec.lengthPrefixBytes)
        let body = buffer.readBytes(length: Int(length))!
        return try WireCodec.decode(body: body)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> WireFrame? {
        try decode(buffer: &buffer)
    }

    public mutating func decoderRemoved(context: ChannelHandlerContext) {
        releaseReservation()
    }

    private mutating func releaseReservation() {
        if reserved > 0 {
            budget?.release(reserved)
            reserved = 0
        }
    }
}

/// The frame limit of one connection, which its owner may raise or lower between frames.
/// Used on the connection's event loop only.
public final class WireFrameLimit {
    /// The largest frame accepted.
    public var bytes: Int

    /// Creates a limit.
    public init(bytes: Int) {
        self.bytes = bytes
    }
}

/// Room for unfinished large frames, shared by every connection a node accepts: a
/// frame takes its announced length from the budget when it starts arriving and gives
/// it back when it is complete or its connection closes.
public final class WireFrameBudget: Sendable {
    /// The whole budget in bytes.
    public let totalBytes: Int
    private let taken = Atomic<Int>(0)

    /// Creates a budget of `totalBytes`.
    public init(totalBytes: Int) {
        self.totalBytes = totalBytes
    }

    /// Bytes held by unfinished frames now.
    public var heldBytes: Int { taken.load(ordering: .relaxed) }

    /// Takes `bytes` unless that would exceed the budget.
    func reserve(_ bytes: Int) -> Bool {
        var current = taken.load(ordering: .relaxed)
        while true {
            guard current + bytes <= totalBytes else { return false }
            let (exchanged, original) = taken.compareExchange(
                expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    func release(_ bytes: Int) {
        taken.subtract(bytes, ordering: .relaxed)
    }
}
