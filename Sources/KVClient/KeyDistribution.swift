import Glibc

/// Which key a load generator touches next: uniform over `0..<count`, or Zipf-skewed
/// so that a few keys are hot (rank 0 the hottest), as real workloads often are.
///
/// Zipf sampling precomputes the cumulative distribution once (8 bytes per key) and
/// draws by binary search, so each draw costs O(log count) and is exact.
public struct KeyDistribution: Sendable {
    /// The number of keys.
    public let count: Int
    @usableFromInline let cumulative: [Double]?

    /// Every key equally likely.
    public static func uniform(count: Int) -> KeyDistribution {
        KeyDistribution(count: count, cumulative: nil)
    }

    /// Key of rank k (from 0) drawn with probability proportional to 1 / (k + 1)^s.
    public static func zipf(count: Int, exponent s: Double = 0.99) -> KeyDistribution {
        var cumulative: [Double] = []
        cumulative.reserveCapacity(count)
        var total = 0.0
        for rank in 0..<count {
            total += 1.0 / pow(Double(rank + 1), s)
            cumulative.append(total)
        }
        return KeyDistribution(count: count, cumulative: cumulative.map { $0 / total })
    }

    private init(count: Int, cumulative: [Double]?) {
        precondition(count > 0, "a key distribution needs at least one key")
        self.count = count
        self.cumulative = cumulative
    }

    /// The next key. Inlinable, so that a load generator's own random source is not
    /// called through a generic witness per draw.
    @inlinable
    public func next<Random: RandomNumberGenerator>(using random: inout Random) -> Int {
        guard let cumulative else { return Int.random(in: 0..<count, using: &random) }
        let point = Double.random(in: 0..<1, using: &random)
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] <= point { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
