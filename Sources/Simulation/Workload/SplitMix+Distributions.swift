import Foundation
public import Scheduling

/// The distributions workloads draw from.
extension SplitMix {
    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        let u = max(unit(), .leastNonzeroMagnitude)
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * unit())
    }

    /// Gamma with this shape and scale 1 (Marsaglia and Tsang; a shape below 1 is boosted by
    /// drawing shape + 1 and multiplying by U^(1/shape)).
    public mutating func gamma(shape: Double) -> Double {
        if shape < 1 { return gamma(shape: shape + 1) * pow(max(unit(), .leastNonzeroMagnitude), 1 / shape) }
        let d = shape - 1.0 / 3
        let c = 1 / (9 * d).squareRoot()
        while true {
            var x: Double
            var v: Double
            repeat {
                x = normal()
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = unit()
            if u < 1 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
        }
    }

    /// Log-normal with this median and the standard deviation `sigma` of its logarithm.
    public mutating func logNormal(median: Double, sigma: Double) -> Double {
        median * exp(sigma * normal())
    }
}

/// Draws ranks `0..<count` with Zipf popularity: rank r has weight 1/(r+1)^exponent.
public struct ZipfDraw: Sendable {
    private let cumulative: [Double]

    public init(count: Int, exponent: Double = 1) {
        var total = 0.0
        cumulative = (1...max(1, count)).map { rank in
            total += 1 / pow(Double(rank), exponent)
            return total
        }
    }

    /// A rank, by binary search over the cumulative weights.
    public func draw(_ random: inout SplitMix) -> Int {
        let target = random.unit() * cumulative[cumulative.count - 1]
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < target { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
