import NIOCore

/// Splits a node-to-node byte stream into frames and decodes them.
///
/// The length prefix is checked against the limit before the frame is buffered, so a
/// peer cannot make this node hold more than one maximum-size frame per connection.
public struct WireFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = WireFrame

    /// The largest frame accepted.
    public let maximumFrameBytes: Int

    /// Creates a decoder.
    public init(maximumFrameBytes: Int = WireCodec.defaultMaximumFrameBytes) {
        self.maximumFrameBytes = maximumFrameBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> WireFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= maximumFrameBytes else {
            throw WireProtocolError.frameTooLarge(Int(length), limit: maximumFrameBytes)
        }
        guard buffer.readableBytes >= WireCodec.lengthPrefixBytes + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: WireCodec.lengthPrefixBytes)
        let body = buffer.readBytes(length: Int(length))!
        return try WireCodec.decode(body: body)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> WireFrame? {
        try decode(buffer: &buffer)
    }
}
