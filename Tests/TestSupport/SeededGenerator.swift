import Scheduling

/// A deterministic generator for property and fuzz tests, so a failure reproduces from the seed
/// it prints (the project's SplitMix64).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var base: SplitMix

    public init(seed: UInt64) { base = SplitMix(seed: seed) }

    public mutating func next() -> UInt64 { base.next() }
}
