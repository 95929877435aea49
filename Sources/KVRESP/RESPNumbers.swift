/// Numbers as Redis reads and writes them in arguments and values.
enum RESPNumbers {
    /// A signed 64-bit integer in Redis's strict form: optional `-`, digits, no leading
    /// zeros, no spaces or `+` (what `string2ll` accepts).
    static func integer(_ bytes: [UInt8]) -> Int64? {
        guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
        if bytes == [UInt8(ascii: "0")] { return 0 }
        var digits = bytes[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative { digits = digits.dropFirst() }
        guard let first = digits.first, (UInt8(ascii: "1")...UInt8(ascii: "9")).contains(first) else {
            return nil
        }
        var magnitude: UInt64 = 0
        for byte in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            let (times, overflow) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, carry) = times.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !overflow, !carry else { return nil }
            magnitude = sum
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }

    /// A finite double, as `INCRBYFLOAT` accepts it: no spaces, no `nan` or `inf`.
    static func double(_ bytes: [UInt8]) -> Double? {
        guard !bytes.isEmpty, bytes.count <= 5120,
            !bytes.contains(where: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }),
            let text = String(validating: bytes, as: UTF8.self), let value = Double(text), value.isFinite
        else { return nil }
        return value
    }

    /// The text of a double: the shortest digits that read back as the same number, in
    /// plain notation (Redis never answers with an exponent), without a trailing `.0`.
    static func text(_ number: Double) -> String {
        if number == number.rounded(), abs(number) < 1e15 { return String(Int64(number)) }
        let shortest = String(number)
        guard let exponentIndex = shortest.firstIndex(where: { $0 == "e" || $0 == "E" }) else {
            return shortest.hasSuffix(".0") ? String(shortest.dropLast(2)) : shortest
        }
        // Expand d.ddde±x into plain notation.
        let mantissa = shortest[..<exponentIndex]
        guard let exponent = Int(shortest[shortest.index(after: exponentIndex)...]) else { return shortest }
        let negative = mantissa.hasPrefix("-")
        let unsigned = negative ? mantissa.dropFirst() : mantissa[...]
        let parts = unsigned.split(separator: ".", omittingEmptySubsequences: false)
        let integerDigits = String(parts[0])
        let fractionDigits = parts.count > 1 ? String(parts[1]) : ""
        var digits = integerDigits + fractionDigits
        var pointPosition = integerDigits.count + exponent
        if pointPosition <= 0 {
            digits = String(repeating: "0", count: -pointPosition + 1) + digits
            pointPosition = 1
        } else if pointPosition > digits.count {
            digits += String(repeating: "0", count: pointPosition - digits.count)
        }
        var result = String(digits.prefix(pointPosition))
        var fraction = String(digits.dropFirst(pointPosition))
        while fraction.hasSuffix("0") { fraction.removeLast() }
        if !fraction.isEmpty { result += "." + fraction }
        return (negative ? "-" : "") + result
    }
}
