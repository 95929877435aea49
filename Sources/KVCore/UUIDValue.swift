/// A 128-bit UUID as 16 bytes, parsed from and printed as the canonical
/// `8-4-4-4-12` lowercase hexadecimal form. The core has no Foundation, so it
/// carries its own.
public struct UUIDValue: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The 16 bytes, in network order.
    public let bytes: [UInt8]

    /// Creates a UUID from exactly 16 bytes, or returns `nil`.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses the canonical textual form (either case), or returns `nil`.
    public init?(_ text: String) {
        let symbols = Array(text.utf8)
        guard symbols.count == 36 else { return nil }
        var result: [UInt8] = []
        result.reserveCapacity(16)
        var high: UInt8? = nil
        for (index, symbol) in symbols.enumerated() {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard symbol == UInt8(ascii: "-") else { return nil }
                continue
            }
            guard let nibble = Self.nibble(symbol) else { return nil }
            if let pendingHigh = high {
                result.append(pendingHigh << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        self.bytes = result
    }

    private static func nibble(_ symbol: UInt8) -> UInt8? {
        switch symbol {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): symbol - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): symbol - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): symbol - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The canonical lowercase textual form.
    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { text.append(UInt8(ascii: "-")) }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    public static func < (lhs: UUIDValue, rhs: UUIDValue) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }
}
