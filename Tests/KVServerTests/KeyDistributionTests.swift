import KVClient
import KVCluster
import Testing

@Suite("kv bench key distributions")
struct KeyDistributionTests {
    @Test("uniform draws cover the keys evenly; Zipf draws favour the low ranks by their weight")
    func shapes() {
        var random = SeededRandom(seed: 7)
        let draws = 200_000
        var uniform = [Int](repeating: 0, count: 100)
        let flat = KeyDistribution.uniform(count: 100)
        for _ in 0..<draws { uniform[flat.next(using: &random)] += 1 }
        #expect(
            uniform.allSatisfy { abs($0 - draws / 100) < draws / 100 / 5 },
            "\(uniform.min()!)...\(uniform.max()!)")

        var skewed = [Int](repeating: 0, count: 1000)
        let zipf = KeyDistribution.zipf(count: 1000, exponent: 1.0)
        for _ in 0..<draws { skewed[zipf.next(using: &random)] += 1 }
        // Rank 0 is drawn twice as often as rank 1 and ten times as often as rank 9.
        let ratio1 = Double(skewed[0]) / Double(skewed[1])
        let ratio9 = Double(skewed[0]) / Double(skewed[9])
        #expect(abs(ratio1 - 2) < 0.2, "rank 0 / rank 1 = \(ratio1)")
        #expect(abs(ratio9 - 10) < 1.5, "rank 0 / rank 9 = \(ratio9)")
        // The hottest tenth of the keys takes H(100)/H(1000) ≈ 69 % of the draws.
        let hottest = Double(skewed.prefix(100).reduce(0, +)) / Double(draws)
        #expect(abs(hottest - 0.69) < 0.03, "the top 100 ranks drew \(hottest)")
    }
}
